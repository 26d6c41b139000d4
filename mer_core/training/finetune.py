"""Fine-tuning under leave-one-subject-out: MIACNet from each pre-training, end to end or as
a frozen-encoder probe, the baselines beside it, and the final model on all subjects.
`finetune.protocol: lodo` leaves one data set out instead (same code, other folds).

The protocol never looks at the held-out subject: every fold trains for the configured
number of epochs and predicts once with its last weights. The held-out predictions of
every epoch are kept only to report the 'oracle best epoch' figure that much published
MER code uses (Varanka et al., arXiv:2211.11425) — labelled as such, never as the result.

Variants (`finetune.ablation`, one row each of the ablation table):
- `<pre-training>_e2e`: MIACNet fine-tuned end to end from `scratch` (random weights: what
  papers mean by "from scratch") or from the encoders of `ma2mi`, `contrastive`, `both`;
  the encoders learn at `encoder_lr_scale` of the head's rate; onset and apex are mirrored
  together at random, and the apex may be picked a sampled frame early or late.
- `<pre-training>_probe`: only MIACNet's head trains, over frozen encoders (tokens cached):
  the cleanest measure of what pre-training put into them (`scratch_probe`: random features).
- baselines: `lbp_top_svm`, `flow_strain_lr`, `difference_lr` (mer_core/models/classical.py),
  `flow_cnn` (STSTNet on the onset→apex flow, mer_core/models/flow_cnn.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import get_args

import numpy as np
import torch
import torch.nn.functional as F

from mer_core.config import AUVariant, ExecutorParams, FinetuneParams, Params, PathsParams, learned_variant
from mer_core.data.store import CLIPS_DIR, data_version
from mer_core.data.training_sets import MicroClips, load_micro_clips
from mer_core.evaluation.ceiling import au_oracle_predictions
from mer_core.evaluation.metrics import unweighted_f1
from mer_core.evaluation.predictions import prediction_row
from mer_core.evaluation.protocols import held_out_folds, inner_subject_split, labelled_subsample
from mer_core.models.classical import AUReadout, CLASSICAL_BASELINES
from mer_core.models.encoders import mirror_flow, reads_motion
from mer_core.models.flow_cnn import STSTNet
from mer_core.models.miacnet import BranchTokens, MIACNet, build_miacnet
from mer_core.parallel import open_job_pool
from mer_core.training import engine
from mer_core.training.checkpoint import code_version, load_checkpoint, load_encoder, save_checkpoint

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- MIACNet
@dataclass(frozen=True)
class ModelInputs:
    """What MIACNet is built from and reads, as the final model records it for inference:
    the encoder family (`pretrain.encoder`), the action input (`pretrain.action_input`),
    and how its motion was made (`features`)."""

    encoder: str
    action_input: str = "difference"
    flow: str = "farneback"
    magnification: float = 0.0

    @property
    def reads_motion(self) -> bool:
        return reads_motion(self.action_input)


def model_inputs(params: Params) -> ModelInputs:
    """The `ModelInputs` a params file gives."""
    return ModelInputs(params.pretrain.encoder, params.pretrain.action_input, params.features.flow,
                       params.features.magnification)


@dataclass(frozen=True)
class FoldSetup:
    """Everything a fold's training needs besides the data: fixed per (variant, seed)."""

    inputs: ModelInputs  # encoder family and action input; the motion settings are the features stage's
    img_size: int
    encoder_state: dict | None  # None: from scratch
    protocol: str  # "e2e" | "probe"
    params: FinetuneParams  # epochs, learning rates, augmentation, ...
    device: torch.device

    def build(self, num_classes: int) -> MIACNet:
        return build_miacnet(self.inputs.encoder, num_classes, self.encoder_state, self.params.dropout,
                             img_size=self.img_size, position_branch=self.params.position_branch,
                             action_input=self.inputs.action_input).to(self.device)

    def with_epochs(self, epochs: int) -> FoldSetup:
        return replace(self, params=self.params.model_copy(update={"epochs": epochs}))

    def with_fixed_encoders(self, num_classes: int) -> FoldSetup:
        """Scratch draws its random encoders once (from the current seed), so every fold
        and the cached tokens see the same ones; pre-trained setups are fixed already."""
        if self.encoder_state is not None:
            return self
        model = self.build(num_classes)
        state = {"position": model.position_encoder.state_dict(), "action": model.action_encoder.state_dict()}
        return replace(self, encoder_state={k: {n: t.cpu() for n, t in v.items()} for k, v in state.items()})


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights (mean 1 over present classes) for a class-balanced loss."""
    counts = torch.bincount(labels, minlength=num_classes).float()
    weights = torch.where(counts > 0, counts.sum() / (counts.clamp_min(1) * (counts > 0).sum()), 0.0)
    return weights


@torch.no_grad()
def encode_clips(model: MIACNet, clips: MicroClips, batch_size: int = 64) -> BranchTokens:
    """The branch tokens of every clip, for training the head over frozen encoders."""
    model.eval()
    device = next(model.parameters()).device
    parts = []
    for i in range(0, len(clips), batch_size):
        rows = torch.arange(i, min(i + batch_size, len(clips)))
        onset, apex, motion = clip_pairs(clips, rows, model.reads_motion)
        parts.append(model.forward_branches(onset.to(device), apex.to(device), _to(motion, device)))
    return BranchTokens(*(torch.cat([getattr(p, f) for p in parts]) for f in ("position", "action", "feature_change")))


def random_halves(count: int, generator: torch.Generator) -> torch.Tensor:
    """(count, 1, 1, 1) bool: which samples of a batch to mirror, each with probability ½."""
    return (torch.rand(count, generator=generator) < 0.5).view(-1, 1, 1, 1)


Pair = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


def _to(motion: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if motion is None else motion.to(device)


def clip_pairs(clips: MicroClips, rows: torch.Tensor, with_motion: bool, apex: torch.Tensor | None = None) -> Pair:
    """(onset, apex) uint8 (B, H, W, C) of `rows` and, `with_motion`, their motion
    (B, 3, H, W); `apex` picks other frames than the clips' apexes."""
    apex = clips.apex_index[rows] if apex is None else apex
    motion = clips.motion_at(rows, apex) if with_motion else None
    return clips.frames[rows, 0], clips.frames[rows, apex], motion


