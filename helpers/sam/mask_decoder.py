"""The mask decoder box: output tokens through the two-way transformer with the image embedding, an upscaler,
hypernetwork MLPs that turn each mask token into a mask, and the IoU head (§3, appendix A)."""

from __future__ import annotations

import torch
from torch import nn

from helpers.sam.config import SamConfig, check_shape
from helpers.sam.layers import MLP, LayerNorm2d
from helpers.sam.two_way_transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    """The mask decoder box.

    Tokens = [IoU token, M mask tokens, prompt tokens] go through the two-way transformer with the image
    embedding (plus the dense prompt). The image embedding is upscaled 4× by two transposed convolutions
    (C → C/4 → C/8 channels); each mask token passes through its own 3-layer MLP (a hypernetwork) to C/8
    weights, and a mask is the dot product of those weights with every upscaled pixel: (B, M, 4e, 4e).
    The IoU token's MLP head predicts each mask's IoU. Multimask output (ambiguity, §3) returns masks
    1..M−1; single output returns mask 0."""

    def __init__(self, config: SamConfig) -> None:
        super().__init__()
        C = self.transformer_dim = config.prompt_embed_dim
        self.transformer = TwoWayTransformer(config.decoder_depth, C, config.decoder_num_heads,
                                             config.decoder_mlp_dim, config.attention_downsample_rate)
        self.num_multimask_outputs = config.num_multimask_outputs
        self.num_mask_tokens = config.num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, C)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, C)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(C, C // 4, kernel_size=2, stride=2), LayerNorm2d(C // 4), nn.GELU(),
            nn.ConvTranspose2d(C // 4, C // 8, kernel_size=2, stride=2), nn.GELU())
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(C, C, C // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(C, config.iou_head_hidden_dim, self.num_mask_tokens, config.iou_head_depth)

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse_prompt_embeddings: torch.Tensor,
                dense_prompt_embeddings: torch.Tensor, multimask_output: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns mask logits (B, M', 4e, 4e) and predicted IoUs (B, M'), M' = M − 1 or 1."""
        masks, iou_pred = self.predict_masks(image_embeddings, image_pe, sparse_prompt_embeddings,
                                             dense_prompt_embeddings)
        chosen = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, chosen], iou_pred[:, chosen]

    def predict_masks(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                      sparse_prompt_embeddings: torch.Tensor,
                      dense_prompt_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All M masks and IoUs. image_embeddings: (1, C, e, e) shared by the B prompts, or (B, C, e, e)."""
        B, C = sparse_prompt_embeddings.shape[0], self.transformer_dim
        check_shape("image_embeddings", image_embeddings, f"(1, {C}, e, e) or (B={B}, {C}, e, e)",
                     image_embeddings.dim() == 4 and image_embeddings.shape[0] in (1, B)
                     and image_embeddings.shape[1] == C)
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.expand(B, -1, -1), sparse_prompt_embeddings], dim=1)

        src = image_embeddings.expand(B, -1, -1, -1) + dense_prompt_embeddings
        pos_src = image_pe.expand(B, -1, -1, -1)
        b, c, h, w = src.shape
        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out, mask_tokens_out = hs[:, 0, :], hs[:, 1:1 + self.num_mask_tokens, :]

        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))  # (B, C/8, 4e, 4e)
        hyper_in = torch.stack([mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
                               dim=1)  # (B, M, C/8)
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
        return masks, self.iou_prediction_head(iou_token_out)
