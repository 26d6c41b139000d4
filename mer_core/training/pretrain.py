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
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from mer_core.config import ParamsError, PretrainParams
from mer_core.data.store import data_version
from mer_core.data.training_sets import MacroClipStream, MacroFramePairs
from mer_core.models.contrawarp import ContraWarping
from mer_core.models.encoders import ACTION_INPUTS, InputSizeError, normalize_frames, reads_motion
from mer_core.models.ma2mi import MA2MI
from mer_core.models.registry import create_model
from mer_core.training import engine
from mer_core.training.checkpoint import code_version, load_checkpoint, save_checkpoint, save_encoder

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


def fingerprint(params: PretrainParams, variant: str, data: str, flow: str | None) -> str:
    """What a checkpoint must match to be resumed: every setting that changes training, the data and the code."""
    keys = params.model_dump(mode="json", exclude={"variants", "device", "loader_workers"})
    payload = {**keys, "variant": variant, "data": data, "flow": flow, "code": code_version()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def pretrain_variant(params: PretrainParams, variant: str, clips_dirs: list[Path], img_size: int,
                     data: str, checkpoint_dir: Path, flow_method: str = "farneback",
                     stop_after_epoch: int | None = None) -> tuple[dict, PretrainResult]:
    """Train one variant, resuming from its checkpoint in `checkpoint_dir`; returns the
    encoder state and a summary.

    Args:
        flow_method: the optical flow the action encoder reads, when `params.action_input` has flow
            (the features stage's method, so pre-training and fine-tuning see one flow).
        stop_after_epoch: end early after this epoch (tests use it to simulate a kill).
    """
    device = engine.select_device(params.device)
    generator = engine.seed_everything(params.seed)
    flow = flow_method if reads_motion(params.action_input) else None
    micro_scale = None if params.micro_scale is None else (params.micro_scale.low, params.micro_scale.high)
    stream = MacroFramePairs(MacroClipStream(clips_dirs, seed=params.seed), params.max_step, flow, params.seed,
                             micro_scale, params.micro_noise, flow_target=params.target == "flow")
    model = Pretrainer(variant, params, img_size).to(device)
    optimizer = engine.configure_optimizers(model.named_parameters(), params.lr, params.weight_decay)
    checkpoint_path = Path(checkpoint_dir) / f"{variant}.pt"
    print_ = fingerprint(params, variant, data, flow)
    start_epoch, history = 0, []
    if (state := load_checkpoint(checkpoint_path, print_)) is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        start_epoch, history = state["epoch"] + 1, state["history"]
        log.info("%s: resuming after epoch %d from %s", variant, state["epoch"] + 1, checkpoint_path)
    step_loss = engine.maybe_compile(model, device, params.compile)
    loader = DataLoader(stream, batch_size=params.batch_size, num_workers=params.loader_workers,
                        pin_memory=device.type == "cuda", persistent_workers=params.loader_workers > 0)
    started, waited = time.perf_counter(), 0.0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for epoch in range(start_epoch, params.epochs):
        stream.set_epoch(epoch)
        engine.set_lr(optimizer, engine.cosine_lr(1.0, epoch, params.epochs, params.warmup_epochs))
        parts: dict[str, list[float]] = {}

        def loss_of_batch(pairs: dict[str, torch.Tensor]) -> torch.Tensor:
            on_device = {k: v.to(device, non_blocking=True) for k, v in pairs.items()}
            losses = step_loss(on_device, generator)
            for name, value in losses.items():
                parts.setdefault(name, []).append(float(value.detach()))
            return losses["loss"]

        model.train()
        stats = engine.train_one_epoch(loss_of_batch, loader, optimizer, device)
        waited += stats["data_wait_s"]
        # Per-epoch time and data wait: the first epoch carries torch.compile's warm-up,
        # so steady-state throughput is read from the later ones.
        history.append({"epoch": epoch + 1, "steps": stats["steps"], "seconds": round(stats["seconds"], 3),
                        "data_wait_s": round(stats["data_wait_s"], 3),
                        **{k: round(sum(v) / len(v), 5) for k, v in parts.items()}})
        log.info("%s epoch %d/%d %s", variant, epoch + 1, params.epochs, history[-1])
        save_checkpoint(checkpoint_path, {"fingerprint": print_, "epoch": epoch, "model": model.state_dict(),
                                                 "optimizer": optimizer.state_dict(),
                                                 "generator": generator.get_state(), "history": history})
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            break
    seconds = time.perf_counter() - started
    trained_epochs = len(history) - start_epoch
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    result = PretrainResult(variant, params.encoder, len(history), stream.clips, round(seconds, 1),
                            round(stream.clips * trained_epochs / max(seconds, 1e-9), 1),
                            round(waited / max(seconds, 1e-9), 4), None if peak is None else round(peak, 1),
                            history, start_epoch)
    return model.encoder_state(), result


def run_pretraining(params: PretrainParams, clips_dirs: list[Path], img_size: int, out_dir: Path,
                    checkpoint_dir: Path, flow_method: str = "farneback") -> dict:
    """Train every variant in `params.variants`, save each encoder to `out_dir/<variant>.pt`.

    Returns:
        The report: device, encoder, and per variant its summary and loss history.
    """
    data = data_version(clips_dirs)
    report = {"device": str(engine.select_device(params.device)), "encoder": params.encoder,
              "data_fingerprint": data, "variants": {}}
    for variant in params.variants:
        state, result = pretrain_variant(params, variant, clips_dirs, img_size, data, checkpoint_dir, flow_method)
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
