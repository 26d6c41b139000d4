"""ContraWarping: expression-related contrastive learning with warped hard negatives.

After Xue, Sun, Yang (arXiv:2303.10511; method in arXiv:2303.09034). Two *global*
transformations of a face (affine, brightness/contrast, blur) keep its expression and
make the positive pair; a *local* warp of the same face — a smooth displacement around
the brows, eyes or mouth — changes the expression and is a hard negative, beside the
other faces of the batch. InfoNCE over a projection head, with a temperature.

Their released weights are a BYOL ResNet-18 with landmark-guided warps. Here the warps
move the real brows, eyes and mouth: given each face's landmarks (the clip table's
`landmarks` column, 68 points in crop pixels) the warp centres are its own parts
(`part_centres`); without them, the places where alignment puts those parts.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from mer_core.models.encoders import Encoder

# Facial parts in an aligned face crop (ingest's default face_margin 0.15), as (x, y) in
# [-1, 1] (grid_sample coordinates): the mean of `part_centres` over 30 rendered faces
# (the portrait's lie within 0.1 of them).
WARP_CENTRES = torch.tensor([
    [-0.36, -0.54], [0.36, -0.54],  # brows
    [-0.31, -0.32], [0.31, -0.32],  # eyes
    [-0.22, 0.30], [0.22, 0.30],  # mouth corners
    [0.0, 0.22], [0.0, 0.38],  # upper and lower lip
])
# Which of the 68 landmarks make each part above (iBUG 300-W layout, image left first).
PART_LANDMARKS = (range(17, 22), range(22, 27), range(36, 42), range(42, 48), [48], [54], [51], [57])


def part_centres(landmarks: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 8, 2) grid coordinates of each face's brows, eyes, mouth corners and lips, from
    its 68 landmarks (B, 68, 2) in crop pixels of a (size × size) crop."""
    parts = torch.stack([landmarks[:, list(ids)].mean(1) for ids in PART_LANDMARKS], 1)
    return (2 * parts + 1) / size - 1  # pixel centres → align_corners=False grid


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
               radius: float = 0.18, parts: int = 2, centres: torch.Tensor | None = None) -> torch.Tensor:
    """An expression-changing view: smooth displacements around a few facial parts.

    Each chosen part moves by up to `max_displacement` (in units of half the image
    side) under a Gaussian bump of `radius`, so the rest of the face stays put.

    Args:
        centres: (B, P, 2) each face's parts in grid coordinates (`part_centres`);
            `WARP_CENTRES` for every face when None.
    """
    b, _, h, w = images.shape
    grid = _identity_grid(b, h, w, images.device)
    flow = torch.zeros_like(grid)
    if centres is None:
        centres = WARP_CENTRES.expand(b, -1, -1)
    centres = centres.to(images.device)
    for _ in range(parts):
        chosen = torch.randint(centres.shape[1], (b,), generator=generator).to(images.device)
        centre = centres[torch.arange(b, device=images.device), chosen]  # (B, 2)
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

    def forward_views(self, images: torch.Tensor, generator: torch.Generator,
                      landmarks: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Anchor, positive (two global views) and hard negative (a warped face, then a global
        view); the warp moves each face's own parts when its landmarks (B, 68, 2) are given."""
        anchor = self.global_view(images, generator)
        positive = self.global_view(images, generator)
        centres = None if landmarks is None else part_centres(landmarks, images.shape[-1])
        warped = local_warp(images, generator, max_displacement=self.warp_displacement, centres=centres)
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

    def forward(self, images: torch.Tensor, generator: torch.Generator,
                landmarks: torch.Tensor | None = None) -> torch.Tensor:
        """Loss for a batch of normalized faces (B, C, H, W), with their landmarks (B, 68, 2)
        in crop pixels when known."""
        b = images.shape[0]
        embedded = self.embed(torch.cat(self.forward_views(images, generator, landmarks)))
        return self.forward_loss(*embedded.split(b))


def warped_info_nce(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                    temperature: float) -> torch.Tensor:
    """InfoNCE of anchor i against positive i, with all other positives and all warps as negatives."""
    candidates = torch.cat([positive, negative])  # (2B, P)
    logits = anchor @ candidates.T / temperature  # (B, 2B)
    return F.cross_entropy(logits, torch.arange(anchor.shape[0], device=anchor.device))
