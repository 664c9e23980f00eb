"""Segment Anything (Kirillov et al., 2023), built from scratch. Start with ``model.py`` (the three boxes together)
and one module per box of the paper; the model's names are importable from here too
(``from helpers.sam import Sam, SamConfig, ImageEncoderViT``).

- ``config``: every size in one place. ``layers``: small shared pieces.
- ``image_encoder``, ``prompt_encoder``, ``two_way_transformer``, ``mask_decoder``: the boxes.
- ``transforms``: resizing, normalising and padding images; masks back to the image's size. ``model``: SAM.
- ``mae``: MAE pretraining of the image encoder. ``training``: the losses, the prompts drawn from a mask, the
  simulated interactive session and its loss. ``boxes``: boxes of masks and non-maximum suppression.
- ``runs``: whole training and evaluation runs (Lab 3). ``engine``: the data engine's automatic stage.
- ``baselines``: flood fill and watershed from a click. ``widget``: click to segment. ``scenes``: the rendered data.
"""

from helpers.sam.config import SamConfig
from helpers.sam.image_encoder import (
    Attention,
    Block,
    ImageEncoderViT,
    PatchEmbed,
    add_decomposed_rel_pos,
    relative_position_table,
    window_partition,
    window_unpartition,
)
from helpers.sam.layers import MLP, LayerNorm2d, MLPBlock
from helpers.sam.mask_decoder import MaskDecoder
from helpers.sam.model import Sam, sam_from_reference, sam_to_reference
from helpers.sam.prompt_encoder import PositionEmbeddingRandom, PromptEncoder
from helpers.sam.transforms import (
    postprocess_masks,
    prepare_image,
    preprocess_shape,
    resize_longest_side,
    sam_preprocess,
    transform_boxes,
    transform_coords,
)
from helpers.sam.two_way_transformer import DecoderAttention, TwoWayAttentionBlock, TwoWayTransformer

__all__ = ["MLP", "Attention", "Block", "DecoderAttention", "ImageEncoderViT", "LayerNorm2d", "MLPBlock",
           "MaskDecoder", "PatchEmbed", "PositionEmbeddingRandom", "PromptEncoder", "Sam", "SamConfig",
           "TwoWayAttentionBlock", "TwoWayTransformer", "add_decomposed_rel_pos", "postprocess_masks", "prepare_image",
           "preprocess_shape", "relative_position_table", "resize_longest_side", "sam_from_reference",
           "sam_preprocess", "sam_to_reference", "transform_boxes", "transform_coords", "window_partition",
           "window_unpartition"]
