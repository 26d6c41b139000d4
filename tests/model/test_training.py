"""Model behaviour: each objective and MIACNet overfit one batch, the contrastive loss is
minimal on identical views, invariances the inputs promise, the optimizer's groups, and
checkpoints: resumed after a kill, reused only for the same settings, never run as code."""

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

from mer_core.config import FinetuneParams, PretrainParams
from mer_core.data.store import clip_schema, rows_to_table, write_table
from mer_core.models.contrawarp import (
    ContraWarping,
    global_transform,
    local_warp,
    warped_info_nce,
)
from mer_core.models.encoders import normalize_frames
from mer_core.models.ma2mi import MA2MI
from mer_core.models.miacnet import build_miacnet
from mer_core.models.registry import create_model
from mer_core.training.checkpoint import load_checkpoint, save_checkpoint
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
    clips = moving_clips(8)
    current, future = clips[:, 1], clips[:, 3]
    model = MA2MI(create_model(ENCODER), create_model(ENCODER), img_size=64)
    first, last = _train(model, lambda: model(current, future), steps=80)
    assert last < 0.5 * first


def test_ma2mi_with_a_flow_target_overfits_one_batch():
    from mer_core.data.motion import optical_flow

    torch.manual_seed(0)
    clips = moving_clips(8)
    current, future = clips[:, 1], clips[:, 3]
    flow = torch.stack([torch.from_numpy(optical_flow(a.numpy(), b.numpy()).transpose(2, 0, 1))
                        for a, b in zip(current, future)])  # (B, 2, H, W)
    model = MA2MI(create_model(ENCODER), create_model(ENCODER), img_size=64, target="flow")
    assert model.forward_predictor(model.forward_encoder(current, future)).shape == (8, 2, 16, 16)
    first, last = _train(model, lambda: model(current, future, target_flow=flow), steps=80)
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


def test_miacnet_reading_flow_separates_a_motion_the_difference_leaves_ambiguous():
    """A patch that moves up and one that moves down leave the same kind of grey difference
    (one bright, one dark edge); the flow channels tell them apart, mirrored consistently."""
    from mer_core.data.motion import clip_motion
    from mer_core.models.encoders import action_input, mirror_flow

    torch.manual_seed(0)
    direction = [1, -1] * 4
    clips = moving_clips(8, direction=direction)
    motion = torch.from_numpy(np.stack([clip_motion(c.numpy())[1] for c in clips])).permute(0, 3, 1, 2)
    inner = motion[:, 1, 12:-12, 12:-12]  # v: the patch's rows move by `direction` px a frame
    assert all((m.sum() > 0) == (d > 0) for m, d in zip(inner, direction))
    x = action_input(clips[:, 2], clips[:, 0], motion)
    assert x.shape == (8, 4, 64, 64) and torch.allclose(x[:, 1:3].mean(dim=(-2, -1)), torch.zeros(8, 2), atol=1e-4)
    mirrored = action_input(clips[:, 2].flip(-2), clips[:, 0].flip(-2), mirror_flow(motion))
    assert torch.allclose(mirrored, torch.cat([x[:, :1].flip(-1), -x[:, 1:2].flip(-1), x[:, 2:].flip(-1)], 1),
                          atol=1e-4)
    labels = torch.tensor([0 if d == 1 else 1 for d in direction])
    model = build_miacnet(ENCODER, num_classes=2, dropout=0.0, action_input="difference_flow")
    assert model.reads_motion
    _train(model, lambda: F.cross_entropy(model(clips[:, 0], clips[:, 2], motion), labels), steps=40)
    assert (model.eval()(clips[:, 0], clips[:, 2], motion).argmax(1) == labels).all()
    with pytest.raises(ValueError, match="no motion"):
        model(clips[:, 0], clips[:, 2])


