"""A shallow optical-flow CNN baseline of the kind MEB ships: STSTNet (Liong et al.,
"Shallow Triple Stream Three-dimensional CNN (STSTNet) for Micro-expression Recognition",
FG 2019; OFF-ApexNet is its two-stream cousin).

Input: the onset→apex (u, v, strain) of a clip, resized to 28 × 28 as in the paper, each
channel divided by its spread over the clip (so the network sees the pattern, not the
expression's size). Three parallel streams of 3, 5 and 8 3×3 filters, each ReLU → batch
norm → 3×3 max-pool (stride 3); concatenated, 2×2 average-pooled, one linear layer.
Trained from scratch under the same LOSO folds as everything else.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

INPUT_SIZE = 28


def flow_input(motion: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float (u, v, strain) → (B, 3, 28, 28), flow and strain each at unit spread."""
    x = F.interpolate(motion, size=(INPUT_SIZE, INPUT_SIZE), mode="area")
    flow_spread = x[:, :2].pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-3)
    strain_spread = x[:, 2:].pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-3)
    return torch.cat([x[:, :2] / flow_spread, x[:, 2:] / strain_spread], dim=1)


class STSTNet(nn.Module):
    def __init__(self, num_classes: int, streams: tuple[int, ...] = (3, 5, 8), dropout: float = 0.0):
        super().__init__()
        self.streams = nn.ModuleList(
            nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(width),
                          nn.MaxPool2d(3, stride=3, padding=1))
            for width in streams)
        side = (INPUT_SIZE + 2 - 3) // 3 + 1  # 28 → 10
        self.pool = nn.AvgPool2d(2)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(sum(streams) * (side // 2) ** 2, num_classes)

    def forward(self, motion: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) onset→apex (u, v, strain) → logits (B, num_classes)."""
        x = flow_input(motion)
        x = torch.cat([stream(x) for stream in self.streams], dim=1)  # (B, 16, 10, 10)
        return self.classifier(self.dropout(self.pool(x).flatten(1)))
