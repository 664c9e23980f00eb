"""The prompt encoder box: points and boxes become sparse tokens through random Fourier features plus learnt
embeddings; a mask becomes a dense map through a small convolutional downscaler (§3, appendix A)."""

from __future__ import annotations

import math

import torch
from torch import nn

from helpers.sam.config import SamConfig, check_shape
from helpers.sam.layers import LayerNorm2d


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features (Tancik et al., 2020): a point u = (x, y) in [0, 1]² maps to
    [sin(2π (2u − 1) G), cos(2π (2u − 1) G)] with a fixed Gaussian G (``positional_encoding_gaussian_matrix``,
    2 × C/2), so nearby points get similar codes at every scale. Computed in float32, even under autocast."""

    def __init__(self, num_pos_feats: int, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn(2, num_pos_feats))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) coordinates in [0, 1] as (x, y) → (..., C)."""
        with torch.autocast(device_type=coords.device.type, enabled=False):
            coords = 2 * coords - 1
            coords = coords @ self.positional_encoding_gaussian_matrix
            coords = 2 * math.pi * coords
            return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """The code of every cell centre of an h × w grid: (C, h, w) (the image embedding's positions)."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        return self.encode(torch.stack([grid_x, grid_y], dim=-1)).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """(B, N, 2) pixel coordinates (x, y) in an image of ``image_size`` = (H, W) → (B, N, C)."""
        scale = torch.tensor([image_size[1], image_size[0]], device=coords.device)
        return self.encode((coords / scale).to(torch.float))


class PromptEncoder(nn.Module):
    """The prompt encoder box.

    Sparse prompts → tokens (B, N, C): a point is its positional code plus a learnt embedding for foreground
    (label 1, ``point_embeddings[1]``) or background (label 0, ``point_embeddings[0]``); a box is two tokens,
    its corners' codes plus learnt "top-left" / "bottom-right" embeddings (``point_embeddings[2]``, ``[3]``).
    Label −1 marks padding: a learnt ``not_a_point_embed`` and no position. Without a box, one padding
    token is appended to the points, as segment_anything does (the paper does not say so).
    Dense prompt → map (B, C, e, e): a mask at 4e × 4e goes through two 2×2 stride-2 convolutions (C_m/4 then
    C_m channels, layer norm and GELU after each) and a 1×1 convolution to C; no mask → ``no_mask_embed``
    at every position."""

    def __init__(self, config: SamConfig) -> None:
        super().__init__()
        C, e, m = config.prompt_embed_dim, config.image_embedding_size, config.mask_in_chans
        self.embed_dim = C
        self.image_embedding_size = (e, e)
        self.input_image_size = (config.img_size, config.img_size)
        self.mask_input_size = (4 * e, 4 * e)
        self.pe_layer = PositionEmbeddingRandom(C // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, C) for _ in range(4))  # neg, pos, top-left, bottom-right
        self.not_a_point_embed = nn.Embedding(1, C)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, m // 4, kernel_size=2, stride=2), LayerNorm2d(m // 4), nn.GELU(),
            nn.Conv2d(m // 4, m, kernel_size=2, stride=2), LayerNorm2d(m), nn.GELU(),
            nn.Conv2d(m, C, kernel_size=1))
        self.no_mask_embed = nn.Embedding(1, C)

    def get_dense_pe(self) -> torch.Tensor:
        """The positional code of the image embedding's grid: (1, C, e, e)."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        points = points + 0.5  # pixel (i, j) is the square [i, i+1): encode its centre
        if pad:
            points = torch.cat([points, torch.zeros_like(points[:, :1])], dim=1)
            labels = torch.cat([labels, -torch.ones_like(labels[:, :1])], dim=1)
        embedding = self.pe_layer.forward_with_coords(points, self.input_image_size)
        labels = labels[..., None]
        embedding = torch.where(labels == -1, self.not_a_point_embed.weight, embedding)  # padding: no position
        embedding = embedding + torch.where(labels == 0, self.point_embeddings[0].weight, 0.0)
        return embedding + torch.where(labels == 1, self.point_embeddings[1].weight, 0.0)

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        corners = (boxes + 0.5).reshape(-1, 2, 2)  # (x1, y1), (x2, y2)
        embedding = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        return embedding + torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])

    def forward(self, points: tuple[torch.Tensor, torch.Tensor] | None, boxes: torch.Tensor | None,
                masks: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """points: ((B, N, 2) pixel coordinates x, y in the S × S input frame, (B, N) labels in {1, 0, −1});
        boxes: (B, 4) as (x1, y1, x2, y2); masks: (B, 1, 4e, 4e) logits. Any may be None.
        Returns sparse tokens (B, N', C) and the dense map (B, C, e, e)."""
        sizes = []
        if points is not None:
            coords, labels = points
            check_shape("point_coords", coords, "(B, N, 2)", coords.dim() == 3 and coords.shape[-1] == 2)
            check_shape("point_labels", labels, f"(B, N) = {tuple(coords.shape[:2])}",
                         labels.shape == coords.shape[:2])
            sizes.append(coords.shape[0])
        if boxes is not None:
            check_shape("boxes", boxes, "(B, 4) as (x1, y1, x2, y2)",
                         boxes.dim() in (2, 3) and boxes.shape[-1] == 4 and boxes.numel() == 4 * boxes.shape[0])
            sizes.append(boxes.shape[0])
        if masks is not None:
            check_shape("mask_inputs", masks, f"(B, 1, {self.mask_input_size[0]}, {self.mask_input_size[1]})",
                         masks.dim() == 4 and tuple(masks.shape[1:]) == (1, *self.mask_input_size))
            sizes.append(masks.shape[0])
        if len(set(sizes)) > 1:
            raise ValueError(f"points, boxes and masks must hold the same number B of prompts, got {sizes}")
        B = sizes[0] if sizes else 1
        device = self.no_mask_embed.weight.device

        tokens = [torch.empty(B, 0, self.embed_dim, device=device)]
        if points is not None:
            tokens.append(self._embed_points(coords, labels, pad=boxes is None))
        if boxes is not None:
            tokens.append(self._embed_boxes(boxes))
        sparse = torch.cat(tokens, dim=1)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(B, -1, *self.image_embedding_size)
        return sparse, dense
