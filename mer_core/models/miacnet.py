"""MIACNet: the two-branch micro-action network that MA2MI fine-tunes.

No official code exists; the layout follows the same authors' MMNet (IJCAI 2022):
- *facial position* branch: a position encoder over the onset frame — where on this face
  the parts are;
- *facial action* branch: an action encoder over the pixel difference apex − onset (and,
  with `action_input="difference_flow"`, the onset→apex optical flow and strain), plus
  the change of the position encoder's tokens between onset and apex — what moves;
- fusion by addition of the token maps, then a spatially aware head: each fused token is
  squeezed to a few channels and the token grid is flattened into the classifier, so the
  class can depend on *where* on the face the movement is (a mean pool would discard it,
  and with a few hundred clips a linear read-out of the grid generalizes better than a
  fusion transformer trained from nothing).

The two encoders come from the same registered family, so pre-training (MA2MI trains
both, ContraWarping the position encoder) only changes their initial weights.

`position_branch=False` reads the action branch alone (the position encoder is not run).
On the synthetic tuning benchmark that is what let MA2MI's pre-training pay off: end to
end, the two-branch model from MA2MI scored 0.59 / 0.56 UF1 against 0.60 from scratch,
the action branch alone 0.62 against 0.55 (params.yaml `tuning`; README). Reading the
flow beside the difference (`action_input="difference_flow"`) then lifted both, to 0.645
from MA2MI and 0.654 from scratch: the flow gives the sub-pixel displacement that
pre-training on the difference had to teach. What made pre-training pay again was its
target, not this network: MA2MI reconstructing the step's flow from the step shrunk to
micro size (mer_core/models/ma2mi.py) took the end-to-end model to 0.701 against 0.642
from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from mer_core.models.encoders import ACTION_INPUTS, Encoder, action_input, normalize_frames, reads_motion
from mer_core.models.registry import create_model


@dataclass(frozen=True)
class BranchTokens:
    """The encoder outputs MIACNet fuses, each (B, N, D); cacheable when encoders are frozen."""

    position: torch.Tensor
    action: torch.Tensor
    feature_change: torch.Tensor

    def to(self, device: torch.device | str) -> "BranchTokens":
        return BranchTokens(*(t.to(device) for t in (self.position, self.action, self.feature_change)))

    def index(self, rows: torch.Tensor | slice) -> "BranchTokens":
        return BranchTokens(self.position[rows], self.action[rows], self.feature_change[rows])


class MIACNet(nn.Module):
    def __init__(self, position_encoder: Encoder, action_encoder: Encoder, num_classes: int,
                 dropout: float = 0.2, token_channels: int = 32, position_branch: bool = True,
                 action_input: str = "difference"):
        super().__init__()
        self.position_encoder = position_encoder
        self.action_encoder = action_encoder
        self.position_branch = position_branch
        self.action_input = action_input
        dim, tokens = position_encoder.embed_dim, position_encoder.num_tokens
        self.change_proj = nn.Linear(dim, dim)
        # One norm per branch before the sum: pre-trained encoders give tokens of their own
        # scale, and the loudest branch would otherwise drown the others in the fusion.
        self.position_norm, self.action_norm, self.change_norm = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.squeeze = nn.Linear(dim, token_channels)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(tokens * token_channels, num_classes)

    @property
    def reads_motion(self) -> bool:
        """Whether `forward` needs the onset→apex motion (the action input has flow)."""
        return reads_motion(self.action_input)

    def forward_branches(self, onset: torch.Tensor, apex: torch.Tensor, motion: torch.Tensor | None = None
                         ) -> BranchTokens:
        """Encode uint8 onset and apex frames (B, H, W, C), and their motion (B, 3, H, W) when
        `reads_motion`, into the branch tokens (without the position branch, its tokens
        are zeros and its encoder is not run)."""
        if self.reads_motion == (motion is None):
            raise ValueError(f"MIACNet reading {self.action_input!r} was given "
                             f"{'no' if motion is None else 'unneeded'} motion")
        action = self.action_encoder.forward_features(action_input(apex, onset, motion))
        if not self.position_branch:
            unused = torch.zeros_like(action)
            return BranchTokens(position=unused, action=action, feature_change=unused)
        both = self.position_encoder.forward_features(normalize_frames(torch.cat([onset, apex])))
        at_onset, at_apex = both.chunk(2)
        return BranchTokens(position=at_onset, action=action, feature_change=at_apex - at_onset)

    def forward_head(self, tokens: BranchTokens) -> torch.Tensor:
        """Fuse the branches by addition and classify: → logits (B, num_classes)."""
        fused = self.action_norm(tokens.action)  # (B, N, D)
        if self.position_branch:
            fused = (fused + self.position_norm(tokens.position)
                     + self.change_norm(self.change_proj(tokens.feature_change)))
        grid = F.gelu(self.squeeze(fused)).flatten(1)  # (B, N * token_channels)
        return self.classifier(self.dropout(grid))

    def forward(self, onset: torch.Tensor, apex: torch.Tensor, motion: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_branches(onset, apex, motion))

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [*self.position_encoder.parameters(), *self.action_encoder.parameters()]

    def named_head_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Everything but the two encoders: what trains over frozen encoders."""
        encoder_ids = {id(p) for p in self.encoder_parameters()}
        return [(n, p) for n, p in self.named_parameters() if id(p) not in encoder_ids]


def build_miacnet(encoder_name: str, num_classes: int, encoder_state: dict | None = None,
                  dropout: float = 0.2, img_size: int = 64, position_branch: bool = True,
                  action_input: str = "difference") -> MIACNet:
    """MIACNet over two `encoder_name` encoders for `img_size` crops, the action one reading
    `action_input`, initialised from a pre-training state if given.

    `encoder_state` holds `position` and `action` state dicts (see `pretrain`); None
    means from scratch.
    """
    position = create_model(encoder_name, img_size=img_size)
    action = create_model(encoder_name, img_size=img_size, in_chans=ACTION_INPUTS[action_input])
    if encoder_state is not None:
        position.load_state_dict(encoder_state["position"])
        action.load_state_dict(encoder_state["action"])
    return MIACNet(position, action, num_classes, dropout=dropout, position_branch=position_branch,
                   action_input=action_input)
