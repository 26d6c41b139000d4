"""The baselines on tiny data with a planted motion pattern each must separate, and LBP-TOP's
codes on patterns whose answer is known."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mer_core.models.classical import CLASSICAL_BASELINES, UNIFORM_BINS, AUReadout, lbp_codes, lbp_top_features
from mer_core.models.encoders import mirror_flow
from mer_core.models.flow_cnn import STSTNet


def _clip(direction: int, seed: int, frames: int = 4, size: int = 32) -> np.ndarray:
    """(T, H, W, 3) uint8: a textured face-sized square with a bright bar moving 1 px a frame up or down."""
    rng = np.random.default_rng(seed)
    base = (rng.integers(70, 110) + rng.normal(0, 6, (size, size))).clip(0, 255)
    clip = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        frame = base.copy()
        frame[12 + direction * t: 16 + direction * t, 8:24] = 200
        clip[t] = np.repeat(frame[..., None], 3, axis=2)
    return clip


def _motion(clip: np.ndarray) -> np.ndarray:
    from mer_core.data.motion import clip_motion

    return clip_motion(clip)


def test_uniform_lbp_codes_of_known_patterns():
    flat = np.full((1, 3, 3), 50, np.uint8)  # every neighbour ≥ the centre: code 255, the last uniform one
    peak = np.array([[[0, 0, 0], [0, 9, 0], [0, 0, 0]]], np.uint8)  # none: code 0, the first
    checker = np.array([[[9, 0, 9], [0, 5, 0], [9, 0, 9]]], np.uint8)  # 8 transitions: not uniform
    assert [int(lbp_codes(x)[0, 0, 0]) for x in (flat, peak, checker)] == [UNIFORM_BINS - 2, 0, UNIFORM_BINS - 1]


def test_lbp_top_histograms_per_plane_and_block():
    volume = np.random.default_rng(0).integers(0, 256, (6, 32, 32), dtype=np.uint8)
    features = lbp_top_features(volume, grid=4)
    assert features.shape == (3 * 16 * UNIFORM_BINS,)
    assert np.allclose(features.reshape(3 * 16, UNIFORM_BINS).sum(axis=1), 1.0)


@pytest.mark.parametrize("name", sorted(CLASSICAL_BASELINES))
def test_every_classical_baseline_separates_a_planted_motion(name):
    baseline = CLASSICAL_BASELINES[name]
    clips = [_clip(direction, seed) for seed in range(12) for direction in (1, -1)]
    labels = np.array(["up", "down"] * 12)
    apex = 2
    features = np.stack([baseline.features(c, _motion(c) if baseline.reads_motion else None, apex) for c in clips])
    train, test = np.arange(16), np.arange(16, 24)  # other seeds: other textures
    model = baseline.classifier(0).fit(features[train], labels[train])
    assert (model.predict(features[test]) == labels[test]).mean() >= 0.875, name


def test_the_flow_cnn_learns_a_planted_motion_and_its_mirror_keeps_the_class():
    torch.manual_seed(0)
    clips = [_clip(direction, seed) for seed in range(8) for direction in (1, -1)]
    motion = torch.from_numpy(np.stack([_motion(c)[1] for c in clips])).permute(0, 3, 1, 2)  # (N, 3, H, W)
    labels = torch.tensor([0, 1] * 8)
    model = STSTNet(2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss = F.cross_entropy(model(motion), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    assert (model(motion).argmax(1) == labels).all()
    # up and down survive a left-right mirror
    assert (model(mirror_flow(motion)).argmax(1) == labels).float().mean() >= 0.75


def test_a_baseline_under_lodo_trains_on_one_data_set_and_is_scored_on_the_other():
    from mer_core.data.training_sets import MicroClips
    from mer_core.evaluation.report import evaluation_reports
    from mer_core.training.finetune import run_classical_loso

    directions = [1, -1] * 12
    datasets = ["lab_a"] * 12 + ["lab_b"] * 12  # the same motion filmed in two labs
    clips = MicroClips(clip_ids=[f"c{i}" for i in range(24)], datasets=datasets,
                       subjects=[f"{d}/s{i % 3}" for i, d in enumerate(datasets)],
                       labels=torch.tensor([int(d == -1) for d in directions]), classes=["down", "up"],
                       frames=torch.from_numpy(np.stack([_clip(d, seed) for seed, d in enumerate(directions)])),
                       apex_index=torch.full((24,), 2), action_units=[""] * 24)
    rows, folds, _ = run_classical_loso("difference_lr", clips, seed=0, protocol="lodo")
    assert [(f["held_out"], f["clips"]) for f in folds] == [("lab_a", 12), ("lab_b", 12)]
    assert {r["fold"]: r["dataset"] for r in rows} == {0: "lab_a", 1: "lab_b"}
    metrics, ablation = evaluation_reports(rows, "difference_lr", [], {"lab_a": "videos", "lab_b": "videos"},
                                           protocol="lodo")
    assert metrics["protocol"].startswith("leave-one-data-set-out") and ablation["protocol"] == metrics["protocol"]
    assert set(metrics["per_dataset"]) == {"lab_a", "lab_b"} and metrics["clips"] == 24
    assert metrics["uf1"] >= 0.9 and all(d["uf1"] >= 0.9 for d in metrics["per_dataset"].values())


def test_a_label_budget_trains_every_fold_on_fewer_clips_and_scores_the_same_held_out_ones():
    from mer_core.data.training_sets import MicroClips
    from mer_core.evaluation.report import evaluation_reports
    from mer_core.training.finetune import run_classical_loso

    directions = [1, -1] * 12
    subjects = [f"s{i % 4}" for i in range(24)]
    clips = MicroClips(clip_ids=[f"c{i}" for i in range(24)], datasets=["lab"] * 24, subjects=subjects,
                       labels=torch.tensor([int(d == -1) for d in directions]), classes=["down", "up"],
                       frames=torch.from_numpy(np.stack([_clip(d, seed) for seed, d in enumerate(directions)])),
                       apex_index=torch.full((24,), 2), action_units=[""] * 24)
    full_rows, full, _ = run_classical_loso("difference_lr", clips, seed=0)
    rows, scarce, _ = run_classical_loso("difference_lr", clips, seed=0, train_fraction=1 / 3)
    assert [f["train_clips"] for f in full] == [18] * 4 and [f["train_clips"] for f in scarce] == [6] * 4
    assert [r["clip_id"] for r in rows] == [r["clip_id"] for r in full_rows]
    # A few labelled clips of each direction still separate a planted motion.
    assert sum(r["label"] == r["predicted"] for r in rows) >= 22
    metrics, _ = evaluation_reports(rows, "difference_lr", [], {"lab": "videos"}, train_fraction=1 / 3)
    assert "33% of each fold's training clips" in metrics["protocol"]


def _planted_clips(directions: list[int], subjects: list[str], codes: list[str], with_motion: bool = True):
    from mer_core.data.training_sets import MicroClips

    frames = np.stack([_clip(d, seed) for seed, d in enumerate(directions)])
    motion = np.stack([_motion(c) for c in frames]).astype(np.float16) if with_motion else None
    return MicroClips(clip_ids=[f"c{i}" for i in range(len(directions))], datasets=["lab"] * len(directions),
                      subjects=subjects, labels=torch.full((len(directions),), -1), classes=[],
                      frames=torch.from_numpy(frames), apex_index=torch.full((len(directions),), 2),
                      action_units=codes, motion=None if motion is None else torch.from_numpy(motion))


def test_the_au_baseline_finds_planted_action_units_and_evaluate_reports_them_beside_the_ceiling():
    from mer_core.config import FinetuneParams
    from mer_core.evaluation.report import action_unit_report
    from mer_core.training.action_units import run_action_units

    directions = [1, -1] * 12
    codes = ["AU1+R2" if d == 1 else "4+9?" for d in directions]  # bars moving down: brows up; up: AU4 (9 unsure)
    clips = _planted_clips(directions, [f"lab/s{i % 4}" for i in range(24)], codes)
    rows, folds, _ = run_action_units("au_flow_lr", FinetuneParams(au_set="synthetic"), clips, None, seed=0)
    assert len(folds) == 4 and len(rows) == 24 and all(len(r["probabilities"]) == 13 for r in rows)
    assert {r["label"] for r in rows} == {"1+2", "4"}
    report = action_unit_report(rows, ["au_flow_lr"], "synthetic")
    entry = report["variants"]["au_flow_lr"]
    assert entry["mean_f1"] >= 0.9 and entry["per_au_f1"]["AU1"] >= 0.9 and entry["per_au_f1"]["AU9"] == 0.0
    assert report["ceiling"]["mean_f1"] == 1.0 and report["always_on"]["mean_f1"] == pytest.approx(2 / 3, abs=1e-4)
    assert entry["per_dataset"] == {"lab": entry["mean_f1"]}


def test_the_au_readout_is_the_fitted_pipelines_and_survives_a_safe_load(tmp_path):
    """The readout the final model carries: the same probabilities as the scaled logistic
    regressions it folds, a constant unit predicted constant, and plain tensors on disk."""
    rng = np.random.default_rng(0)
    features = rng.normal(3.0, [0.5, 2.0, 8.0, 1.0], (60, 4))
    targets = np.stack([features[:, 0] + rng.normal(0, 0.3, 60) > 3, np.zeros(60), np.ones(60)], 1).astype(float)
    readout = AUReadout.fit(features, targets, (1, 2, 4), seed=0)
    pipeline = CLASSICAL_BASELINES["flow_strain_lr"].classifier(0).fit(features, targets[:, 0])
    probabilities = readout.probabilities(features)
    np.testing.assert_allclose(probabilities[:, 0], pipeline.predict_proba(features)[:, 1], rtol=1e-6, atol=1e-9)
    assert (probabilities[:, 1] < 1e-8).all() and (probabilities[:, 2] > 1 - 1e-8).all()
    torch.save(readout.to_state(), tmp_path / "au.pt")
    loaded = AUReadout.from_state(torch.load(tmp_path / "au.pt", weights_only=True))
    assert loaded.units == (1, 2, 4)
    np.testing.assert_array_equal(loaded.probabilities(features), probabilities)


def test_a_block_the_mask_leaves_all_but_empty_gives_finite_features_and_a_fit():
    """Flow of one subnormal float32 in a masked block (seen on real tuning data): its
    variance over clips is ~1e-91, which a float32 division by the scale made 0 / 0."""
    rng = np.random.default_rng(0)
    fields = rng.normal(size=(20, 16, 16, 3)).astype(np.float32)
    fields[:, :1, :1] = 0.0
    fields[0, :1, :1] = np.float32(1e-45)  # the smallest subnormal
    baseline = CLASSICAL_BASELINES["flow_strain_lr"]
    features = np.stack([baseline.features(None, field[None], 1) for field in fields])
    labels = np.array(["a", "b"] * 10)
    model = baseline.classifier(0).fit(features, labels)
    assert np.isfinite(model[0].transform(features)).all() and set(model.predict(features)) <= {"a", "b"}
