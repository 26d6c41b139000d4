"""MA2MI: macro-to-micro pre-training by reconstructing the near future of macro clips.

From two frames of a macro clip `k` frames apart (x_t, x_{t+k}; k small, so the step is
a subtle movement) the model reconstructs the near-future frame x_{t+k} from
- the current frame x_t through the *position* encoder (where this face's parts are), and
- a compact *action code*: the action encoder's tokens of the motion x_{t+k} − x_t,
  pooled into one low-dimensional vector (what moved, independent of where this face
  has it).
These are exactly the inputs MIACNet later reads (onset; apex − onset), so both of its
branches start from weights that already separate position from action.

Our choices where the paper is silent (it has no released code):
- **A light pixel decoder, not an EMA latent target.** A latent target (an EMA copy of
  the position encoder) can drift towards motion-invariant features, after which the
  objective no longer needs the action encoder — a collapse that needs careful EMA and
  variance terms. A pixel target cannot collapse. The decoder is one transformer block
  and a linear patch head, so the representation has to live in the encoders (as in MAE).
- **The bottleneck is what makes it learn motion**: the action code is `code_dim`
  numbers for the whole face (read from every action token, decoded back per token), so
  it can carry the structured movement of a few facial parts (and the global head
  shift) but not the per-pixel sensor noise; the position tokens tell the decoder where
  on this face to draw the movement.
- **The target is the future change x_{t+k} − x_t, not x_{t+k} itself**: the frame is
  dominated by identity and texture that x_t already gives; the change is the motion.
  It is reconstructed in grey at a quarter of the resolution, which averages sensor
  noise away and keeps the decoder small.
- **The loss is scale-free**: the target is the change as the action branch reads it
  (`frame_difference`: mean removed, divided by its spread, per sample), so 1.0 means
  "reconstructs no motion", figures compare across data sets, and what the encoders
  learn on macro steps transfers to micro ones a fifth their size (the tuning benchmark
  measured +0.07 to +0.12 UF1 over training the same network from scratch).
- **The action encoder reads what MIACNet's will** (`pretrain.action_input`): the
  difference alone, or with the optical flow and strain of the step beside it, drawn with
  the pair in the loader (`MacroFramePairs`).
- **What is reconstructed** (`pretrain.target`): the grey change (`change`), or the
  step's optical flow (`flow`), normalised the way the action branch reads it — motion
  without the texture and lighting a grey change also carries.
- **Macro to micro** (`pretrain.micro_scale`): a macro step is a large, clean movement,
  unlike anything the encoder sees at fine-tuning. With `micro_scale` the loader shrinks
  each step to a micro-expression's size (x_t moved a fraction s of the step's flow, with
  fresh sensor noise) before the action encoder reads it, and the model reconstructs the
  full macro step from it: the encoder learns to read what a subtle movement will become.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mer_core.models.encoders import (
    Block,
    Encoder,
    InputSizeError,
    action_input,
    frame_difference,
    normalize_flow,
    normalize_frames,
)

TARGET_DOWNSCALE = 4


# What MA2MI reconstructs (`pretrain.target`), and its channels.
TARGETS: dict[str, int] = {"change": 1, "flow": 2}


class MA2MI(nn.Module):
    def __init__(self, position_encoder: Encoder, action_encoder: Encoder, img_size: int, code_dim: int = 32,
                 target: str = "change"):
        super().__init__()
        self.target, self.channels = target, TARGETS[target]
        self.position_encoder = position_encoder
        self.action_encoder = action_encoder
        dim, tokens = position_encoder.embed_dim, position_encoder.num_tokens
        side = int(round(tokens ** 0.5))
        self.grid = side
        self.target_size = img_size // TARGET_DOWNSCALE
        if img_size % TARGET_DOWNSCALE or self.target_size % side:
            raise InputSizeError(f"MA2MI reconstructs a {TARGET_DOWNSCALE}x-downscaled target on the encoder's "
                                 f"{side}x{side} token grid: the image side {img_size} must be a multiple of "
                                 f"{TARGET_DOWNSCALE * side}")
        self.patch = self.target_size // side  # target pixels per token side
        self.tokens, self.dim = tokens, dim
        # The code reads every action token and is read back per token: it says what moved
        # where, in code_dim numbers for the whole face.
        self.to_code = nn.Sequential(nn.LayerNorm(tokens * dim), nn.Linear(tokens * dim, code_dim))
        self.from_code = nn.Linear(code_dim, tokens * dim)
        self.predictor = Block(dim, heads=max(1, dim // 32))
        self.norm = nn.LayerNorm(dim)
        self.to_pixels = nn.Linear(dim, self.channels * self.patch * self.patch)

    def forward_encoder(self, current: torch.Tensor, future: torch.Tensor, motion: torch.Tensor | None = None
                        ) -> torch.Tensor:
        """uint8 frames (B, H, W, C), and their motion (B, 3, H, W) when the action encoder
        reads flow → position tokens plus the decoded action code (B, N, D)."""
        position = self.position_encoder.forward_features(normalize_frames(current))  # (B, N, D)
        action = self.action_encoder.forward_features(action_input(future, current, motion))  # (B, N, D)
        code = self.to_code(action.flatten(1))  # (B, code_dim): the bottleneck
        return position + self.from_code(code).view(-1, self.tokens, self.dim)

    def forward_predictor(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D) → the reconstructed target (B, C, S, S) at a quarter resolution."""
        patches = self.to_pixels(self.norm(self.predictor(tokens)))  # (B, N, C*p*p)
        b, c, p, g = patches.shape[0], self.channels, self.patch, self.grid
        # (B, g*g, C*p*p) → (B, g, g, C, p, p) → (B, C, g, p, g, p) → (B, C, g*p, g*p)
        return patches.view(b, g, g, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, g * p, g * p)

    def future_change(self, current: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        """The "change" target: the normalised grey change x_{t+k} − x_t at a quarter resolution, (B, 1, S, S)."""
        return F.avg_pool2d(frame_difference(future, current), TARGET_DOWNSCALE)

    def future_flow(self, flow: torch.Tensor) -> torch.Tensor:
        """The "flow" target: the step's flow (B, 2, H, W), normalised as the action branch
        reads it, at a quarter resolution, (B, 2, S, S)."""
        return F.avg_pool2d(normalize_flow(flow.float()), TARGET_DOWNSCALE)

    def forward_loss(self, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(predicted, target)

    def forward(self, current: torch.Tensor, future: torch.Tensor, motion: torch.Tensor | None = None,
                target: torch.Tensor | None = None, target_flow: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of reconstructing the step x_t → x_{t+k} from x_t and the action code of the
        step: its grey change, or its flow `target_flow` (B, 2, H, W). With `target` (the
        macro frame a shrunk, micro-scale step grows into), the change to that frame."""
        predicted = self.forward_predictor(self.forward_encoder(current, future, motion))
        if self.target == "flow":
            return self.forward_loss(predicted, self.future_flow(target_flow))
        return self.forward_loss(predicted, self.future_change(current, future if target is None else target))