def test_frame_pairs_are_drawn_in_the_loader_with_their_flow_and_repeat_per_epoch(tmp_path):
    from mer_core.data.motion import pair_motion
    from mer_core.data.training_sets import MacroClipStream, MacroFramePairs

    _macro_table(tmp_path / "clips", clips=8)
    source = {bytes(c.numpy()): c.numpy() for c in MacroClipStream([tmp_path / "clips"])}
    pairs = MacroFramePairs(MacroClipStream([tmp_path / "clips"]), max_step=2, flow="farneback", seed=3)
    drawn = list(pairs)
    assert len(drawn) == pairs.clips == 8
    for pair in drawn:
        current, future = pair["current"].numpy(), pair["future"].numpy()
        clip = next(c for c in source.values() if any(np.array_equal(f, current) for f in c))
        start = next(t for t, f in enumerate(clip) if np.array_equal(f, current))
        assert any(np.array_equal(clip[start + k], future) for k in (1, 2) if start + k < len(clip))
        assert torch.equal(pair["motion"], torch.from_numpy(pair_motion(current, future).transpose(2, 0, 1)))
    again = list(pairs)
    assert all(torch.equal(a["future"], b["future"]) for a, b in zip(drawn, again))  # a resumed epoch: the same pairs
    pairs.set_epoch(1)
    assert "motion" not in next(iter(MacroFramePairs(MacroClipStream([tmp_path / "clips"]), 2)))


def test_persistent_loader_workers_follow_the_epoch_and_draw_what_no_worker_draws(tmp_path):
    from torch.utils.data import DataLoader

    from mer_core.data.training_sets import MacroClipStream, MacroFramePairs

    _macro_table(tmp_path / "clips", clips=8, row_group=2)
    pairs = MacroFramePairs(MacroClipStream([tmp_path / "clips"]), max_step=2, seed=3)
    loader = DataLoader(pairs, batch_size=None, num_workers=2, persistent_workers=True)
    drawn = {}
    for epoch in (0, 1):
        pairs.set_epoch(epoch)
        in_workers = sorted(bytes(p["current"].numpy()) + bytes(p["future"].numpy()) for p in loader)
        in_process = sorted(bytes(p["current"].numpy()) + bytes(p["future"].numpy()) for p in pairs)
        assert in_workers == in_process and len(in_workers) == 8
        drawn[epoch] = in_workers
    assert drawn[0] != drawn[1]  # a new epoch draws new pairs, in the workers too


def test_a_shrunk_macro_step_is_a_micro_movement_of_the_current_frame_towards_the_target(tmp_path):
    from mer_core.data.motion import optical_flow
    from mer_core.data.training_sets import MacroClipStream, MacroFramePairs

    _macro_table(tmp_path / "clips", clips=4)
    pairs = MacroFramePairs(MacroClipStream([tmp_path / "clips"]), max_step=2, flow="farneback", seed=3,
                            micro_scale=(0.2, 0.3), micro_noise=0.0)
    for pair in pairs:
        current, shrunk, target = (pair[k].numpy() for k in ("current", "future", "target"))
        full, small = optical_flow(current, target), optical_flow(current, shrunk)
        moving = np.linalg.norm(full, axis=-1) > 0.5
        assert moving.any()
        ratio = np.linalg.norm(small[moving], axis=-1).mean() / np.linalg.norm(full[moving], axis=-1).mean()
        assert 0.1 < ratio < 0.4  # the action encoder sees a fifth to a third of the step
        assert pair["motion"].shape == (3, 64, 64)


def test_pretrained_encoders_must_read_what_params_ask(tmp_path):
    from mer_core.training.checkpoint import save_encoder
    from mer_core.training.finetune import ModelInputs, fold_setup

    state = {"position": create_model(ENCODER).state_dict(), "action": create_model(ENCODER).state_dict()}
    save_encoder(tmp_path / "ma2mi.pt", state, ENCODER, "ma2mi")
    with pytest.raises(ValueError, match="action_input 'difference'.*'difference_flow'.*re-run pretrain"):
        fold_setup(FinetuneParams(), "ma2mi_e2e", ModelInputs(ENCODER, "difference_flow"), 64, tmp_path,
                   torch.device("cpu"))
    assert fold_setup(FinetuneParams(), "ma2mi_e2e", ModelInputs(ENCODER), 64, tmp_path,
                      torch.device("cpu")).inputs.action_input == "difference"


def _macro_table(directory: Path, clips: int = 8, row_group: int = 4) -> None:
    frames = moving_clips(clips, frames=4).numpy()
    rows = [{"clip_id": f"c-{i}", "dataset": "tiny", "subject": "s-0", "kind": "macro", "frames": frames[i]}
            for i in range(clips)]
    write_table(rows_to_table(rows, clip_schema(4, 64, with_source=False)), directory / "part-00000.parquet",
                row_group)


