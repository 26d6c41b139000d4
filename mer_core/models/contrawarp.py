"""ContraWarping: expression-related contrastive learning with warped hard negatives.

After Xue, Sun, Yang (arXiv:2303.10511; method in arXiv:2303.09034). Two *global*
transformations of a face (affine, brightness/contrast, blur) keep its expression and
make the positive pair; a *local* warp of the same face — a smooth displacement around
the brows, eyes or mouth — changes the expression and is a hard negative, beside the
other faces of the batch. InfoNCE over a projection head, with a temperature.

Their released weights are a BYOL ResNet-18 with landmark-guided warps; we have no
landmark model that runs offline, so the warp centres are the canonical positions of
the facial parts in the aligned, levelled crops that `ingest` produces.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from mer_core.models.encoders import Encoder

# Facial parts in an aligned face crop, as (x, y) in [-1, 1] (grid_sample coordinates).
WARP_CENTRES = torch.tensor([
    [-0.35, -0.45], [0.35, -0.45],  # brows
    [-0.35, -0.22], [0.35, -0.22],  # eyes
    [-0.25, 0.45], [0.25, 0.45],  # mouth corners
    [0.0, 0.35], [0.0, 0.6],  # upper and lower lip
])


def _identity_grid(b: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    theta = torch.eye(2, 3, device=device).expand(b, 2, 3)
    return F.affine_grid(theta, (b, 1, h, w), align_corners=False)  # (B, H, W, 2)


def global_transform(images: torch.Tensor, generator: torch.Generator, max_degrees: float = 8.0,
                     max_shift: float = 0.06, scale: float = 0.08, photometric: float = 0.2) -> torch.Tensor:
    """An expression-preserving view: affine, brightness/contrast, sometimes a blur.

    Args:
        images: float (B, C, H, W), normalized.
    """
    b = images.shape[0]

    def rand(*shape: int) -> torch.Tensor:  # uniform in [-1, 1], drawn on the CPU generator
        return torch.rand(*shape, generator=generator).to(images.device) * 2 - 1

    angle = rand(b) * math.radians(max_degrees)
    zoom = 1 + rand(b) * scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, rand(b) * max_shift], 1),
                         torch.stack([sin, cos, rand(b) * max_shift], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, images.shape, align_corners=False)
    out = F.grid_sample(images, grid, padding_mode="border", align_corners=False)
    gain, bias = 1 + rand(b, 1, 1, 1) * photometric, rand(b, 1, 1, 1) * photometric
    out = out * gain + bias
    blurred = F.avg_pool2d(out, 3, stride=1, padding=1, count_include_pad=False)
    use_blur = (torch.rand(b, 1, 1, 1, generator=generator) < 0.3).to(images.device)
    return torch.where(use_blur, blurred, out)


def local_warp(images: torch.Tensor, generator: torch.Generator, max_displacement: float = 0.08,
               radius: float = 0.18, parts: int = 2) -> torch.Tensor:
    """An expression-changing view: smooth displacements around a few facial parts.

    Each chosen part moves by up to `max_displacement` (in units of half the image
    side) under a Gaussian bump of `radius`, so the rest of the face stays put.
    """
    b, _, h, w = images.shape
    grid = _identity_grid(b, h, w, images.device)
    flow = torch.zeros_like(grid)
    for _ in range(parts):
        centre = WARP_CENTRES[torch.randint(len(WARP_CENTRES), (b,), generator=generator)].to(images.device)
        direction = torch.rand(b, 2, generator=generator).to(images.device) * 2 - 1
        magnitude = (0.5 + 0.5 * torch.rand(b, 1, generator=generator).to(images.device)) * max_displacement
        shift = F.normalize(direction, dim=1) * magnitude  # (B, 2)
        dist2 = ((grid - centre[:, None, None, :]) ** 2).sum(-1, keepdim=True)  # (B, H, W, 1)
        flow = flow + torch.exp(-dist2 / (2 * radius ** 2)) * shift[:, None, None, :]
    return F.grid_sample(images, grid - flow, padding_mode="border", align_corners=False)


class ContraWarping(nn.Module):
    """The objective over one encoder.

    `view_shift`, `view_degrees` and `warp_displacement` set the scale of the views. For
    micro-expressions they must be small: with the macro-scale defaults of
    `global_transform` (±2 px, ±8°) the encoder learns invariance to exactly the
    one-pixel motion MIACNet has to see (LOSO UF1 fell from 0.33 with random encoders to
    0.25); at ±0.6 px, ±3° and warps of ~1 px it no longer hurts.
    """

    def __init__(self, encoder: Encoder, projection_dim: int = 128, temperature: float = 0.1,
                 view_shift: float = 0.02, view_degrees: float = 3.0, warp_displacement: float = 0.03):
        super().__init__()
        self.encoder = encoder
        dim = encoder.embed_dim
        self.projector = nn.Sequential(nn.Linear(dim, dim * 2), nn.GELU(), nn.Linear(dim * 2, projection_dim))
        self.temperature = temperature
        self.view_shift, self.view_degrees, self.warp_displacement = view_shift, view_degrees, warp_displacement

    def global_view(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return global_transform(images, generator, max_degrees=self.view_degrees, max_shift=self.view_shift,
                                scale=self.view_shift)

    def forward_views(self, images: torch.Tensor, generator: torch.Generator
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Anchor, positive (two global views) and hard negative (a warped face, then a global view)."""
        anchor = self.global_view(images, generator)
        positive = self.global_view(images, generator)
        warped = local_warp(images, generator, max_displacement=self.warp_displacement)
        return anchor, positive, self.global_view(warped, generator)

    def embed(self, views: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector(self.encoder(views)), dim=-1)

    def forward_loss(self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE; candidates are every positive and every warped negative in the batch.

        Args:
            anchor, positive, negative: unit embeddings (B, P).
        """
        return 0.5 * (warped_info_nce(anchor, positive, negative, self.temperature)
                      + warped_info_nce(positive, anchor, negative, self.temperature))

    def forward(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Loss for a batch of normalized faces (B, C, H, W)."""
        b = images.shape[0]
        embedded = self.embed(torch.cat(self.forward_views(images, generator)))
        return self.forward_loss(*embedded.split(b))


def warped_info_nce(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                    temperature: float) -> torch.Tensor:
    """InfoNCE of anchor i against positive i, with all other positives and all warps as negatives."""
    candidates = torch.cat([positive, negative])  # (2B, P)
    logits = anchor @ candidates.T / temperature  # (B, 2B)
    return F.cross_entropy(logits, torch.arange(anchor.shape[0], device=anchor.device))
