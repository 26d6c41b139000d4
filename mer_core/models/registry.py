"""Models built by registered name, as timm's `register_model` / `create_model`.

The name is what params.yaml and MLflow record; sizes are builders, not flags.
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
    """Build a registered model by name; unknown names list the known ones."""
    import mer_core.models.encoders  # noqa: F401  (registers the builders)

    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; registered: {sorted(_BUILDERS)}")
    return _BUILDERS[name](**kwargs)


def list_models() -> list[str]:
    import mer_core.models.encoders  # noqa: F401

    return sorted(_BUILDERS)
