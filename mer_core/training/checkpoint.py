"""Checkpoint files: written atomically, read back as tensors and plain data only.

Every file here is loaded with `torch.load(weights_only=True)`, which unpickles tensors,
dicts, lists, strings and numbers and refuses anything else: a model file is data, and a
crafted one must not run code as the user who opens it (`mer predict --model X.pt`).
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import torch

from mer_core import MerError
from mer_core.data.store import cannot_write


class CheckpointError(MerError, ValueError):
    """A checkpoint or model file is unreadable, not ours, or holds more than data."""


def save_checkpoint(path: Path, state: dict) -> None:
    """Write `state` with torch.save to a temporary file, then rename: a kill never
    leaves a truncated checkpoint behind. The same state gives the same bytes from any
    process (given a path, torch.save names its records after the temporary file's
    name, pid included), so a re-saved encoder keeps its hash for LOSO runs and DVC."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as file:
            torch.save(state, file)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch reports a full disk as a RuntimeError of its writer
        raise cannot_write(path, exc if isinstance(exc, OSError) else OSError(str(exc).splitlines()[0])) from exc
    finally:
        tmp.unlink(missing_ok=True)


def read_checkpoint(path: Path, required: tuple[str, ...] = ()) -> dict:
    """The dict saved at `path`, tensors and plain data only.

    Raises:
        FileNotFoundError: there is no file at `path`.
        CheckpointError: the file is not a torch file, holds anything but data (a pickle
            that would run code is refused, not run), or lacks one of `required`; the
            message names the file and the cause in one line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: refused to load, it holds more than tensors and plain data "
                              f"({first[:200]})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({first[:200]})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a mer checkpoint (holds a {type(state).__name__}, not a dict)")
    missing = [key for key in required if key not in state]
    if missing:
        raise CheckpointError(f"{path}: not a mer checkpoint of this kind (no {', '.join(missing)})")
    return state


def code_version() -> str:
    """A digest of the library's source: a checkpoint resumes a killed run of the same code,
    never a run of code that has changed since (its results would be stale)."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for source in sorted(package.rglob("*.py")):
        digest.update(source.relative_to(package).as_posix().encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def load_checkpoint(path: Path, fingerprint: str) -> dict | None:
    """The checkpoint at `path` if it was written by a run with the same `fingerprint`.

    A checkpoint of other params (or a missing or unreadable one) means start over,
    never a resume that mixes two configurations.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = read_checkpoint(path, required=("fingerprint",))
    except CheckpointError:
        return None
    return state if state.get("fingerprint") == fingerprint else None


def save_encoder(path: Path, state: dict, encoder: str, variant: str, action_input: str = "difference") -> None:
    """Pre-trained encoders for MIACNet: `{"encoder", "variant", "action_input", "position", "action"}`."""
    save_checkpoint(path, {"encoder": encoder, "variant": variant, "action_input": action_input, **state})


def load_encoder(path: Path) -> dict:
    """The `{"encoder", "variant", "action_input", "position", "action"}` state written by `save_encoder`
    (files from before `action_input` read the difference)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"no pre-trained encoder at {path}; run the pretrain stage first")
    return {"action_input": "difference", **read_checkpoint(path, required=("encoder", "position", "action"))}
