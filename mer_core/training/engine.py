"""The training engine shared by pre-training and fine-tuning: device, precision,
seeding, one epoch with a non-finite guard, and checkpoints that survive a kill."""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stops instead of corrupting weights."""


def select_device(preference: str = "auto") -> torch.device:
    """`auto` → CUDA when available, else CPU; `cpu` / `cuda` force one."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("params ask for device 'cuda' but no CUDA device is available")
    return torch.device(preference)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; full precision on CPU (where bf16 is slower on most CPUs)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def maybe_compile(module: torch.nn.Module, device: torch.device, enabled: bool) -> torch.nn.Module:
    """`torch.compile` on CUDA when enabled; compile time does not pay off on small CPU runs."""
    return torch.compile(module) if enabled and device.type == "cuda" else module


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a CPU generator for sampling in the loop."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def train_one_epoch(loss_of_batch: Callable[[object], torch.Tensor], batches: Iterable, optimizer: torch.optim.Optimizer,
                    device: torch.device, clip_grad: float | None = 1.0) -> dict:
    """One pass over `batches`; `loss_of_batch` maps a batch to a scalar loss.

    Returns:
        {"loss": mean loss, "steps": optimizer steps, "seconds": wall time,
         "data_wait_s": time spent waiting for the next batch (the input pipeline's share)}.

    Raises:
        NonFiniteLossError: a batch gave a NaN or infinite loss.
    """
    total, steps, waited = 0.0, 0, 0.0
    params = [p for group in optimizer.param_groups for p in group["params"]]
    started = time.perf_counter()
    iterator = iter(batches)
    while True:
        asked = time.perf_counter()
        batch = next(iterator, None)
        waited += time.perf_counter() - asked
        if batch is None:
            break
        with autocast(device):
            loss = loss_of_batch(batch)
        value = float(loss.detach())  # also synchronizes CUDA, so the wait above is honest
        if not math.isfinite(value):
            raise NonFiniteLossError(f"loss is {value} at step {steps}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad:
            torch.nn.utils.clip_grad_norm_(params, clip_grad)
        optimizer.step()
        total, steps = total + value, steps + 1
    return {"loss": total / max(steps, 1), "steps": steps, "seconds": time.perf_counter() - started,
            "data_wait_s": waited}


def cosine_lr(base: float, epoch: int, epochs: int, warmup: int = 0) -> float:
    """Linear warm-up for `warmup` epochs, then cosine decay to zero at `epochs`."""
    if epoch < warmup:
        return base * (epoch + 1) / warmup
    progress = (epoch - warmup) / max(1, epochs - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, scale: float) -> None:
    """Scale every group's `base_lr` (set at construction) by `scale`."""
    for group in optimizer.param_groups:
        group["lr"] = group.setdefault("base_lr", group["lr"]) * scale


def save_checkpoint(path: Path, state: dict) -> None:
    """Write `state` with torch.save to a temporary file, then rename: a kill never
    leaves a truncated checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path, fingerprint: str) -> dict | None:
    """The checkpoint at `path` if it was written by a run with the same `fingerprint`.

    A checkpoint of other params (or a missing one) means start over, never a resume
    that mixes two configurations.
    """
    path = Path(path)
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    return state if state.get("fingerprint") == fingerprint else None
