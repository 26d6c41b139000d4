"""MIACNet fine-tuning under leave-one-subject-out, and the final model on all subjects.

The protocol never looks at the held-out subject: every fold trains for the configured
number of epochs and predicts once with its last weights. The held-out predictions of
every epoch are kept only to report the 'oracle best epoch' figure that much published
MER code uses (Varanka et al., arXiv:2211.11425) — labelled as such, never as the result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import torch
import torch.nn.functional as F

from mer_core.config import FinetuneParams, PathsParams
from mer_core.data.store import CLIPS_DIR, data_version
from mer_core.data.training_sets import MicroClips, load_micro_clips
from mer_core.evaluation.ceiling import au_oracle_predictions
from mer_core.evaluation.predictions import prediction_row
from mer_core.evaluation.protocols import leave_one_subject_out
from mer_core.models.miacnet import BranchTokens, MIACNet, build_miacnet
from mer_core.training import engine
from mer_core.training.checkpoint import load_checkpoint, load_encoder, save_checkpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoldSetup:
    """Everything a fold's training needs besides the data: fixed per (variant, seed)."""

    encoder_name: str
    img_size: int
    encoder_state: dict | None  # None: from scratch
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    dropout: float
    freeze_encoders: bool
    device: torch.device

    def build(self, num_classes: int) -> MIACNet:
        return build_miacnet(self.encoder_name, num_classes, self.encoder_state, self.dropout,
                             img_size=self.img_size).to(self.device)

    def with_fixed_encoders(self, num_classes: int) -> "FoldSetup":
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
    parts = [model.forward_branches(clips.onset[i:i + batch_size].to(next(model.parameters()).device),
                                    clips.apex[i:i + batch_size].to(next(model.parameters()).device))
             for i in range(0, len(clips), batch_size)]
    return BranchTokens(*(torch.cat([getattr(p, f) for p in parts]) for f in ("position", "action", "feature_change")))


