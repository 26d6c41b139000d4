"""Models built by registered name, as timm's `register_model` / `create_model`.

The name is what params.yaml and MLflow record; sizes are builders, not flags. The
builders register themselves when `mer_core.models` is imported (its `__init__`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    if builder.__name__ in _BUILDERS:
        raise ValueError(f"model {builder.__name__!r} is registered twice")
    _BUILDERS[builder.__name__] = builder
    return builder


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model by name, e.g. `create_model("vit_mini_patch8_64", img_size=96)`;
    unknown names list the known ones."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; registered: {sorted(_BUILDERS)}")
    return _BUILDERS[name](**kwargs)


def list_models() -> list[str]:
    return sorted(_BUILDERS)
