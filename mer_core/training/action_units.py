"""The action-unit task: which AUs of a protocol's set (`finetune.au_set`) a micro clip shows,
multi-label, under the same held-out folds as the emotion rows (`finetune.protocol`).

Rows (`finetune.au_variants`):
- `au_flow_lr`: the onset→apex flow and strain features of `flow_strain_lr`, one
  class-balanced logistic regression per AU (an AU no training clip shows, or every one
  does, is predicted constant): the cheap baseline the default run reports. Fitted on
  every clip, it is also the AU readout the final model file carries for `mer predict`.
- `au_miacnet`: MIACNet from random weights, end to end, its head a K-logit multi-label
  layer trained with binary cross-entropy, each AU's positives weighted by its negatives /
  positives in the fold's training clips (capped at `MAX_POS_WEIGHT`): per-AU class balance.

Every clip with a readable code takes part, labelled or not (CAS(ME)^3 part C codes AUs
only). Each held-out clip gives one prediction row: `label` its true AUs as a code (`1+2`),
`predicted` the AUs at probability ≥ 0.5, `probabilities` one per AU of the set.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mer_core.config import FinetuneParams
from mer_core.data.action_units import AU_SETS, au_code, au_targets
from mer_core.data.training_sets import MicroClips, load_micro_clips
from mer_core.models.classical import AUReadout, CLASSICAL_BASELINES
from mer_core.training import engine
from mer_core.training.finetune import FoldSetup, Objective, folds_of, train_miacnet

AU_VARIANTS = ("au_flow_lr", "au_miacnet")
MAX_POS_WEIGHT = 20.0


def balanced_bce(targets: torch.Tensor, train: list[int], device: torch.device) -> Objective:
    """The multi-label objective of one fold: BCE with each AU's positives weighted by its
    negatives / positives among the `train` clips. `targets`: (N, K) float."""
    positives = targets[train].sum(0)
    pos_weight = ((len(train) - positives) / positives.clamp_min(1)).clamp(max=MAX_POS_WEIGHT).to(device)

    def loss(logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, targets[rows].to(device), pos_weight=pos_weight)

    return Objective(targets.shape[1], loss, torch.sigmoid)


def au_rows(clips: MicroClips, targets: np.ndarray, fold: int, test: list[int], per_epoch: list[np.ndarray],
            variant: str, seed: int, au_set: str) -> list[dict]:
    """The prediction rows of one fold's held-out clips; `per_epoch` holds (len(test), K)
    probabilities after every epoch (one entry for a model without epochs)."""
    return [{"variant": variant, "seed": seed, "fold": fold, "clip_id": clips.clip_ids[i],
             "dataset": clips.datasets[i], "subject": clips.subjects[i], "label": au_code(targets[i], au_set),
             "predicted": au_code(per_epoch[-1][j], au_set),
             "probabilities": [float(v) for v in per_epoch[-1][j]],
             "predicted_per_epoch": [au_code(p[j], au_set) for p in per_epoch]}
            for j, i in enumerate(test)]


def flow_strain_features(clips: MicroClips) -> np.ndarray:
    """(N, D) `flow_strain_lr` features of every clip, from its onset→apex motion."""
    baseline, motion = CLASSICAL_BASELINES["flow_strain_lr"], clips.motion.float().numpy()
    return np.stack([baseline.features(None, motion[i], int(clips.apex_index[i])) for i in range(len(clips))])


def run_au_flow_lr(clips: MicroClips, protocol: str, au_set: str, seed: int) -> tuple[list[dict], list[dict]]:
    """`au_flow_lr` under the folds of `protocol`: prediction rows and a summary per fold."""
    targets = au_targets(clips.action_units, au_set)
    features = flow_strain_features(clips)
    rows, folds = [], []
    for fold, (held_out, train, test) in enumerate(folds_of(clips, protocol)):
        readout = AUReadout.fit(features[train], targets[train], AU_SETS[au_set], seed)
        probabilities = readout.probabilities(features[test])
        folds.append({"fold": fold, "held_out": held_out, "clips": len(test), "train_loss": []})
        rows += au_rows(clips, targets, fold, test, [probabilities], "au_flow_lr", seed, au_set)
    return rows, folds


def run_au_miacnet(setup: FoldSetup, clips: MicroClips, au_set: str, seed: int) -> tuple[list[dict], list[dict]]:
    """`au_miacnet` (MIACNet from scratch, multi-label head) under the folds of `setup.params.protocol`."""
    generator = engine.seed_everything(seed)
    targets = au_targets(clips.action_units, au_set)
    setup = setup.with_fixed_encoders(targets.shape[1])
    rows, folds = [], []
    for fold, (held_out, train, test) in enumerate(folds_of(clips, setup.params.protocol)):
        objective = balanced_bce(torch.from_numpy(targets), train, setup.device)
        _, per_epoch, losses = train_miacnet(setup, clips, train, generator, evaluate_on=test, objective=objective)
        folds.append({"fold": fold, "held_out": held_out, "clips": len(test),
                      "train_loss": [round(v, 5) for v in losses]})
        rows += au_rows(clips, targets, fold, test, [p.numpy() for p in per_epoch], "au_miacnet", seed, au_set)
    return rows, folds


def run_action_units(variant: str, params: FinetuneParams, clips: MicroClips, setup: FoldSetup | None, seed: int
                     ) -> tuple[list[dict], list[dict], float]:
    """One AU row of `finetune.au_variants` for one seed: (prediction rows, folds, seconds).

    Raises:
        ValueError: no clip carries an AU of the set.
    """
    if not au_targets(clips.action_units, params.au_set).any():
        raise ValueError(f"no micro clip carries an AU of the set {params.au_set!r} {AU_SETS[params.au_set]}")
    started = time.perf_counter()
    if variant == "au_flow_lr":
        rows, folds = run_au_flow_lr(clips, params.protocol, params.au_set, seed)
    else:
        rows, folds = run_au_miacnet(setup, clips, params.au_set, seed)
    return rows, folds, time.perf_counter() - started


def final_au_readout(params: FinetuneParams, clips_dir: Path, features_dir: Path, datasets: list[str]
                     ) -> AUReadout | None:
    """`au_flow_lr` on every AU-coded micro clip, for the final model file (so `mer predict`
    gives AU probabilities); None when no clip carries an AU of `params.au_set`."""
    clips = load_micro_clips(clips_dir, datasets, None, features_dir)
    targets = au_targets(clips.action_units, params.au_set)
    if not targets.any():
        return None
    return AUReadout.fit(flow_strain_features(clips), targets, AU_SETS[params.au_set], params.seeds[0])
