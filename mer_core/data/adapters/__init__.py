"""Adapters: one per published layout, each turning a raw data set root into `RawClip`s.

This package's namespace is the registry: adapter name → reader. What the adapters
share lives in `sheets.py`; each data set's layout in its own module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from mer_core.data.adapters import (
    affwild2,
    casme,
    casme2,
    casme3,
    casme3_c,
    casme_sq,
    ckplus,
    dfew,
    fourdme,
    mmew,
    samm,
    samm_long,
    smic,
    videos,
)
from mer_core.data.adapters.sheets import AdapterResult
from mer_core.data.corrections import Correction, corrections_for

ADAPTERS: dict[str, Callable[..., AdapterResult]] = {
    "casme": casme.read_casme,
    "casme2": casme2.read_casme2,
    "casme3": casme3.read_casme3,
    "casme3_c": casme3_c.read_casme3_c,
    "casme_sq": casme_sq.read_casme_sq,
    "ckplus": ckplus.read_ckplus,
    "dfew": dfew.read_dfew,
    "affwild2": affwild2.read_affwild2,
    "4dme": fourdme.read_fourdme,
    "mmew": mmew.read_mmew,
    "samm": samm.read_samm,
    "samm_long": samm_long.read_samm_long,
    "smic": smic.read_smic,
    "videos": videos.read_videos,
}


def read_dataset(adapter: str, name: str, root: Path, *, annotation: str | None, fps: float | None,
                 frames_per_clip: int, labels: list[str] | None = None,
                 corrections: Sequence[Correction] = ()) -> AdapterResult:
    """Parse one raw data set with the adapter registered under `adapter`, its sheet
    corrected by the entries of `corrections` for that published data set.

    Raises:
        ValueError: no adapter has that name.
        FileNotFoundError: `root` does not exist, or is not a folder.
    """
    if adapter not in ADAPTERS:
        raise ValueError(f"unknown adapter {adapter!r}; known: {sorted(ADAPTERS)}")
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"data set {name!r}: root {root} does not exist")
    if not root.is_dir():
        raise FileNotFoundError(f"data set {name!r}: root {root} is a file, not a folder")
    return ADAPTERS[adapter](name, root, annotation=annotation, fps=fps, frames_per_clip=frames_per_clip,
                             labels=frozenset(labels) if labels else None,
                             corrections=corrections_for(adapter, list(corrections)))