_CHILD = """
import sys, torch
from pathlib import Path
from mer_core.config import PretrainParams
from mer_core.training.pretrain import pretrain_variant
torch.set_num_threads(1)
params = PretrainParams.model_validate_json(sys.argv[1])
pretrain_variant(params, "both", [Path(sys.argv[2])], 64, "v1", Path(sys.argv[3]))
"""


@pytest.mark.timeout(300)
def test_pretraining_resumes_after_a_kill(tmp_path):
    _macro_table(tmp_path / "clips")
    settings = {"epochs": 40, "batch_size": 4, "encoder": ENCODER, "device": "cpu", "warmup_epochs": 1}
    params = PretrainParams(**settings)
    child = subprocess.Popen([sys.executable, "-c", _CHILD, params.model_dump_json(), str(tmp_path / "clips"),
                              str(tmp_path / "killed")],
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
    resumed_state, resumed = pretrain_variant(params, "both", [tmp_path / "clips"], 64, "v1", tmp_path / "killed")
    assert 0 < resumed.resumed_from_epoch < settings["epochs"]
    assert [h["epoch"] for h in resumed.history] == list(range(1, settings["epochs"] + 1))

    whole_state, _ = pretrain_variant(params, "both", [tmp_path / "clips"], 64, "v1", tmp_path / "whole")
    for branch in ("position", "action"):
        for name, tensor in whole_state[branch].items():
            assert torch.allclose(tensor, resumed_state[branch][name], atol=1e-5), f"{branch}.{name} differs"


def test_checkpoint_of_other_settings_is_not_resumed(tmp_path):
    save_checkpoint(tmp_path / "x.pt", {"fingerprint": "old", "epoch": 3})
    assert load_checkpoint(tmp_path / "x.pt", "new") is None
    assert load_checkpoint(tmp_path / "x.pt", "old")["epoch"] == 3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pretraining_on_gpu_with_bf16_and_compile(tmp_path):
    _macro_table(tmp_path / "clips", clips=16)
    params = PretrainParams(epochs=2, batch_size=8, encoder=ENCODER, device="cuda", compile=True)
    _, result = pretrain_variant(params, "both", [tmp_path / "clips"], 64, "gpu", tmp_path / "ck")
    assert np.isfinite(result.history[-1]["loss"])


def test_a_global_brightness_change_leaves_the_motion_input_unchanged():
    from mer_core.models.encoders import frame_difference

    onset, apex = moving_clips(4, frames=2)[:, 0], moving_clips(4, frames=2)[:, 1]
    brighter = lambda frames: (frames.int() + 17).clamp(0, 255).to(torch.uint8)  # noqa: E731  no pixel saturates here
    assert torch.allclose(frame_difference(brighter(apex), brighter(onset)), frame_difference(apex, onset), atol=1e-4)
    # and to the size of the change: a macro step and a micro one a fifth its size read alike
    rng = np.random.default_rng(0)
    base = torch.from_numpy(rng.integers(80, 120, (1, 64, 64, 3)).astype(np.uint8))
    step = torch.zeros_like(base, dtype=torch.int16)
    step[:, 20:30, 20:40] = 3  # a crease deepening by 3 grey levels
    micro, macro = (base.short() + step).to(torch.uint8), (base.short() + 5 * step).to(torch.uint8)
    assert torch.allclose(frame_difference(macro, base), frame_difference(micro, base), atol=1e-4)


def test_after_contrawarping_training_the_positive_is_closer_than_the_warped_negative():
    torch.manual_seed(0)
    images = normalize_frames(moving_clips(16, seed=3)[:, 0])
    model = ContraWarping(create_model(ENCODER), warp_displacement=0.08)

    def similarities() -> tuple[float, float]:
        """Mean cosine of anchor to positive and to its warped negative, on fixed held-back views."""
        model.eval()
        with torch.no_grad():
            views = model.forward_views(images, torch.Generator().manual_seed(99))
            anchor, positive, negative = model.embed(torch.cat(views)).split(16)
        model.train()
        return float((anchor * positive).sum(-1).mean()), float((anchor * negative).sum(-1).mean())

    positive, negative = similarities()
    assert positive < negative  # at random initialisation the warp barely registers
    generator = torch.Generator().manual_seed(0)
    _train(model, lambda: model(images, generator), steps=100)
    positive, negative = similarities()
    assert positive > negative, (positive, negative)


def test_no_weight_decay_on_norms_biases_and_position_embeddings():
    from mer_core.training.engine import configure_optimizers

    model = create_model(ENCODER)
    optimizer = configure_optimizers(model.named_parameters(), lr=1e-3, weight_decay=0.05)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in decayed}
    assert "patch_embed.weight" in names and "blocks.0.mlp.0.weight" in names
    assert not any(n.endswith(".bias") or "norm" in n or n == "pos_embed" for n in names)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_a_new_finetune_setting_invalidates_finished_loso_runs(tmp_path):
    """The job fingerprint hashes every finetune setting but a named few, so a setting added
    later cannot silently reuse checkpoints trained without it."""
    from mer_core.training.finetune import FINGERPRINT_EXCLUDES, FinetuneFiles, LosoJob, ModelInputs, _job_fingerprint

    files = FinetuneFiles(tmp_path, tmp_path, tmp_path, tmp_path, tmp_path / "final.pt")
    base = FinetuneParams()

    def fingerprint(params, inputs=ModelInputs(ENCODER)) -> str:
        return _job_fingerprint(LosoJob(params, files, "scratch_e2e", 0, inputs, ("synth",), 1), "data-v1")

    assert fingerprint(base, ModelInputs(ENCODER, "difference_flow")) != fingerprint(base)

    perturbed = {"label_column": "label3", "epoch_selection": "inner_subjects"}
    for name, value in base.model_dump().items():
        if name in FINGERPRINT_EXCLUDES:
            assert fingerprint(base.model_copy(update={name: "changed"})) == fingerprint(base), name
            continue
        new = perturbed.get(name, not value if isinstance(value, bool) else value + 1 if isinstance(value, int | float)
                            else "x")
        assert fingerprint(base.model_copy(update={name: new})) != fingerprint(base), f"{name} is not hashed"

    class WithALaterSetting(FinetuneParams):  # a field a later version adds: hashed with no list to update
        mixup: float = 0.0

    assert fingerprint(WithALaterSetting(mixup=0.2)) != fingerprint(WithALaterSetting())


