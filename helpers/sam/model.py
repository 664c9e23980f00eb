"""The whole Segment Anything Model: the three boxes together, and weights to and from ``segment_anything``.

Kirillov et al., 2023, "Segment Anything", §3 (the model) and appendix A (its details). Numerically the same
model as ``segment_anything.modeling.Sam``, and the parameter names are the same (``image_encoder.*``,
``prompt_encoder.*``, ``mask_decoder.*``), so weights move between the two with ``load_state_dict`` alone:
:func:`sam_from_reference` and :func:`sam_to_reference`. Symbols: see :mod:`helpers.sam.config`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    import segment_anything

from helpers.sam.config import SamConfig, check_shape
from helpers.sam.image_encoder import ImageEncoderViT
from helpers.sam.mask_decoder import MaskDecoder
from helpers.sam.prompt_encoder import PromptEncoder
from helpers.sam.transforms import postprocess_masks, sam_preprocess


class Sam(nn.Module):
    """Segment Anything (§3, Fig. 4): image encoder → image embedding (once per image); prompt encoder →
    prompt tokens; mask decoder → masks and their predicted IoU. Logits above ``mask_threshold`` are the mask.

    Unlike segment_anything's ``Sam.forward``, :meth:`forward` keeps gradients (wrap it in ``torch.no_grad()``
    for inference). The attributes and methods that ``segment_anything.SamPredictor`` calls have the same names
    and arguments, so a predictor can drive this model directly too."""

    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(self, config: SamConfig) -> None:
        super().__init__()
        self.config = config
        self.image_encoder = ImageEncoderViT(config)
        self.prompt_encoder = PromptEncoder(config)
        self.mask_decoder = MaskDecoder(config)
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(-1, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise and pad: see :func:`sam_preprocess`."""
        return sam_preprocess(x, self.pixel_mean, self.pixel_std, self.image_encoder.img_size)

    def postprocess_masks(self, masks: torch.Tensor, input_size: Sequence[int],
                          original_size: Sequence[int]) -> torch.Tensor:
        """Back to the original size: see :func:`postprocess_masks`."""
        return postprocess_masks(masks, input_size, original_size, self.image_encoder.img_size)

    def decode(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor | None = None,
               point_labels: torch.Tensor | None = None, boxes: torch.Tensor | None = None,
               mask_inputs: torch.Tensor | None = None,
               multimask_output: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts (in the S × S input frame) on embedded images → low-resolution mask logits (B, M', 4e, 4e)
        and IoU predictions (B, M'). image_embeddings: (1, C, e, e) for B prompts on one image, or (B, C, e, e)."""
        if (point_coords is None) != (point_labels is None):
            raise ValueError("point_coords and point_labels come together")
        points = None if point_coords is None else (point_coords, point_labels)
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=mask_inputs)
        return self.mask_decoder(image_embeddings=image_embeddings, image_pe=self.prompt_encoder.get_dense_pe(),
                                 sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                 multimask_output=multimask_output)

    def forward(self, batched_input: list[dict[str, Any]], multimask_output: bool) -> list[dict[str, torch.Tensor]]:
        """Masks for a batch of images, each with its own prompts (as segment_anything's ``Sam.forward``).

        Each record: ``"image"`` (3, h, w), long side resized to S (:func:`prepare_image`), pixel values 0–255;
        ``"original_size"`` (H, W); optional ``"point_coords"`` (B, N, 2) with ``"point_labels"`` (B, N),
        ``"boxes"`` (B, 4), ``"mask_inputs"`` (B, 1, 4e, 4e), prompts in the resized frame
        (:func:`transform_coords`). Each result: ``"masks"`` (B, M', H, W) bool, ``"iou_predictions"`` (B, M'),
        ``"low_res_logits"`` (B, M', 4e, 4e)."""
        S = self.image_encoder.img_size
        for i, record in enumerate(batched_input):
            image = record["image"]
            check_shape(f"batched_input[{i}]['image']", image,
                         f"({self.image_encoder.in_chans}, h, w) with h, w ≤ {S} (long side resized to {S})",
                         image.dim() == 3 and image.shape[0] == self.image_encoder.in_chans
                         and max(image.shape[1:]) <= S)
        images = torch.stack([self.preprocess(record["image"]) for record in batched_input])
        embeddings = self.image_encoder(images)

        outputs = []
        for record, embedding in zip(batched_input, embeddings, strict=True):
            low_res, iou = self.decode(embedding[None], record.get("point_coords"), record.get("point_labels"),
                                       record.get("boxes"), record.get("mask_inputs"), multimask_output)
            masks = self.postprocess_masks(low_res, record["image"].shape[-2:], record["original_size"])
            outputs.append({"masks": masks > self.mask_threshold, "iou_predictions": iou, "low_res_logits": low_res})
        return outputs


# ----------------------------------------------------------------------------------------------------------------
# Weights to and from segment_anything


def sam_from_reference(ref: segment_anything.modeling.Sam) -> Sam:
    """The course's :class:`Sam` with the configuration and weights of a ``segment_anything.modeling.Sam``."""
    model = Sam(SamConfig.from_reference(ref))
    model.load_state_dict(ref.state_dict())
    parameter = next(ref.parameters())
    return model.to(device=parameter.device, dtype=parameter.dtype).train(ref.training)


def sam_to_reference(model: Sam) -> segment_anything.modeling.Sam:
    """A ``segment_anything.modeling.Sam`` with the same configuration and weights, e.g. for ``SamPredictor`` or
    ``SamAutomaticMaskGenerator``. Needs segment_anything and torchvision (segment_anything imports it)."""
    try:
        from segment_anything.modeling import ImageEncoderViT as RefImageEncoder
        from segment_anything.modeling import MaskDecoder as RefMaskDecoder
        from segment_anything.modeling import PromptEncoder as RefPromptEncoder
        from segment_anything.modeling import Sam as RefSam
        from segment_anything.modeling import TwoWayTransformer as RefTwoWayTransformer
    except ModuleNotFoundError as error:
        if error.name and error.name.split(".")[0] == "torchvision":
            raise ImportError("segment_anything imports torchvision, which is not installed: "
                              "pip install torchvision (the build that matches your torch)") from error
        raise ImportError("sam_to_reference needs Meta's segment_anything: pip install segment-anything") from error
    c, e = model.config, model.config.image_embedding_size
    ref = RefSam(
        image_encoder=RefImageEncoder(
            img_size=c.img_size, patch_size=c.patch_size, in_chans=c.in_chans, embed_dim=c.encoder_embed_dim,
            depth=c.encoder_depth, num_heads=c.encoder_num_heads, mlp_ratio=c.encoder_mlp_ratio,
            out_chans=c.prompt_embed_dim, qkv_bias=c.encoder_qkv_bias,
            norm_layer=partial(nn.LayerNorm, eps=c.encoder_norm_eps), use_abs_pos=c.encoder_use_abs_pos,
            use_rel_pos=c.encoder_use_rel_pos, window_size=c.encoder_window_size,
            global_attn_indexes=c.encoder_global_attn_indexes),
        prompt_encoder=RefPromptEncoder(embed_dim=c.prompt_embed_dim, image_embedding_size=(e, e),
                                        input_image_size=(c.img_size, c.img_size), mask_in_chans=c.mask_in_chans),
        mask_decoder=RefMaskDecoder(
            transformer_dim=c.prompt_embed_dim,
            transformer=RefTwoWayTransformer(depth=c.decoder_depth, embedding_dim=c.prompt_embed_dim,
                                             num_heads=c.decoder_num_heads, mlp_dim=c.decoder_mlp_dim,
                                             attention_downsample_rate=c.attention_downsample_rate),
            num_multimask_outputs=c.num_multimask_outputs, iou_head_depth=c.iou_head_depth,
            iou_head_hidden_dim=c.iou_head_hidden_dim),
        pixel_mean=list(c.pixel_mean), pixel_std=list(c.pixel_std))
    ref.load_state_dict(model.state_dict())
    parameter = next(model.parameters())
    return ref.to(device=parameter.device, dtype=parameter.dtype).train(model.training)
