"""Image encoders shared by pre-training and fine-tuning, and the two inputs they read.

Every encoder maps (B, 1, H, W) grey images to spatial tokens (B, N, D) in
`forward_features` and pools them to (B, D) in `forward_head`, so one network serves
MA2MI, the contrastive objective and both MIACNet branches, and the ablation compares
objectives, not architectures. Inputs are grey: colour carries no expression, and one
channel is a third of the first layer's work.

- `normalize_frames`: a face, for the position branch;
- `frame_difference`: the change between two frames, for the action branch, normalised
  per sample so that a macro-expression (pre-training) and a micro-expression a fifth
  its size (fine-tuning) reach the encoder at one scale;
- `action_input`: what the action branch reads, by name (`ACTION_INPUTS`): the
  difference alone, or beside it the optical flow (u, v) and strain between the two
  frames (mer_core/data/motion.py), normalised per sample the same way.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from mer_core import MerError
from mer_core.models.registry import register_model


class Encoder(nn.Module):
    """Interface: `forward_features` → tokens (B, N, D); `forward_head` → (B, D)."""

    img_size: int  # the image side it was built for (`create_model(name, img_size=...)`)
    embed_dim: int
    num_tokens: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.norm(tokens.mean(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class InputSizeError(MerError, ValueError):
    """An encoder cannot take images of the requested side."""


class VisionTransformer(Encoder):
    """A small ViT without a class token: the spatial tokens are the features."""

    def __init__(self, img_size: int = 64, patch: int = 8, in_chans: int = 1, dim: int = 192, depth: int = 4,
                 heads: int = 3, dropout: float = 0.0):
        super().__init__()
        if img_size % patch:
            raise InputSizeError(f"a ViT with {patch}-px patches needs an image side divisible by {patch}, "
                                 f"got {img_size}")
        self.img_size, self.embed_dim, self.num_tokens = img_size, dim, (img_size // patch) ** 2
        self.patch_embed = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, dropout=dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.token_norm = nn.LayerNorm(dim)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, D)
        return self.token_norm(self.blocks(tokens + self.pos_embed))


class ConvEncoder(Encoder):
    """A small residual CNN; its last feature map, flattened, gives the tokens."""

    def __init__(self, img_size: int = 64, in_chans: int = 1, widths: tuple[int, ...] = (32, 64, 128, 192),
                 first_stride: int = 1):
        super().__init__()
        reduction = first_stride * 2 ** (len(widths) - 1)
        if img_size % reduction:
            raise InputSizeError(f"this CNN downsamples by {reduction} and needs an image side divisible by "
                                 f"{reduction}, got {img_size}")
        layers, prev = [], in_chans
        for i, width in enumerate(widths):
            layers.append(_ResidualStage(prev, width, stride=first_stride if i == 0 else 2))
            prev = width
        self.stages = nn.Sequential(*layers)
        self.img_size, self.embed_dim = img_size, widths[-1]
        side = img_size // reduction
        self.num_tokens = side * side
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, self.embed_dim))
        self.norm = nn.LayerNorm(self.embed_dim)
        self.token_norm = nn.LayerNorm(self.embed_dim)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.stages(x)  # (B, D, h, w)
        return self.token_norm(fmap.flatten(2).transpose(1, 2) + self.pos_embed)


class PlainConvEncoder(Encoder):
    """Conv → GroupNorm → GELU → 2×2 max-pool, once per width: a VGG-like CNN small enough
    to fine-tune end to end under LOSO on 2 CPU cores; its last map, flattened, gives the
    tokens. Max-pooling keeps the strongest local response, and a micro-expression is a
    few strong responses (a moving edge, a deepening crease) on a quiet face."""

    def __init__(self, img_size: int = 64, in_chans: int = 1, widths: tuple[int, ...] = (16, 32, 64, 64),
                 strided_first: bool = False):
        super().__init__()
        reduction = 2 ** len(widths)
        if img_size % reduction:
            raise InputSizeError(f"this CNN downsamples by {reduction} and needs an image side divisible by "
                                 f"{reduction}, got {img_size}")
        layers, prev = [], in_chans
        for i, width in enumerate(widths):
            # `strided_first`: the first convolution strides instead of pooling after itself,
            # so the second runs on a quarter of the pixels (the costly layer at 64 px).
            strided = strided_first and i == 0
            layers += [nn.Conv2d(prev, width, 3, 2 if strided else 1, 1), nn.GroupNorm(4, width), nn.GELU()]
            layers += [] if strided else [nn.MaxPool2d(2)]
            prev = width
        self.stages = nn.Sequential(*layers)
        self.img_size, self.embed_dim = img_size, widths[-1]
        self.num_tokens = (img_size // reduction) ** 2
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, self.embed_dim))
        self.norm = nn.LayerNorm(self.embed_dim)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.stages(x)  # (B, D, h, w)
        return fmap.flatten(2).transpose(1, 2) + self.pos_embed  # (B, h*w, D)


class _ResidualStage(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(8, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(8, cout)
        self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.GroupNorm(8, cout))
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.norm1(self.conv1(x)))
        return self.act(self.norm2(self.conv2(h)) + self.skip(x))


@register_model
def vit_tiny_patch8_64(**kwargs) -> VisionTransformer:
    return VisionTransformer(**{"img_size": 64, "patch": 8, "dim": 192, "depth": 4, "heads": 3, **kwargs})


@register_model
def vit_mini_patch8_64(**kwargs) -> VisionTransformer:
    """The CPU default: 64 tokens of width 96, sized for LOSO ablations on 2 cores."""
    return VisionTransformer(**{"img_size": 64, "patch": 8, "dim": 96, "depth": 3, "heads": 3, **kwargs})


@register_model
def vit_small_patch16_112(**kwargs) -> VisionTransformer:
    """ViT-S/16 at 112 px: the GPU profile's encoder."""
    return VisionTransformer(**{"img_size": 112, "patch": 16, "dim": 384, "depth": 12, "heads": 6, **kwargs})


