"""A folder of video files, with an optional CSV manifest.

Manifest columns: `path` (relative to the root), `subject`, and optionally `label`,
`onset`, `apex`, `offset` (0-based frame numbers), `action_units`. Without a manifest
every video under the root is one unlabelled clip whose subject is its relative path.
A path that leaves the root (absolute, `..`, or a symlink pointing out) is rejected
without being opened.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from mer_core.data.adapters.sheets import (
    AdapterResult,
    AnnotationError,
    RawClip,
    cell_text,
    clips_from_sheet,
    parse_frame_number,
    required_text,
    resolve_inside,
)
from mer_core.data.corrections import SheetCorrections
from mer_core.data.store import Rejection
from mer_core.data.video import VIDEO_SUFFIXES

DEFAULT_MANIFEST = "manifest.csv"



def manifest_path(root: Path, relative: str) -> Path:
    """The file a manifest's `path` cell names under `root`; ValueError if it would leave the root."""
    candidate = Path(relative)
    if candidate.is_absolute():
        raise ValueError(f"path {relative!r} is absolute; manifest paths must be relative to the data root")
    if ".." in candidate.parts:
        raise ValueError(f"path {relative!r} climbs out of the data root")
    return resolve_inside(root, root / candidate, f"path {relative!r}")


def _optional_frame(row: pd.Series, column: str) -> int | None:
    if column not in row.index or cell_text(row[column]) is None:
        return None
    return parse_frame_number(row[column], column)


def _parse_manifest_row(row: pd.Series, root: Path, allowed: frozenset[str] | None) -> RawClip:
    relative = required_text(row, "path")
    path = manifest_path(root, relative)
    if not path.is_file():
        raise ValueError(f"video {relative} does not exist")
    subject = required_text(row, "subject")
    label = cell_text(row.get("label"))
    if label is not None and allowed is not None and label not in allowed:
        raise ValueError(f"unknown label {label!r}; expected one of {sorted(allowed)}")
    onset, apex, offset = (_optional_frame(row, c) for c in ("onset", "apex", "offset"))
    present = [v for v in (onset, apex, offset) if v is not None]
    if present != sorted(present):
        raise ValueError(f"onset/apex/offset out of order: {onset}/{apex}/{offset}")
    return RawClip(item=relative, subject=subject, label=label, onset=onset, apex=apex, offset=offset,
                   fps=None, action_units=cell_text(row.get("action_units")), video=path)


def _read_manifest(name: str, root: Path, manifest: Path, allowed: frozenset[str] | None) -> AdapterResult:
    try:
        table = pd.read_csv(manifest, dtype=object)
    except Exception as exc:  # pandas raises many types for a broken CSV; name the file
        raise AnnotationError(f"cannot read manifest {manifest}: {exc}") from exc
    table.columns = [str(c).strip().lower() for c in table.columns]
    if "path" not in table.columns or "subject" not in table.columns:
        raise AnnotationError(f"{manifest}: needs columns 'path' and 'subject'; found {list(table.columns)}")
    table.index = [f"row {k + 2}" for k in table.index]  # the 1-based line number: +1 for the header line
    clips, rejections = clips_from_sheet(name, manifest, table, ("path", "subject"),
                                         lambda row: _parse_manifest_row(row, root, allowed))
    return AdapterResult(clips, rejections, allowed)


def _scan_folder(name: str, root: Path) -> AdapterResult:
    """Every video file under `root`, one unlabelled clip each. Symlinked folders are not
    entered, and a video that links outside the root (or in a loop) is a rejection."""
    clips, rejections = [], []
    for folder, subfolders, files in os.walk(root):  # followlinks=False: a linked folder may lead anywhere
        subfolders.sort()
        for file_name in sorted(files):
            path = Path(folder) / file_name
            relative = path.relative_to(root).as_posix()
            if path.suffix.lower() not in VIDEO_SUFFIXES or file_name.startswith("."):
                continue
            try:
                resolve_inside(root, path, relative)
            except ValueError as exc:
                rejections.append(Rejection(name, relative, str(exc)))
                continue
            if path.is_file():
                clips.append(RawClip(item=relative, subject=relative.rsplit(".", 1)[0], label=None,
                                     onset=None, apex=None, offset=None, fps=None, video=path))
    return AdapterResult(sorted(clips, key=lambda c: c.item), sorted(rejections, key=lambda r: r.item), None)


def read_videos(name: str, root: Path, *, annotation: str | None, fps: float | None,
                frames_per_clip: int, labels: frozenset[str] | None = None,
                corrections: SheetCorrections | None = None) -> AdapterResult:
    """The clips of a video folder, from its manifest when there is one. A manifest is
    the user's own, corrected at its source: `corrections` do not apply."""
    manifest = root / (annotation or DEFAULT_MANIFEST)
    if annotation and not manifest.is_file():
        raise AnnotationError(f"manifest {manifest} does not exist")
    if manifest.is_file():
        return _read_manifest(name, root, manifest, labels)
    return _scan_folder(name, root)