def test_finished_runs_survive_a_resaved_encoder_but_not_a_changed_one(tmp_path, monkeypatch):
    """Pre-training resumed from its checkpoint (another process) saves the same encoder
    again: the LOSO runs made with it stay valid, while other weights invalidate them."""
    from mer_core.training.checkpoint import save_encoder
    from mer_core.training.finetune import FinetuneFiles, LosoJob, ModelInputs, _job_fingerprint

    files = FinetuneFiles(tmp_path, tmp_path, tmp_path, tmp_path, tmp_path / "final.pt")
    job = LosoJob(FinetuneParams(), files, "ma2mi_e2e", 0, ModelInputs(ENCODER), ("synth",), 1)
    state = {"position": create_model(ENCODER).state_dict(), "action": create_model(ENCODER).state_dict()}
    save_encoder(tmp_path / "ma2mi.pt", state, ENCODER, "ma2mi")
    first, written = _job_fingerprint(job, "data-v1"), (tmp_path / "ma2mi.pt").read_bytes()
    monkeypatch.setattr("os.getpid", lambda: 4242)  # as another process would
    save_encoder(tmp_path / "ma2mi.pt", state, ENCODER, "ma2mi")
    assert (tmp_path / "ma2mi.pt").read_bytes() == written
    assert _job_fingerprint(job, "data-v1") == first
    state["action"] = {k: v + 1e-3 if v.is_floating_point() else v for k, v in state["action"].items()}
    save_encoder(tmp_path / "ma2mi.pt", state, ENCODER, "ma2mi")
    assert _job_fingerprint(job, "data-v1") != first


