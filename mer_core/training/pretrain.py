"""Self-supervised pre-training on macro clips: MA2MI, ContraWarping, or both jointly.

One run trains a position encoder and an action encoder of one registered family and
saves both (`{"position": ..., "action": ...}`) for MIACNet. ContraWarping reads single
faces, so alone it trains only the position encoder and the action encoder keeps its
random initialisation (a copy of the contrastive encoder was tried: its invariance to
global shifts made it blind to the one-pixel motion of a difference image — UF1 at
chance). Every variant hands MIACNet the same architecture.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from mer_core.config import ParamsError, PretrainParams
from mer_core.data.store import data_version
from mer_core.data.training_sets import MacroClipStream, MacroFramePairs
from mer_core.models.contrawarp import ContraWarping
from mer_core.models.encoders import ACTION_INPUTS, InputSizeError, normalize_frames, reads_motion
from mer_core.models.ma2mi import MA2MI
from mer_core.models.registry import create_model
from mer_core.training import distributed, engine
from mer_core.training.checkpoint import code_version, load_checkpoint, save_checkpoint, save_encoder
from mer_core.training.distributed import Ranks

log = logging.getLogger(__name__)


class Pretrainer(torch.nn.Module):
    """The objectives of one variant over a shared pair of encoders."""

    def __init__(self, variant: str, params: PretrainParams, img_size: int):
        super().__init__()
        self.variant = variant
        position = create_model(params.encoder, img_size=img_size)
        action = create_model(params.encoder, img_size=img_size, in_chans=ACTION_INPUTS[params.action_input])
        self.ma2mi = MA2MI(position, action, img_size, target=params.target) if variant in ("ma2mi", "both") else None
        self.contrastive = None
        if variant in ("contrastive", "both"):
            self.contrastive = ContraWarping(position, temperature=params.temperature, view_shift=params.view_shift,
                                             view_degrees=params.view_degrees,
                                             warp_displacement=params.warp_displacement)
        self.position, self.action = position, action
        self.contrastive_weight = params.contrastive_weight

    def forward(self, pairs: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Losses for a batch of `MacroFramePairs` (uint8 (B, H, W, C) "current" and
        "future" frames, and what else the pairs carry: "motion", "target", "target_flow");
        "loss" is their weighted sum."""
        losses = {}
        if self.ma2mi is not None:
            losses["ma2mi"] = self.ma2mi(**pairs)
        if self.contrastive is not None:
            losses["contrastive"] = self.contrastive(normalize_frames(pairs["current"]), generator)
        weight = {"ma2mi": 1.0, "contrastive": self.contrastive_weight}
        losses["loss"] = sum(weight[k] * v for k, v in losses.items())
        return losses

    def encoder_state(self) -> dict:
        return {"position": copy.deepcopy(self.position.state_dict()),
                "action": copy.deepcopy(self.action.state_dict())}


def check_input_size(params: PretrainParams, img_size: int) -> None:
    """Build what every variant builds, for `img_size` crops, before any data is read.

    Raises:
        ParamsError: the encoder (or MA2MI's target grid on it) cannot take that size;
            the message names both keys.
    """
    try:
        Pretrainer("both", params, img_size)
    except InputSizeError as exc:
        raise ParamsError(f"pretrain.encoder {params.encoder} cannot read ingest.crop_size {img_size}-px crops: "
                          f"{exc}") from None


@dataclass
class PretrainResult:
    variant: str
    encoder: str
    epochs: int
    clips: int
    seconds: float
    clips_per_second: float
    data_wait_fraction: float  # of training time spent waiting for the input pipeline
    peak_gpu_memory_mib: float | None
    history: list[dict]
    resumed_from_epoch: int
    world_size: int  # training processes (DDP ranks); the figures above are rank 0's clock