@register_model
def convnet_micro_64(**kwargs) -> PlainConvEncoder:
    """The CPU default: four conv stages (16-32-64-64 channels) to 4×4 tokens of width 64."""
    return PlainConvEncoder(**{"img_size": 64, "widths": (16, 32, 64, 64), **kwargs})


@register_model
def convnet_micro_s2_64(**kwargs) -> PlainConvEncoder:
    """`convnet_micro_64` with a stride-2 first layer: the same 4×4 tokens for about a quarter of the work."""
    return PlainConvEncoder(**{"img_size": 64, "widths": (16, 32, 64, 64), "strided_first": True, **kwargs})


@register_model
def cnn_small_64(**kwargs) -> ConvEncoder:
    return ConvEncoder(**{"img_size": 64, "widths": (32, 64, 128, 192), **kwargs})


@register_model
def cnn_tiny_64(**kwargs) -> ConvEncoder:
    return ConvEncoder(**{"img_size": 64, "widths": (16, 32, 64, 96), **kwargs})


@register_model
def cnn_mini_64(**kwargs) -> ConvEncoder:
    """The CNN counterpart of `vit_mini_patch8_64`: strided from the first stage, 8×8 tokens."""
    return ConvEncoder(**{"img_size": 64, "widths": (24, 48, 96), "first_stride": 2, **kwargs})


# ITU-R BT.601 luma weights of RGB, as OpenCV's RGB2GRAY.
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def grey(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, 3) RGB → float grey levels (..., H, W) in [0, 255]."""
    return frames.float() @ _LUMA.to(frames.device)


def normalize_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, 3) RGB → float grey (..., 1, H, W), roughly zero-mean and unit-scale."""
    return ((grey(frames) / 255.0 - 0.5) / 0.25).unsqueeze(-3)


# Below this spread (grey levels) a difference is sensor noise, not motion: it is not
# blown up to unit scale.
MIN_DIFFERENCE_STD = 0.5


def frame_difference(later: torch.Tensor, earlier: torch.Tensor) -> torch.Tensor:
    """Motion input of the action branch: the grey change from `earlier` to `later`, less its
    mean (a global brightness change is not motion), divided by its spread: uint8
    (..., H, W, 3) pair → float (..., 1, H, W), unit scale whatever the expression's size."""
    change = grey(later) - grey(earlier)  # (..., H, W)
    change = change - change.mean(dim=(-2, -1), keepdim=True)
    return (change / change.std(dim=(-2, -1), keepdim=True).clamp_min(MIN_DIFFERENCE_STD)).unsqueeze(-3)


# What the action encoder reads (`pretrain.action_input`), and its input channels.
# "difference_flow" gives it the sub-pixel displacement a grey difference only hints at on
# little texture (the tuning benchmark's evidence is in the README).
ACTION_INPUTS: dict[str, int] = {"difference": 1, "difference_flow": 4}


def reads_motion(action_input: str) -> bool:
    """Whether an action input needs the motion (flow and strain) beside the frames."""
    return ACTION_INPUTS[action_input] > 1

# Below this spread (pixels) a flow field is estimation noise: it is not blown up to unit scale.
MIN_FLOW_STD = 1e-3


def normalize_flow(flow: torch.Tensor) -> torch.Tensor:
    """(..., 2, H, W) float (u, v) → the same shape, scale-free per sample like
    `frame_difference`: less its mean (a global head shift is not an expression), over the
    spread of both components."""
    flow = flow - flow.mean(dim=(-2, -1), keepdim=True)
    return flow / flow.std(dim=(-3, -2, -1), keepdim=True).clamp_min(MIN_FLOW_STD)


def normalize_motion(motion: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) float (u, v, strain) → the same shape: `normalize_flow` of the flow,
    the strain over its own spread."""
    flow, strain = motion[..., :2, :, :], motion[..., 2:, :, :]
    return torch.cat([normalize_flow(flow), strain / strain.std(dim=(-2, -1), keepdim=True).clamp_min(MIN_FLOW_STD)],
                     dim=-3)


def mirror_flow(motion: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) motion of the mirrored face: flipped left-right, horizontal flow negated."""
    mirrored = motion.flip(-1)
    return torch.cat([-mirrored[:, :1], mirrored[:, 1:]], dim=1)


def action_input(later: torch.Tensor, earlier: torch.Tensor, motion: torch.Tensor | None = None) -> torch.Tensor:
    """The action branch's input: uint8 (B, H, W, 3) frames and, for "difference_flow",
    their motion (B, 3, H, W) → float (B, 1 + 3, H, W), or (B, 1, H, W) without motion."""
    difference = frame_difference(later, earlier)
    return difference if motion is None else torch.cat([difference, normalize_motion(motion.float())], dim=1)