def augmented_pairs(clips: MicroClips, rows: torch.Tensor, generator: torch.Generator, flip: bool,
                    apex_jitter: int, with_motion: bool = False) -> Pair:
    """`clip_pairs` with the apex moved up to `apex_jitter` sampled frames early or late and
    the pair (and its motion) mirrored left-right at random: label-safe, since a
    micro-expression's class has no side and no exact frame."""
    apex = clips.apex_index[rows]
    if apex_jitter:
        shift = torch.randint(-apex_jitter, apex_jitter + 1, (len(rows),), generator=generator)
        apex = (apex + shift).clamp(1, clips.frames.shape[1] - 1)
    onset, peak, motion = clip_pairs(clips, rows, with_motion, apex)
    if flip:
        mirrored = random_halves(len(rows), generator)
        onset, peak = torch.where(mirrored, onset.flip(-2), onset), torch.where(mirrored, peak.flip(-2), peak)
        motion = None if motion is None else torch.where(mirrored, mirror_flow(motion), motion)
    return onset, peak, motion


@dataclass(frozen=True)
class Objective:
    """What a head learns when it is not the class-balanced emotion classifier (the action-unit
    task): its outputs, the loss of a batch's logits, `loss(logits, rows)`, and the
    probabilities of logits."""

    outputs: int
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    probabilities: Callable[[torch.Tensor], torch.Tensor]


