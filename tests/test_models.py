"""Every registered encoder: tokens of the declared shape, finite, and a pooled head."""

import pytest
import torch

from mer_core.models.registry import create_model, list_models


@pytest.mark.parametrize("name", [n for n in list_models() if n.endswith("_64")])
def test_encoder_shapes_and_finite(name):
    model = create_model(name).eval()
    x = torch.randn(2, 3, 64, 64)
    tokens = model.forward_features(x)
    assert tokens.shape == (2, model.num_tokens, model.embed_dim)
    pooled = model.forward_head(tokens)
    assert pooled.shape == (2, model.embed_dim) and torch.isfinite(pooled).all()


def test_unknown_model_lists_known_ones():
    with pytest.raises(ValueError, match="registered"):
        create_model("resnet9000")