def train_miacnet(setup: FoldSetup, clips: MicroClips, train: list[int], generator: torch.Generator,
                  tokens: BranchTokens | None = None, evaluate_on: list[int] | None = None
                  ) -> tuple[MIACNet, list[torch.Tensor], list[float]]:
    """Train MIACNet on the `train` clips.

    Args:
        tokens: cached branch tokens of all clips (frozen encoders); None trains end to end.
        evaluate_on: clips whose class probabilities are recorded after every epoch.
    Returns:
        The model; per epoch, the probabilities (len(evaluate_on), K) on `evaluate_on`;
        the mean training loss of every epoch.
    """
    num_classes = len(clips.classes)
    model = setup.build(num_classes)
    frozen = tokens is not None
    trained = model.named_head_parameters() if frozen else model.named_parameters()
    optimizer = engine.configure_optimizers(trained, setup.lr, setup.weight_decay)
    train_idx = torch.tensor(train)
    weights = class_weights(clips.labels[train_idx], num_classes).to(setup.device)
    per_epoch, losses = [], []

    def logits_of(rows: torch.Tensor) -> torch.Tensor:
        if frozen:
            return model.forward_head(tokens.index(rows).to(setup.device))
        return model(clips.onset[rows].to(setup.device), clips.apex[rows].to(setup.device))

    def loss_of_batch(rows: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits_of(rows), clips.labels[rows].to(setup.device), weight=weights)

    for epoch in range(setup.epochs):
        engine.set_lr(optimizer, engine.cosine_lr(1.0, epoch, setup.epochs, warmup=min(3, setup.epochs // 5)))
        order = train_idx[torch.randperm(len(train_idx), generator=generator)]
        batches = [order[i:i + setup.batch_size] for i in range(0, len(order), setup.batch_size)]
        model.train()
        if frozen:
            model.position_encoder.eval(), model.action_encoder.eval()
        losses.append(engine.train_one_epoch(loss_of_batch, batches, optimizer, setup.device)["loss"])
        if evaluate_on:
            model.eval()
            per_epoch.append(engine.evaluate(logits_of, [torch.tensor(evaluate_on)], setup.device))
    return model, per_epoch, losses


def run_loso(setup: FoldSetup, clips: MicroClips, variant: str, seed: int) -> tuple[list[dict], list[dict], float]:
    """Every LOSO fold of one (variant, seed): a row per held-out clip, a summary per fold
    (held-out subject, clip count, training loss per epoch), and the seconds taken.

    Rows carry the last-epoch prediction (the result) and the per-epoch predictions
    (only for the labelled oracle figure).
    """
    generator = engine.seed_everything(seed)
    setup = setup.with_fixed_encoders(len(clips.classes))
    started = time.perf_counter()
    tokens = None
    if setup.freeze_encoders:
        tokens = encode_clips(setup.build(len(clips.classes)), clips)
    rows, folds = [], []
    for fold, (held_out, train, test) in enumerate(leave_one_subject_out(clips.subjects)):
        _, per_epoch, losses = train_miacnet(setup, clips, train, generator, tokens, evaluate_on=test)
        folds.append({"fold": fold, "held_out": held_out, "clips": len(test),
                      "train_loss": [round(v, 5) for v in losses]})
        for j, i in enumerate(test):
            rows.append(prediction_row(clips, i, fold, per_epoch[-1][j].tolist(),
                                       [clips.classes[int(p[j].argmax())] for p in per_epoch], variant, seed))
    return rows, folds, time.perf_counter() - started


@dataclass(frozen=True)
class FinetuneFiles:
    """Where fine-tuning reads and writes (from `paths` in params)."""

    clips: Path  # the processed clip table: clips/<dataset>/
    encoders: Path  # pre-trained <variant>.pt
    checkpoints: Path  # one finished LOSO run per (variant, seed)
    final_model: Path

    @classmethod
    def from_paths(cls, paths: PathsParams) -> FinetuneFiles:
        return cls(paths.processed / CLIPS_DIR, paths.encoders, paths.checkpoints / "finetune", paths.final_model)


def fold_setup(params: FinetuneParams, variant: str, encoder_name: str, img_size: int, encoders: Path,
               device: torch.device) -> FoldSetup:
    """The fold settings of one variant; scratch gets the pre-trained variants' architecture."""
    state = None if variant == "scratch" else load_encoder(Path(encoders) / f"{variant}.pt")
    if state is not None and state["encoder"] != encoder_name:
        raise ValueError(f"encoder {variant}.pt is a {state['encoder']}, params ask for {encoder_name}; "
                         "re-run pretrain")
    return FoldSetup(encoder_name=encoder_name, img_size=img_size, encoder_state=state, epochs=params.epochs,
                     batch_size=params.batch_size, lr=params.lr, weight_decay=params.weight_decay,
                     dropout=params.dropout, freeze_encoders=params.freeze_encoders, device=device)


@dataclass(frozen=True)
class LosoJob:
    params: FinetuneParams
    files: FinetuneFiles
    variant: str
    seed: int
    encoder_name: str
    datasets: tuple[str, ...]
    threads: int


# Settings that never change what a LOSO run computes: where files go, which variants
# and seeds the stage runs (each job is one of them), and how it is parallelised.
FINGERPRINT_EXCLUDES = frozenset({"variant", "ablation", "seeds", "device", "workers"})


def _job_fingerprint(job: LosoJob, data: str) -> str:
    """What a finished run's checkpoint must match to be reused: every finetune setting
    except `FINGERPRINT_EXCLUDES` (so a new setting invalidates it by default), the job,
    the encoder file and the data."""
    keys = job.params.model_dump(mode="json", exclude=set(FINGERPRINT_EXCLUDES))
    encoder = job.files.encoders / f"{job.variant}.pt"
    encoder_version = hashlib.sha256(encoder.read_bytes()).hexdigest()[:16] if job.variant != "scratch" else ""
    payload = {**keys, "variant": job.variant, "seed": job.seed, "encoder": job.encoder_name,
               "encoder_version": encoder_version, "data": data, "datasets": job.datasets}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def run_loso_job(job: LosoJob) -> dict:
    """One (variant, seed) LOSO run in its own process; its rows are checkpointed, so a
    restarted stage skips every run that already finished."""
    torch.set_num_threads(job.threads)
    p, files = job.params, job.files
    clips = load_micro_clips(files.clips, list(job.datasets), p.label_column)
    checkpoint = files.checkpoints / f"{job.variant}-seed{job.seed}.pt"
    print_ = _job_fingerprint(job, data_version([files.clips / d for d in job.datasets]))
    if (done := load_checkpoint(checkpoint, print_)) is not None:
        log.info("%s seed %d: already done, reusing %s", job.variant, job.seed, checkpoint)
        return done["result"]
    setup = fold_setup(p, job.variant, job.encoder_name, int(clips.onset.shape[1]), files.encoders,
                       engine.select_device(p.device))
    rows, folds, seconds = run_loso(setup, clips, job.variant, job.seed)
    result = {"rows": rows, "folds": folds, "seconds": round(seconds, 1), "classes": clips.classes}
    save_checkpoint(checkpoint, {"fingerprint": print_, "result": result})
    log.info("%s seed %d: %d folds in %.0f s", job.variant, job.seed, rows[-1]["fold"] + 1 if rows else 0, seconds)
    return result


def _quiet_worker() -> None:
    """Worker processes log warnings only; the parent reports progress."""
    logging.basicConfig(level=logging.WARNING)


def run_finetuning(params: FinetuneParams, files: FinetuneFiles, datasets: list[str], encoder_name: str
                   ) -> tuple[list[dict], dict]:
    """LOSO for every (variant, seed) of the ablation plus the AU-oracle ceiling, then the
    final model on all subjects. Returns the prediction rows and the report."""
    variants = list(dict.fromkeys([params.variant, *params.ablation]))
    device = engine.select_device(params.device)
    workers = 1 if device.type == "cuda" else params.workers
    threads = max(1, (os.cpu_count() or 1) // workers)
    jobs = [LosoJob(params, files, v, seed, encoder_name, tuple(datasets), threads)
            for v in variants for seed in params.seeds]
    if workers == 1:
        results = [run_loso_job(job) for job in jobs]
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_quiet_worker) as pool:
            results = []
            for done, result in enumerate(pool.map(run_loso_job, jobs), start=1):
                log.info("LOSO runs done: %d/%d (%s seed %d)", done, len(jobs), jobs[done - 1].variant,
                         jobs[done - 1].seed)
                results.append(result)
    rows = [row for result in results for row in result["rows"]]
    clips = load_micro_clips(files.clips, datasets, params.label_column)
    rows += au_oracle_predictions(clips)
    report = {"device": str(device), "variants": variants, "seeds": params.seeds, "classes": clips.classes,
              "clips": len(clips), "subjects": len(set(clips.subjects)),
              "seconds": {f"{j.variant}/seed{j.seed}": r["seconds"] for j, r in zip(jobs, results)},
              # Checkpoints from before fold summaries were kept have none: an empty list.
              "folds": {f"{j.variant}/seed{j.seed}": r.get("folds", []) for j, r in zip(jobs, results)}}
    report["final_model"] = train_final_model(params, clips, encoder_name, files, device)
    return rows, report


def train_final_model(params: FinetuneParams, clips: MicroClips, encoder_name: str, files: FinetuneFiles,
                      device: torch.device) -> dict:
    """MIACNet of `params.variant` on every subject, saved with what inference needs."""
    generator = engine.seed_everything(params.seeds[0])
    img_size = int(clips.onset.shape[1])
    setup = fold_setup(params, params.variant, encoder_name, img_size, files.encoders, device)
    setup = setup.with_fixed_encoders(len(clips.classes))
    tokens = encode_clips(setup.build(len(clips.classes)), clips) if setup.freeze_encoders else None
    started = time.perf_counter()
    model, _, losses = train_miacnet(setup, clips, list(range(len(clips))), generator, tokens)
    seconds = time.perf_counter() - started
    save_checkpoint(files.final_model, {
        "architecture": "miacnet", "encoder": encoder_name, "variant": params.variant, "classes": clips.classes,
        "label_column": params.label_column, "img_size": img_size,
        # Pseudonyms only: lets a later evaluation tell unseen subjects from training ones.
        "subjects": sorted(set(clips.subjects)),
        "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}})
    return {"path": str(files.final_model), "variant": params.variant, "clips": len(clips),
            "seconds": round(seconds, 1), "train_loss": [round(v, 5) for v in losses]}
