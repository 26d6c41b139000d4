"""Every registered encoder (timm's parametrized model test): built by name at its own input
size and at another one, tokens of the declared shape, finite; and the heads built on it."""

import pytest
import torch

from mer_core.config import ParamsError, PretrainParams
from mer_core.models import create_model, list_models
from mer_core.models.encoders import InputSizeError
from mer_core.models.ma2mi import MA2MI
from mer_core.models.miacnet import build_miacnet
from mer_core.training.pretrain import check_input_size

MODELS = list_models()


def _other_size(model) -> int:
    """A second side the model takes: 1.5 × its own, rounded to a multiple of its token stride."""
    stride = model.img_size // int(round(model.num_tokens ** 0.5))
    return int(round(model.img_size * 1.5 / (4 * stride))) * 4 * stride


@pytest.mark.parametrize("name", MODELS)
def test_every_model_at_its_own_and_another_input_size(name):
    own = create_model(name).eval()
    for size in (own.img_size, _other_size(own)):
        model = create_model(name, img_size=size).eval()
        with torch.no_grad():
            tokens = model.forward_features(torch.randn(2, 1, size, size))  # grey
            pooled = model.forward_head(tokens)
        assert model.img_size == size
        assert tokens.shape == (2, model.num_tokens, model.embed_dim)
        assert pooled.shape == (2, model.embed_dim) and torch.isfinite(pooled).all()


@pytest.mark.parametrize("name", [n for n in MODELS if "small" not in n])  # ViT-S at 168 px is slow on CPU
def test_ma2mi_and_miacnet_build_for_any_size_the_encoder_takes(name):
    size = _other_size(create_model(name))
    frames = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8)
    objective = MA2MI(create_model(name, img_size=size), create_model(name, img_size=size), size)
    assert torch.isfinite(objective(frames, frames.flip(1)))
    logits = build_miacnet(name, 3, img_size=size).eval()(frames, frames.flip(1))
    assert logits.shape == (2, 3)


def test_a_size_an_encoder_cannot_take_names_both_keys():
    with pytest.raises(InputSizeError, match="divisible by 8, got 90"):
        create_model("vit_mini_patch8_64", img_size=90)
    with pytest.raises(ParamsError, match=r"pretrain.encoder convnet_micro_64 cannot read ingest.crop_size 90"):
        check_input_size(PretrainParams(), 90)
    check_input_size(PretrainParams(), 96)  # 96-px crops with the default encoder: built for them


def test_unknown_model_lists_known_ones():
    with pytest.raises(ValueError, match="registered"):
        create_model("resnet9000")


def test_contrawarping_warps_move_each_faces_own_mouth():
    """Given a face's landmarks, a local warp around its mouth changes the mouth, not the brows;
    the default centres sit where alignment puts those parts."""
    import numpy as np

    from mer_core.data.faces import CropSettings, align_window
    from mer_core.data.synthetic import ACTION_UNITS, FaceRenderer, sample_identity
    from mer_core.models.contrawarp import WARP_CENTRES, local_warp, part_centres

    frame = FaceRenderer(sample_identity(np.random.default_rng(2)), 192).render(np.zeros((len(ACTION_UNITS), 2)))
    aligned = align_window([frame, frame], [0, 1], CropSettings(64, 2, 1, 1, 0.15, 48), "face")
    landmarks = torch.from_numpy(aligned.landmarks)[None]  # (1, 68, 2)
    centres = part_centres(landmarks, 64)  # (1, 8, 2)
    assert (centres[0] - WARP_CENTRES).abs().max() < 0.1
    image = torch.from_numpy(aligned.crops[0]).permute(2, 0, 1)[None].float() / 255
    mouth = centres[:, 4:6]  # both corners
    warped = local_warp(image, torch.Generator().manual_seed(0), max_displacement=0.1, radius=0.08, centres=mouth)
    change = (warped - image).abs().mean(1)[0]  # (H, W)
    rows = lambda points: slice(int(points[:, 1].min()) - 2, int(points[:, 1].max()) + 3)  # noqa: E731
    assert change[rows(aligned.landmarks[48:68])].sum() > 10 * change[rows(aligned.landmarks[17:27])].sum()
