"""Models by registered name (timm's way): importing the package fills the registry."""

from mer_core.models import encoders  # noqa: F401  (each builder registers itself)
from mer_core.models.registry import create_model, list_models

__all__ = ["create_model", "list_models"]
