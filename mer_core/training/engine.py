"""The training engine shared by pre-training and fine-tuning, shaped like MAE's
`engine_pretrain.py`: device and precision, seeding, the optimizer, one epoch with a
non-finite guard, and evaluation. Checkpoint files live in `checkpoint.py`."""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterable

import numpy as np
import torch

from mer_core import MerError


class NonFiniteLossError(MerError, RuntimeError):
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


# Parameters that weight decay would pull towards zero for no benefit: a position
# embedding is a learned table, not a filter (nanoGPT and MAE leave norms, biases and
# position embeddings undecayed).
NO_DECAY_NAMES = ("pos_embed",)


def configure_optimizers(named_parameters: Iterable[tuple[str, torch.nn.Parameter]], lr: float,
                         weight_decay: float, lr_scale: Callable[[str], float] = lambda name: 1.0
                         ) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and filters only, none on norms, biases and
    position embeddings (nanoGPT's `configure_optimizers`); `lr_scale(name)` sets a
    parameter's rate as a fraction of `lr` (layer-wise decay). Frozen parameters are left out."""
    groups: dict[tuple[bool, float], list[torch.nn.Parameter]] = {}
    for name, parameter in named_parameters:
        if not parameter.requires_grad:
            continue
        undecayed = parameter.dim() < 2 or any(part in name.split(".") for part in NO_DECAY_NAMES)
        groups.setdefault((not undecayed, lr_scale(name)), []).append(parameter)
    return torch.optim.AdamW([{"params": params, "weight_decay": weight_decay if decayed else 0.0, "lr": lr * scale}
                              for (decayed, scale), params in sorted(groups.items(), key=lambda kv: (-kv[0][0],
                                                                                                   -kv[0][1]))],
                             lr=lr)


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


def softmax(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits, dim=-1)


@torch.no_grad()
def evaluate(logits_of_batch: Callable[[object], torch.Tensor], batches: Iterable, device: torch.device,
             probabilities: Callable[[torch.Tensor], torch.Tensor] = softmax) -> torch.Tensor:
    """Probabilities (N, K) on the CPU, float32, over `batches` in order: a softmax over
    classes, or `probabilities` of the logits (a sigmoid per label for a multi-label head);
    the caller puts its modules in eval mode."""
    parts = []
    for batch in batches:
        with autocast(device):
            parts.append(probabilities(logits_of_batch(batch).float()).cpu())
    return torch.cat(parts)
