"""Model behaviour: each objective and MIACNet overfit one batch, the contrastive loss is
minimal on identical views, and pre-training resumes after being killed."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mer_core.config import PretrainParams
from mer_core.data.store import clip_schema, rows_to_table, write_table
from mer_core.models.contrawarp import (
    ContraWarping,
    global_transform,
    local_warp,
    warped_info_nce,
)
from mer_core.models.encoders import normalize_frames
from mer_core.models.ma2mi import MA2MI, sample_frame_pairs
from mer_core.models.miacnet import build_miacnet
from mer_core.models.registry import create_model
from mer_core.training import engine
from mer_core.training.pretrain import pretrain_variant

ENCODER = "vit_mini_patch8_64"


def moving_clips(n: int, frames: int = 4, seed: int = 0, direction: list[int] | None = None) -> torch.Tensor:
    """uint8 (n, T, 64, 64, 3): a textured face-sized blob with a bright patch moving 1 px a frame."""
    rng = np.random.default_rng(seed)
    clips = np.zeros((n, frames, 64, 64, 3), np.uint8)
    for i in range(n):
        base = (rng.integers(60, 120) + rng.normal(0, 8, (64, 64, 1))).clip(0, 255)
        y, x = rng.integers(16, 40, 2)
        dy = direction[i] if direction is not None else rng.choice([-1, 1])
        for t in range(frames):
            frame = np.repeat(base, 3, axis=2)
            frame[y + dy * t: y + dy * t + 8, x: x + 8] = 220
            clips[i, t] = frame
    return torch.from_numpy(clips)


def _train(model, loss_fn, steps: int, lr: float = 1e-3) -> tuple[float, float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    first = None
    for _ in range(steps):
        loss = loss_fn()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = first if first is not None else float(loss.detach())
    return first, float(loss_fn().detach())


def test_ma2mi_overfits_one_batch():
    torch.manual_seed(0)
    current, future = sample_frame_pairs(moving_clips(8), 2, torch.Generator().manual_seed(0))
    model = MA2MI(create_model(ENCODER), create_model(ENCODER), img_size=64)
    first, last = _train(model, lambda: model(current, future), steps=80)
    assert last < 0.5 * first


def test_contrawarping_overfits_one_batch():
    torch.manual_seed(0)
    images = normalize_frames(moving_clips(8)[:, 0])
    model = ContraWarping(create_model(ENCODER))
    # The same generator state every step: the same views, so the batch can be memorised.
    first, last = _train(model, lambda: model(images, torch.Generator().manual_seed(1)), steps=40)
    assert last < 0.3 * first


def test_contrastive_loss_is_minimal_on_identical_views():
    torch.manual_seed(0)
    anchor = F.normalize(torch.randn(16, 32), dim=-1)
    negative = F.normalize(torch.randn(16, 32), dim=-1)
    identical = warped_info_nce(anchor, anchor, negative, temperature=0.1)
    for _ in range(20):
        other = F.normalize(anchor + 0.5 * torch.randn(16, 32), dim=-1)
        assert identical <= warped_info_nce(anchor, other, negative, temperature=0.1)
    # Far-away negatives and a low temperature: the loss of identical views goes to zero.
    assert warped_info_nce(anchor, anchor, -anchor, temperature=0.01) < 1e-3


def test_views_keep_shape_and_the_warp_is_local():
    images = normalize_frames(moving_clips(4)[:, 0])
    generator = torch.Generator().manual_seed(0)
    assert global_transform(images, generator).shape == images.shape
    warped = local_warp(images, generator)
    changed = (warped - images).abs().mean(dim=1) > 1e-3  # (B, H, W)
    assert changed.any() and changed.float().mean() < 0.5  # some of the face moves, most stays


def test_miacnet_overfits_one_batch():
    torch.manual_seed(0)
    direction = [1, -1] * 4
    clips = moving_clips(8, direction=direction)
    labels = torch.tensor([0 if d == 1 else 1 for d in direction])
    model = build_miacnet(ENCODER, num_classes=2, dropout=0.0)
    _train(model, lambda: F.cross_entropy(model(clips[:, 0], clips[:, 2]), labels), steps=40)
    assert (model.eval()(clips[:, 0], clips[:, 2]).argmax(1) == labels).all()


def _macro_table(directory: Path, clips: int = 8) -> None:
    frames = moving_clips(clips, frames=4).numpy()
    rows = [{"clip_id": f"c-{i}", "dataset": "tiny", "subject": "s-0", "kind": "macro", "frames": frames[i]}
            for i in range(clips)]
    write_table(rows_to_table(rows, clip_schema(4, 64, with_source=False)), directory / "part-00000.parquet", 4)


_CHILD = """
import sys, torch
from pathlib import Path
from mer_core.config import PretrainParams
from mer_core.training.pretrain import pretrain_variant
torch.set_num_threads(1)
params = PretrainParams.model_validate_json(sys.argv[1])
pretrain_variant(params, "both", [Path(sys.argv[2])], 64, "v1")
"""


@pytest.mark.timeout(300)
def test_pretraining_resumes_after_a_kill(tmp_path):
    _macro_table(tmp_path / "clips")
    settings = {"epochs": 40, "batch_size": 4, "encoder": ENCODER, "device": "cpu", "warmup_epochs": 1}
    killed = PretrainParams(checkpoint_dir=tmp_path / "killed", **settings)
    child = subprocess.Popen([sys.executable, "-c", _CHILD, killed.model_dump_json(), str(tmp_path / "clips")],
                             env={**os.environ, "MER_LOG_LEVEL": "WARNING"})
    checkpoint = tmp_path / "killed" / "both.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert checkpoint.exists(), "the child wrote no checkpoint before it was killed"

    torch.set_num_threads(1)
    resumed_state, resumed = pretrain_variant(killed, "both", [tmp_path / "clips"], 64, "v1")
    assert 0 < resumed.resumed_from_epoch < settings["epochs"]
    assert [h["epoch"] for h in resumed.history] == list(range(1, settings["epochs"] + 1))

    whole = PretrainParams(checkpoint_dir=tmp_path / "whole", **settings)
    whole_state, _ = pretrain_variant(whole, "both", [tmp_path / "clips"], 64, "v1")
    for branch in ("position", "action"):
        for name, tensor in whole_state[branch].items():
            assert torch.allclose(tensor, resumed_state[branch][name], atol=1e-5), f"{branch}.{name} differs"


def test_checkpoint_of_other_settings_is_not_resumed(tmp_path):
    engine.save_checkpoint(tmp_path / "x.pt", {"fingerprint": "old", "epoch": 3})
    assert engine.load_checkpoint(tmp_path / "x.pt", "new") is None
    assert engine.load_checkpoint(tmp_path / "x.pt", "old")["epoch"] == 3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pretraining_on_gpu_with_bf16_and_compile(tmp_path):
    _macro_table(tmp_path / "clips", clips=16)
    params = PretrainParams(checkpoint_dir=tmp_path / "ck", epochs=2, batch_size=8, encoder=ENCODER, device="cuda",
                            compile=True)
    _, result = pretrain_variant(params, "both", [tmp_path / "clips"], 64, "gpu")
    assert np.isfinite(result.history[-1]["loss"])