def test_inner_epoch_selection_never_looks_at_the_held_out_subject(monkeypatch):
    """epoch_selection=inner_subjects: per fold, a first run scores epochs on training
    subjects held back, the second trains for the epoch count they chose."""
    from mer_core.data.training_sets import MicroClips
    from mer_core.evaluation.protocols import leave_one_subject_out
    from mer_core.training import finetune

    subjects = [f"synth/s{k}" for k in range(4) for _ in range(4)]
    direction = [1, -1] * 8
    clips = MicroClips(clip_ids=[f"c{i}" for i in range(16)], datasets=["synth"] * 16, subjects=subjects,
                       labels=torch.tensor([0 if d == 1 else 1 for d in direction]), classes=["down", "up"],
                       frames=moving_clips(16, direction=direction), apex_index=torch.full((16,), 2),
                       action_units=[""] * 16)
    params = FinetuneParams(epochs=4, batch_size=8, lr=3e-3, weight_decay=0.05, dropout=0.0, position_branch=False,
                            encoder_lr_scale=0.3, frozen_warmup_epochs=0, flip=True, apex_jitter=0,
                            epoch_selection="inner_subjects", inner_fraction=0.25)
    setup = finetune.FoldSetup(inputs=finetune.ModelInputs("convnet_micro_64"), img_size=64, encoder_state=None, protocol="e2e",
                               params=params, device=torch.device("cpu"))
    runs = []
    real_train = finetune.train_miacnet

    def recording(setup, clips, train, generator, tokens=None, evaluate_on=None):
        runs.append((setup.params.epochs, set(train), set(evaluate_on or [])))
        return real_train(setup, clips, train, generator, tokens, evaluate_on)

    monkeypatch.setattr(finetune, "train_miacnet", recording)
    rows, folds, _ = finetune.run_loso(setup, clips, "scratch_e2e", seed=0)
    assert len(runs) == 2 * len(folds) == 8 and len(rows) == 16
    for (held_out, train, test), (selection, final), fold in zip(leave_one_subject_out(subjects), zip(*[iter(runs)] * 2),
                                                                 folds):
        _, inner_train, inner_validation = selection
        assert inner_train | inner_validation == set(train) and not inner_train & inner_validation
        assert not (inner_train | inner_validation) & set(test)  # the held-out subject is never looked at
        assert {subjects[i] for i in inner_validation}.isdisjoint(subjects[i] for i in inner_train)
        assert final[1] == set(train) and final[2] == set(test)
        assert fold["epochs"] == final[0] and 1 <= final[0] <= 4


PICKLE_THAT_RUNS_CODE = b"cos\nsystem\n(S'touch {marker}'\ntR."


def test_a_checkpoint_that_would_run_code_is_refused_not_run(tmp_path):
    from mer_core.training.checkpoint import CheckpointError, load_encoder, read_checkpoint

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(PICKLE_THAT_RUNS_CODE.replace(b"{marker}", str(marker).encode()))
    for load in (read_checkpoint, load_encoder, lambda path: load_checkpoint(path, "any")):
        try:
            load(evil)
        except CheckpointError as exc:
            assert str(evil) in str(exc) and "\n" not in str(exc)
    assert not marker.exists(), "unpickling ran a shell command"
    assert load_checkpoint(evil, "any") is None  # a resume point that is not ours: start over


def test_miacnet_with_a_multi_label_head_trains_on_action_units_under_loso():
    """The AU task's MIACNet row: a K-logit head, class-balanced BCE falling in every fold,
    sigmoid probabilities per AU, one prediction row per held-out clip and epoch."""
    from mer_core.data.training_sets import MicroClips
    from mer_core.training import finetune
    from mer_core.training.action_units import run_au_miacnet

    direction = [1, -1] * 3
    clips = MicroClips(clip_ids=[f"c{i}" for i in range(6)], datasets=["synth"] * 6,
                       subjects=[f"synth/s{k}" for k in range(3) for _ in range(2)],
                       labels=torch.full((6,), -1), classes=[], frames=moving_clips(6, direction=direction),
                       apex_index=torch.full((6,), 2), action_units=["R12" if d == 1 else "4+7" for d in direction])
    params = FinetuneParams(epochs=6, batch_size=8, lr=3e-3, dropout=0.0, flip=False, au_set="synthetic")
    setup = finetune.FoldSetup(inputs=finetune.ModelInputs("convnet_micro_64"), img_size=64, encoder_state=None,
                               protocol="e2e", params=params, device=torch.device("cpu"))
    rows, folds = run_au_miacnet(setup, clips, "synthetic", seed=0)
    assert len(folds) == 3 and all(f["train_loss"][-1] < 0.7 * f["train_loss"][0] for f in folds)
    assert sorted(r["clip_id"] for r in rows) == clips.clip_ids
    assert all(len(r["probabilities"]) == 13 and 0 <= min(r["probabilities"]) and max(r["probabilities"]) <= 1
               and len(r["predicted_per_epoch"]) == 6 for r in rows)
    assert {r["label"] for r in rows} == {"12", "4+7"}