def fingerprint(params: PretrainParams, variant: str, data: str, flow: str | None) -> str:
    """What a checkpoint must match to be resumed: every setting that changes training, the data and the code.

    The number of processes is not among them: the checkpoint holds the global state (one
    model, one optimizer, the epoch), so a run resumes with more or fewer processes."""
    keys = params.model_dump(mode="json", exclude={"variants", "device", "loader_workers", "nproc_per_node"})
    payload = {**keys, "variant": variant, "data": data, "flow": flow, "code": code_version()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def batch_per_rank(batch_size: int, world_size: int) -> int:
    """`pretrain.batch_size` is the global batch: each of `world_size` processes takes an equal share.

    Raises:
        ParamsError: the batch does not split evenly; the message names the key.
    """
    if batch_size % world_size:
        raise ParamsError(f"pretrain.batch_size {batch_size} is the global batch and must split evenly over "
                          f"{world_size} training processes; make it a multiple of {world_size}")
    return batch_size // world_size


def augmentation_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """The generator of the objectives' in-model draws (ContraWarping's views) for one epoch of one
    rank: ranks draw different views, and a run resumed at an epoch, with any number of
    processes, draws what an unbroken run would have drawn there."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0]))


def steps_per_epoch(clips: MacroClipStream, batch: int, workers: int, ranks: Ranks) -> int | None:
    """The optimizer steps every rank takes this epoch: the fewest batches any rank has, so no
    rank waits forever in a gradient all-reduce the others never join (the longer shards
    leave their last batches for another epoch's shuffle). None for one process: all its batches.

    Raises:
        ParamsError: some rank would get no batch at all.
    """
    if not ranks.distributed:
        return None
    steps = min(clips.batches_per_rank(batch, max(1, workers)))
    if steps == 0:
        raise ParamsError(f"pretrain.nproc_per_node: {ranks.world_size} processes need at least one row group of "
                          f"macro clips each, and there are {len(clips.groups)}; use fewer processes or a smaller "
                          f"ingest.row_group_size")
    return steps


def pretrain_variant(params: PretrainParams, variant: str, clips_dirs: list[Path], img_size: int,
                     data: str, checkpoint_dir: Path, flow_method: str = "farneback",
                     stop_after_epoch: int | None = None, ranks: Ranks = Ranks()) -> tuple[dict, PretrainResult]:
    """Train one variant, resuming from its checkpoint in `checkpoint_dir`; returns the
    encoder state and a summary.

    Under DDP (`ranks.world_size` > 1, inside `distributed.process_group`) every rank calls
    this: each reads its own share of the row groups, gradients are averaged over ranks, and
    rank 0 alone writes the checkpoint; every rank returns the same state and losses.

    Args:
        flow_method: the optical flow the action encoder reads, when `params.action_input` has flow
            (the features stage's method, so pre-training and fine-tuning see one flow).
        stop_after_epoch: end early after this epoch (tests use it to simulate a kill).
        ranks: this process's place among the training processes.
    """
    device = distributed.device_of_rank(engine.select_device(params.device), ranks)
    engine.seed_everything(params.seed)  # the same initial weights on every rank
    rank_batch = batch_per_rank(params.batch_size, ranks.world_size)
    flow = flow_method if reads_motion(params.action_input) else None
    micro_scale = None if params.micro_scale is None else (params.micro_scale.low, params.micro_scale.high)
    clips = MacroClipStream(clips_dirs, seed=params.seed, rank=ranks.rank, world_size=ranks.world_size)
    stream = MacroFramePairs(clips, params.max_step, flow, params.seed, micro_scale, params.micro_noise,
                             flow_target=params.target == "flow")
    model = Pretrainer(variant, params, img_size).to(device)
    optimizer = engine.configure_optimizers(model.named_parameters(), params.lr, params.weight_decay)
    checkpoint_path = Path(checkpoint_dir) / f"{variant}.pt"
    print_ = fingerprint(params, variant, data, flow)
    start_epoch, history = 0, []
    if (state := load_checkpoint(checkpoint_path, print_)) is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, history = state["epoch"] + 1, state["history"]
        if ranks.is_main:
            log.info("%s: resuming after epoch %d from %s (written by %d process(es), now %d)", variant,
                     state["epoch"] + 1, checkpoint_path, state.get("world_size", 1), ranks.world_size)
    step_loss = engine.maybe_compile(data_parallel(model, device, ranks), device, params.compile)
    loader = DataLoader(stream, batch_size=rank_batch, num_workers=params.loader_workers,
                        pin_memory=device.type == "cuda", persistent_workers=params.loader_workers > 0)
    started, waited = time.perf_counter(), 0.0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for epoch in range(start_epoch, params.epochs):
        stream.set_epoch(epoch)
        engine.set_lr(optimizer, engine.cosine_lr(1.0, epoch, params.epochs, params.warmup_epochs))
        generator = augmentation_generator(params.seed, epoch, ranks.rank)
        parts: dict[str, list[float]] = {}

        def loss_of_batch(pairs: dict[str, torch.Tensor]) -> torch.Tensor:
            on_device = {k: v.to(device, non_blocking=True) for k, v in pairs.items()}
            losses = step_loss(on_device, generator)
            for name, value in losses.items():
                parts.setdefault(name, []).append(float(value.detach()))
            return losses["loss"]

        model.train()
        steps = steps_per_epoch(clips, rank_batch, params.loader_workers, ranks)
        stats = engine.train_one_epoch(loss_of_batch, itertools.islice(loader, steps), optimizer, device)
        waited += stats["data_wait_s"]
        history.append(epoch_record(epoch, stats, parts, ranks))
        if ranks.is_main:
            log.info("%s epoch %d/%d %s", variant, epoch + 1, params.epochs, history[-1])
            save_checkpoint(checkpoint_path, {"fingerprint": print_, "epoch": epoch, "model": model.state_dict(),
                                              "optimizer": optimizer.state_dict(), "history": history,
                                              "world_size": ranks.world_size})
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            break
    seconds = time.perf_counter() - started
    trained_epochs = len(history) - start_epoch
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    result = PretrainResult(variant, params.encoder, len(history), stream.clips, round(seconds, 1),
                            round(stream.clips * trained_epochs / max(seconds, 1e-9), 1),
                            round(waited / max(seconds, 1e-9), 4), None if peak is None else round(peak, 1),
                            history, start_epoch, ranks.world_size)
    return model.encoder_state(), result


def data_parallel(model: Pretrainer, device: torch.device, ranks: Ranks) -> torch.nn.Module:
    """`model` under DistributedDataParallel when there are several ranks, else itself.

    `static_graph`: every step uses the same parameters, and some never (an encoder's pooled
    head, unused by MA2MI; the action encoder under ContraWarping alone) — DDP learns that
    set in the first step instead of searching the graph at every step.
    """
    if not ranks.distributed:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   static_graph=True)


def epoch_record(epoch: int, stats: dict, parts: dict[str, list[float]], ranks: Ranks) -> dict:
    """One line of the loss history: the epoch's mean losses over every rank (the loss of
    the global batch, as one process with that batch would report it), steps and time."""
    names = sorted(parts)
    means = distributed.mean_over_ranks([sum(parts[k]) / len(parts[k]) for k in names], ranks)
    # Per-epoch time and data wait: the first epoch carries torch.compile's warm-up,
    # so steady-state throughput is read from the later ones.
    return {"epoch": epoch + 1, "steps": stats["steps"], "seconds": round(stats["seconds"], 3),
            "data_wait_s": round(stats["data_wait_s"], 3), **{k: round(v, 5) for k, v in zip(names, means)}}


def run_pretraining(params: PretrainParams, clips_dirs: list[Path], img_size: int, out_dir: Path,
                    checkpoint_dir: Path, flow_method: str = "farneback", ranks: Ranks = Ranks()) -> dict:
    """Train every variant in `params.variants`, save each encoder to `out_dir/<variant>.pt`
    (rank 0 alone saves under DDP).

    Returns:
        The report: device, encoder, processes, and per variant its summary and loss history.
    """
    data = data_version(clips_dirs)
    device = distributed.device_of_rank(engine.select_device(params.device), ranks)
    report = {"device": str(device), "encoder": params.encoder, "world_size": ranks.world_size,
              "data_fingerprint": data, "variants": {}}
    with distributed.process_group(ranks, device):
        for variant in params.variants:
            state, result = pretrain_variant(params, variant, clips_dirs, img_size, data, checkpoint_dir,
                                             flow_method, ranks=ranks)
            if ranks.is_main:
                save_encoder(Path(out_dir) / f"{variant}.pt", state, params.encoder, variant, params.action_input)
            report["variants"][variant] = asdict(result)
    return report


def describe(report: dict) -> str:
    """One line per variant of a `run_pretraining` report: epochs, throughput, data wait, final loss."""
    lines = []
    for variant, result in report["variants"].items():
        last = result["history"][-1]
        lines.append(f"{variant}: {result['epochs']} epochs on {result['clips']} clips in {result['seconds']} s "
                     f"({result['clips_per_second']} clips/s, {100 * result['data_wait_fraction']:.1f} % waiting "
                     f"for data), final loss {last['loss']:.3f}")
    return "\n".join(lines)