def fit_and_predict(logits_of: Callable[[torch.Tensor, bool], torch.Tensor], optimizer: torch.optim.Optimizer,
                    epochs: int, batch_size: int, labels: torch.Tensor, num_classes: int, train: list[int],
                    generator: torch.Generator, device: torch.device, evaluate_on: list[int] | None = None,
                    before_epoch: Callable[[int], None] = lambda epoch: None, objective: Objective | None = None
                    ) -> tuple[list[torch.Tensor], list[float]]:
    """Train a classifier with a class-balanced loss (or `objective`'s) for `epochs` (cosine
    schedule), then return, per epoch, the probabilities on `evaluate_on` and the mean
    training loss.

    `logits_of(rows, training)` gives the logits of clips `rows`, augmented when `training`;
    `before_epoch(epoch)` sets modes and freezes (it runs before each epoch's `train()`).
    """
    train_idx = torch.tensor(train)
    if objective is None:
        weights = class_weights(labels[train_idx], num_classes).to(device)
        objective = Objective(num_classes, lambda logits, rows: F.cross_entropy(logits, labels[rows].to(device),
                                                                                weight=weights), engine.softmax)
    per_epoch, losses = [], []

    def loss_of_batch(rows: torch.Tensor) -> torch.Tensor:
        return objective.loss(logits_of(rows, True), rows)

    for epoch in range(epochs):
        engine.set_lr(optimizer, engine.cosine_lr(1.0, epoch, epochs, warmup=min(3, epochs // 5)))
        order = train_idx[torch.randperm(len(train_idx), generator=generator)]
        before_epoch(epoch)
        losses.append(engine.train_one_epoch(loss_of_batch, [order[i:i + batch_size]
                                                             for i in range(0, len(order), batch_size)],
                                             optimizer, device)["loss"])
        if evaluate_on:
            per_epoch.append(engine.evaluate(lambda rows: logits_of(rows, False), [torch.tensor(evaluate_on)], device,
                                             objective.probabilities))
    return per_epoch, losses


def train_miacnet(setup: FoldSetup, clips: MicroClips, train: list[int], generator: torch.Generator,
                  tokens: BranchTokens | None = None, evaluate_on: list[int] | None = None,
                  objective: Objective | None = None) -> tuple[MIACNet, list[torch.Tensor], list[float]]:
    """Train MIACNet on the `train` clips: over cached `tokens` (the probe protocol) or end to
    end, for the clips' classes or for `objective` (its head then has `objective.outputs`).

    Returns:
        The model; per epoch, the probabilities (len(evaluate_on), K) on `evaluate_on`;
        the mean training loss of every epoch.
    """
    model, p = setup.build(objective.outputs if objective else len(clips.classes)), setup.params
    probe = tokens is not None
    encoders = ("position_encoder.", "action_encoder.")
    named = model.named_head_parameters() if probe else model.named_parameters()
    optimizer = engine.configure_optimizers(
        named, p.lr, p.weight_decay, lr_scale=lambda name: p.encoder_lr_scale if name.startswith(encoders) else 1.0)

    def logits_of(rows: torch.Tensor, training: bool) -> torch.Tensor:
        if probe:
            return model.forward_head(tokens.index(rows).to(setup.device))
        if training:
            onset, apex, motion = augmented_pairs(clips, rows, generator, p.flip, p.apex_jitter, model.reads_motion)
        else:
            onset, apex, motion = clip_pairs(clips, rows, model.reads_motion)
        return model(onset.to(setup.device), apex.to(setup.device), _to(motion, setup.device))

    def before_epoch(epoch: int) -> None:
        model.train()
        frozen = probe or epoch < p.frozen_warmup_epochs
        for encoder in (model.position_encoder, model.action_encoder):
            encoder.train(not frozen)
            encoder.requires_grad_(not frozen)

    per_epoch, losses = fit_and_predict(logits_of, optimizer, p.epochs, p.batch_size, clips.labels,
                                        len(clips.classes), train, generator, setup.device, evaluate_on,
                                        before_epoch, objective)
    model.eval()
    return model, per_epoch, losses


def inner_selected_epochs(setup: FoldSetup, clips: MicroClips, train: list[int], seed: int,
                          generator: torch.Generator, tokens: BranchTokens | None) -> int:
    """The epoch count with the best UF1 on inner validation subjects drawn from this
    fold's training subjects (the held-out subject is not among them)."""
    inner_train, inner_validation = inner_subject_split(clips.subjects, train, setup.params.inner_fraction, seed)
    _, per_epoch, _ = train_miacnet(setup, clips, inner_train, generator, tokens, evaluate_on=inner_validation)
    actual = [clips.classes[int(clips.labels[i])] for i in inner_validation]
    scores = [unweighted_f1(actual, [clips.classes[int(k)] for k in p.argmax(1)]) for p in per_epoch]
    return 1 + int(np.argmax(scores))


def folds_of(clips: MicroClips, protocol: str, train_fraction: float = 1.0, seed: int = 0
             ) -> list[tuple[str, list[int], list[int]]]:
    """The held-out folds of `protocol` (`finetune.protocol`: loso or lodo) over these clips,
    each fold training on a class-stratified `train_fraction` of its training clips. The
    subsample depends on (seed, fold) only, so every row of one seed sees the same labels."""
    folds = held_out_folds(protocol, clips.subjects, clips.datasets)
    if train_fraction >= 1:
        return folds
    labels = clips.labels.tolist()
    return [(held_out, labelled_subsample(labels, train, train_fraction, seed * 1000 + fold), test)
            for fold, (held_out, train, test) in enumerate(folds)]


def fold_rows(clips: MicroClips, fold: int, test: list[int], per_epoch: list[torch.Tensor], variant: str,
              seed: int) -> list[dict]:
    """The prediction rows of one fold's held-out clips."""
    return [prediction_row(clips, i, fold, per_epoch[-1][j].tolist(),
                           [clips.classes[int(p[j].argmax())] for p in per_epoch], variant, seed)
            for j, i in enumerate(test)]


def run_loso(setup: FoldSetup, clips: MicroClips, variant: str, seed: int) -> tuple[list[dict], list[dict], float]:
    """Every LOSO fold of one MIACNet (variant, seed): a row per held-out clip, a summary per
    fold (held-out subject, clip count, training loss per epoch), and the seconds taken."""
    generator = engine.seed_everything(seed)
    setup = setup.with_fixed_encoders(len(clips.classes))
    started = time.perf_counter()
    tokens = encode_clips(setup.build(len(clips.classes)), clips) if setup.protocol == "probe" else None
    rows, folds = [], []
    splits = folds_of(clips, setup.params.protocol, setup.params.train_fraction, seed)
    for fold, (held_out, train, test) in enumerate(splits):
        trained = setup
        if setup.params.epoch_selection == "inner_subjects":
            trained = setup.with_epochs(inner_selected_epochs(setup, clips, train, seed * 1000 + fold, generator,
                                                              tokens))
        _, per_epoch, losses = train_miacnet(trained, clips, train, generator, tokens, evaluate_on=test)
        folds.append({"fold": fold, "held_out": held_out, "clips": len(test), "train_clips": len(train),
                      "epochs": trained.params.epochs, "train_loss": [round(v, 5) for v in losses]})
        rows += fold_rows(clips, fold, test, per_epoch, variant, seed)
    return rows, folds, time.perf_counter() - started


# --------------------------------------------------------------------------- baselines
def run_classical_loso(name: str, clips: MicroClips, seed: int, protocol: str = "loso",
                       train_fraction: float = 1.0) -> tuple[list[dict], list[dict], float]:
    """A classical baseline under the same folds: features once per clip, a classifier per fold."""
    baseline = CLASSICAL_BASELINES[name]
    started = time.perf_counter()
    motion = clips.motion.float().numpy() if clips.motion is not None else [None] * len(clips)
    features = np.stack([baseline.features(clips.frames[i].numpy(), motion[i], int(clips.apex_index[i]))
                         for i in range(len(clips))])
    labels = np.array([clips.classes[int(k)] for k in clips.labels])
    rows, folds = [], []
    for fold, (held_out, train, test) in enumerate(folds_of(clips, protocol, train_fraction, seed)):
        model = baseline.classifier(seed).fit(features[train], labels[train])
        predicted = model.predict(features[test])
        probabilities = torch.tensor([[float(c == p) for c in clips.classes] for p in predicted])
        folds.append({"fold": fold, "held_out": held_out, "clips": len(test), "train_clips": len(train),
                      "train_loss": []})
        rows += fold_rows(clips, fold, test, [probabilities], name, seed)
    return rows, folds, time.perf_counter() - started


def run_flow_cnn_loso(params: FinetuneParams, clips: MicroClips, seed: int, device: torch.device
                      ) -> tuple[list[dict], list[dict], float]:
    """STSTNet on the onset→apex flow and strain, from scratch, under the same folds."""
    generator = engine.seed_everything(seed)
    started = time.perf_counter()
    motion = clips.motion_at(torch.arange(len(clips)), clips.apex_index)  # (N, 3, H, W)
    rows, folds = [], []
    for fold, (held_out, train, test) in enumerate(folds_of(clips, params.protocol, params.train_fraction, seed)):
        model = STSTNet(len(clips.classes), dropout=params.dropout).to(device)
        optimizer = engine.configure_optimizers(model.named_parameters(), params.lr, params.weight_decay)

        def logits_of(rows: torch.Tensor, training: bool) -> torch.Tensor:
            x = motion[rows]
            if training and params.flip:
                x = torch.where(random_halves(len(rows), generator), mirror_flow(x), x)
            return model(x.to(device))

        def before_epoch(epoch: int) -> None:
            model.train()

        per_epoch, losses = fit_and_predict(logits_of, optimizer, params.epochs, params.batch_size, clips.labels,
                                            len(clips.classes), train, generator, device, test, before_epoch)
        model.eval()
        folds.append({"fold": fold, "held_out": held_out, "clips": len(test), "train_clips": len(train),
                      "train_loss": [round(v, 5) for v in losses]})
        rows += fold_rows(clips, fold, test, per_epoch, "flow_cnn", seed)
    return rows, folds, time.perf_counter() - started


# --------------------------------------------------------------------------- the stage
@dataclass(frozen=True)
class FinetuneFiles:
    """Where fine-tuning reads and writes (from `paths` in params)."""

    clips: Path  # the processed clip table: clips/<dataset>/
    features: Path  # the features stage's motion: <dataset>/
    encoders: Path  # pre-trained <variant>.pt
    checkpoints: Path  # one finished LOSO run per (variant, seed)
    final_model: Path

    @classmethod
    def from_paths(cls, paths: PathsParams) -> FinetuneFiles:
        return cls(paths.processed / CLIPS_DIR, paths.features, paths.encoders, paths.checkpoints / "finetune",
                   paths.final_model)


def fold_setup(params: FinetuneParams, variant: str, inputs: ModelInputs, img_size: int, encoders: Path,
               device: torch.device) -> FoldSetup:
    """The fold settings of one learned variant; scratch gets the pre-trained variants' architecture."""
    pretraining, protocol = learned_variant(variant)
    state = None if pretraining == "scratch" else load_encoder(Path(encoders) / f"{pretraining}.pt")
    for key, wanted in (("encoder", inputs.encoder), ("action_input", inputs.action_input)):
        if state is not None and state[key] != wanted:
            raise ValueError(f"encoder file {pretraining}.pt has {key} {state[key]!r}, params ask for "
                             f"{wanted!r} (pretrain.{key}); re-run pretrain")
    return FoldSetup(inputs=inputs, img_size=img_size, encoder_state=state, protocol=protocol, params=params,
                     device=device)


@dataclass(frozen=True)
class LosoJob:
    params: FinetuneParams
    files: FinetuneFiles
    variant: str
    seed: int
    inputs: ModelInputs
    datasets: tuple[str, ...]
    threads: int


# Settings that never change what a LOSO run computes: which variants and seeds the
# stage runs (each job is one of them), and how it is parallelised. The AU set changes
# only the AU rows, whose fingerprint adds it.
FINGERPRINT_EXCLUDES = frozenset({"variant", "ablation", "seeds", "device", "workers", "au_variants", "au_set"})


def _job_fingerprint(job: LosoJob, data: str) -> str:
    """What a finished run's checkpoint must match to be reused: every finetune setting
    except `FINGERPRINT_EXCLUDES` (so a new setting invalidates it by default), the job,
    the encoder file, the data (clips and their motion) and the library's code."""
    keys = job.params.model_dump(mode="json", exclude=set(FINGERPRINT_EXCLUDES))
    learned = learned_variant(job.variant)
    encoder = job.files.encoders / f"{learned[0]}.pt" if learned and learned[0] != "scratch" else None
    encoder_version = hashlib.sha256(encoder.read_bytes()).hexdigest()[:16] if encoder else ""
    if job.variant in get_args(AUVariant):
        keys["au_set"] = job.params.au_set
    payload = {**keys, "variant": job.variant, "seed": job.seed, "encoder": job.inputs.encoder,
               "action_input": job.inputs.action_input,
               "encoder_version": encoder_version, "data": data, "datasets": job.datasets, "code": code_version()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _needs_motion(variant: str, inputs: ModelInputs) -> bool:
    if learned_variant(variant) is not None or variant == "au_miacnet":
        return inputs.reads_motion
    return variant in ("flow_cnn", "au_flow_lr") or CLASSICAL_BASELINES[variant].reads_motion


def run_loso_job(job: LosoJob) -> dict:
    """One (variant, seed) LOSO run, in a pool process or on a Dask worker; its rows are
    checkpointed, so a restarted stage skips every run that already finished."""
    torch.set_num_threads(job.threads)
    p, files = job.params, job.files
    features = files.features if _needs_motion(job.variant, job.inputs) else None
    au_task = job.variant in get_args(AUVariant)  # every AU-coded clip, labelled or not
    clips = load_micro_clips(files.clips, list(job.datasets), None if au_task else p.label_column, features)
    # One file per label share too: the runs of a learning curve keep, not overwrite, each other.
    share = f"-labels{p.train_fraction:g}" if p.train_fraction < 1 else ""
    checkpoint = files.checkpoints / f"{job.variant}-seed{job.seed}{share}.pt"
    data = [files.clips / d for d in job.datasets] + ([features / d for d in job.datasets] if features else [])
    print_ = _job_fingerprint(job, data_version(data))
    if (done := load_checkpoint(checkpoint, print_)) is not None:
        log.info("%s seed %d: already done, reusing %s", job.variant, job.seed, checkpoint)
        return done["result"]
    device = engine.select_device(p.device)
    if au_task:
        from mer_core.training.action_units import run_action_units  # the AU task builds on this module

        setup = fold_setup(p, "scratch_e2e", job.inputs, clips.img_size, files.encoders, device)
        rows, folds, seconds = run_action_units(job.variant, p, clips, setup, job.seed)
    elif learned_variant(job.variant) is not None:
        setup = fold_setup(p, job.variant, job.inputs, clips.img_size, files.encoders, device)
        rows, folds, seconds = run_loso(setup, clips, job.variant, job.seed)
    elif job.variant == "flow_cnn":
        rows, folds, seconds = run_flow_cnn_loso(p, clips, job.seed, device)
    else:
        rows, folds, seconds = run_classical_loso(job.variant, clips, job.seed, p.protocol, p.train_fraction)
    result = {"rows": rows, "folds": folds, "seconds": round(seconds, 1), "classes": clips.classes}
    save_checkpoint(checkpoint, {"fingerprint": print_, "result": result})
    log.info("%s seed %d: %d folds in %.0f s", job.variant, job.seed, len(folds), seconds)
    return result


def _quiet_worker() -> None:
    """Worker processes log warnings only; the parent reports progress."""
    logging.basicConfig(level=logging.WARNING)


def run_finetuning(params: FinetuneParams, files: FinetuneFiles, datasets: list[str], inputs: ModelInputs,
                   executor: ExecutorParams = ExecutorParams()) -> tuple[list[dict], dict]:
    """LOSO for every (variant, seed) of the ablation plus the AU-oracle ceiling, then the
    final model on all subjects. Returns the prediction rows and the report.

    The (variant, seed) runs are independent: `params.workers` processes run them side by
    side on CPU (one on CUDA), or the workers of a Dask cluster (`executor`).
    """
    variants = list(dict.fromkeys([params.variant, *params.ablation]))
    device = engine.select_device(params.device)
    workers = 1 if device.type == "cuda" else params.workers
    with open_job_pool(executor, workers, _quiet_worker) as pool:
        # The longest runs first, so that two workers finish together.
        jobs = sorted((LosoJob(params, files, v, seed, inputs, tuple(datasets), pool.threads_per_job)
                       for v in [*variants, *params.au_variants] for seed in params.seeds),
                      key=lambda j: learned_variant(j.variant) is None and j.variant != "au_miacnet")
        results = []
        for done, (job, result) in enumerate(zip(jobs, pool.map(run_loso_job, jobs)), start=1):
            log.info("LOSO runs done: %d/%d (%s seed %d)", done, len(jobs), job.variant, job.seed)
            results.append(result)
    rows = [row for result in results for row in result["rows"]]
    clips = load_micro_clips(files.clips, datasets, params.label_column, files.features if inputs.reads_motion else None)
    rows += au_oracle_predictions(clips, params.protocol)
    report = {"device": str(device), "variants": variants, "train_fraction": params.train_fraction,
              "au_variants": params.au_variants,
              "au_set": params.au_set, "seeds": params.seeds, "classes": clips.classes,
              "clips": len(clips), "subjects": len(set(clips.subjects)),
              "seconds": {f"{j.variant}/seed{j.seed}": r["seconds"] for j, r in zip(jobs, results)},
              "folds": {f"{j.variant}/seed{j.seed}": r.get("folds", []) for j, r in zip(jobs, results)}}
    readout = None
    if params.au_variants:
        from mer_core.training.action_units import final_au_readout  # the AU task builds on this module

        readout = final_au_readout(params, files.clips, files.features, datasets)
    report["final_model"] = train_final_model(params, clips, inputs, files, device, readout)
    return rows, report


def train_final_model(params: FinetuneParams, clips: MicroClips, inputs: ModelInputs, files: FinetuneFiles,
                      device: torch.device, au_readout: AUReadout | None = None) -> dict:
    """MIACNet of `params.variant` on every subject, saved with what inference needs, and
    with `au_readout` (the AU task's `au_flow_lr` on every clip) when there is one."""
    generator = engine.seed_everything(params.seeds[0])
    setup = fold_setup(params, params.variant, inputs, clips.img_size, files.encoders, device)
    setup = setup.with_fixed_encoders(len(clips.classes))
    tokens = encode_clips(setup.build(len(clips.classes)), clips) if setup.protocol == "probe" else None
    started = time.perf_counter()
    everyone = list(range(len(clips)))
    if params.epoch_selection == "inner_subjects":
        setup = setup.with_epochs(inner_selected_epochs(setup, clips, everyone, params.seeds[0], generator, tokens))
    model, _, losses = train_miacnet(setup, clips, everyone, generator, tokens)
    seconds = time.perf_counter() - started
    save_checkpoint(files.final_model, {
        "architecture": "miacnet", "encoder": inputs.encoder, "variant": params.variant, "classes": clips.classes,
        "label_column": params.label_column, "img_size": clips.img_size,
        "position_branch": params.position_branch, "action_input": inputs.action_input,
        "motion": {"flow": inputs.flow, "magnification": inputs.magnification},
        # Pseudonyms only: lets a later evaluation tell unseen subjects from training ones.
        "subjects": sorted(set(clips.subjects)),
        **({"action_units": {"au_set": params.au_set, **au_readout.to_state()}} if au_readout else {}),
        "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}})
    return {"path": str(files.final_model), "variant": params.variant, "clips": len(clips),
            "epochs": setup.params.epochs, "seconds": round(seconds, 1), "train_loss": [round(v, 5) for v in losses]}
