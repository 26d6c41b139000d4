"""The clip table: Parquet shards of face clips, written atomically, read by row group.

One row per clip. Frames live in a `fixed_shape_tensor` column of uint8 with shape
(T, H, W, C), so a reader gets a zero-copy NumPy view per row group and a data set
larger than memory streams through training one row group at a time. The onset frame's
landmarks (68 or 5 points, in crop pixels) live beside them in a float32 (K, 2) tensor column.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mer_core import MerError

# A stage's data folder holds `clips/<dataset>/part-*.parquet` and, after ingest, the
# rejected table beside them.
CLIPS_DIR = "clips"
REJECTED_FILE = "rejected.parquet"

# Columns that may identify a person or a machine; `anonymize` drops or rewrites them.
SOURCE_COLUMNS = ("source_path",)

_METADATA_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("clip_id", pa.string()),
    ("dataset", pa.string()),
    ("subject", pa.string()),
    ("kind", pa.string()),  # "macro" | "micro"
    ("label", pa.string()),  # native label, null when unlabelled
    ("label3", pa.string()),  # composite negative/positive/surprise, nullable
    ("onset", pa.int32()),
    ("apex", pa.int32()),
    ("offset", pa.int32()),
    ("fps", pa.float32()),
    ("action_units", pa.string()),
    ("corrections", pa.string()),  # what the sheet corrections table changed, null when nothing
    ("frame_indices", pa.list_(pa.int32())),  # source frame numbers of the T frames
    ("face_box", pa.list_(pa.int32(), 4)),  # x, y, w, h in source pixels
    ("face_score", pa.float32()),
    ("source_path", pa.string()),  # relative to the data set root; interim only
]

REJECTED_SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("item", pa.string()),  # what was rejected: a file, a folder or a sheet row
        ("reason", pa.string()),
        ("stage", pa.string()),
    ]
)


def frames_type(frames: int, size: int, channels: int = 3) -> pa.FixedShapeTensorType:
    """Arrow type of a clip's frames: uint8 (T, H, W, C)."""
    return pa.fixed_shape_tensor(pa.uint8(), (frames, size, size, channels))


def landmarks_type(points: int) -> pa.FixedShapeTensorType:
    """Arrow type of a clip's onset landmarks: float32 (K, 2), (x, y) in crop pixels."""
    return pa.fixed_shape_tensor(pa.float32(), (points, 2))


def clip_schema(frames: int, size: int, channels: int = 3, *, landmarks: int = 68,
                with_source: bool = True) -> pa.Schema:
    columns = [c for c in _METADATA_COLUMNS if with_source or c[0] not in SOURCE_COLUMNS]
    return pa.schema(columns + [("landmarks", landmarks_type(landmarks)),
                                ("frames", frames_type(frames, size, channels))])


class StoreWriteError(MerError, OSError):
    """An output could not be written (a full disk, a read-only folder); the previous
    version, if any, is still in place. The message names the file and the cause."""


def cannot_write(final: Path, exc: OSError) -> StoreWriteError:
    cause = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    return StoreWriteError(f"cannot write {final}: {cause}; the previous version, if any, is unchanged")


@dataclass
class Rejection:
    dataset: str
    item: str
    reason: str
    stage: str = "ingest"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_prefix(final: Path) -> str:
    # The writer's process id in the name tells a killed writer's leftovers from a live one's.
    return f".{final.name}.{os.getpid()}-"


def _writer_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def clear_interrupted_write(final: Path) -> list[Path]:
    """Undo what a writer of `final` that was killed left behind; returns what it removed.

    Its temporary files and folders are deleted. If it died between moving the previous
    version aside and renaming the new one in, the previous version is put back first.
    Temporaries of a writer that is still running are left alone.
    """
    final = Path(final)
    if not final.parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(final.name)}\.(\d+)-(.*)\.tmp$")
    removed = []
    for path in sorted(final.parent.iterdir()):
        match = pattern.match(path.name)
        if not match or _writer_alive(int(match.group(1))):
            continue
        if match.group(2) == "old" and not final.exists():
            os.replace(path, final)
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(path)
    return removed


def atomic_path(final: Path) -> Path:
    """A temporary sibling of `final`; rename it onto `final` once fully written."""
    final.parent.mkdir(parents=True, exist_ok=True)
    clear_interrupted_write(final)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(final), suffix=".tmp", dir=final.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would outlive the rename
    return Path(tmp)


def write_atomically(final: Path, write) -> None:
    """Call `write(tmp_path)`, then rename the temporary file onto `final`.

    A failure inside `write` removes the temporary file and leaves `final` as it was.
    """
    try:
        tmp = atomic_path(final)
    except OSError as exc:
        raise cannot_write(final, exc) from exc
    try:
        write(tmp)
        os.replace(tmp, final)
    except MerError:
        raise
    except OSError as exc:
        raise cannot_write(final, exc) from exc
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomically(final: Path, text: str) -> None:
    write_atomically(Path(final), lambda tmp: tmp.write_text(text))


def write_table(table: pa.Table, final: Path, row_group_size: int = 64) -> None:
    write_atomically(Path(final), lambda tmp: pq.write_table(table, tmp, row_group_size=row_group_size))


def write_row_groups(tables: Iterable[pa.Table], final: Path) -> int:
    """Stream tables into one Parquet file, one row group each, atomically; returns rows."""
    rows = 0

    def write(tmp: Path) -> None:
        nonlocal rows
        writer = None
        try:
            for table in tables:
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table, row_group_size=max(table.num_rows, 1))
                rows += table.num_rows
        finally:
            if writer is not None:
                writer.close()

    write_atomically(Path(final), write)
    return rows


@dataclass
class ShardWriter:
    """Buffers clip rows and flushes them as numbered Parquet shards, each atomically.

    Rows are dicts with the metadata columns plus `frames`, a uint8 array (T, H, W, C).
    """

    out_dir: Path
    schema: pa.Schema
    rows_per_shard: int = 512
    row_group_size: int = 64
    prefix: str = "part"
    _rows: list[dict] = field(default_factory=list)
    shards: list[Path] = field(default_factory=list)
    rows_written: int = 0

    def add(self, row: dict) -> None:
        self._rows.append(row)
        if len(self._rows) >= self.rows_per_shard:
            self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        path = Path(self.out_dir) / f"{self.prefix}-{len(self.shards):05d}.parquet"
        write_table(rows_to_table(self._rows, self.schema), path, self.row_group_size)
        self.shards.append(path)
        self.rows_written += len(self._rows)
        self._rows = []


def _tensor_column(rows: list[dict], name: str, tensor_type: pa.FixedShapeTensorType) -> pa.Array:
    """The rows' `name` arrays stacked into a tensor column (`frames`, `landmarks`). A row
    without a float tensor holds NaNs (landmarks that are not known)."""
    shape = tuple(tensor_type.shape)
    dtype = np.dtype(tensor_type.value_type.to_pandas_dtype())
    stacked = np.full((len(rows), *shape), np.nan if dtype.kind == "f" else 0, dtype)
    for i, row in enumerate(rows):
        if row.get(name) is None and dtype.kind == "f":
            continue
        value = np.asarray(row.get(name), dtype=dtype)
        if value.size != stacked[i].size:  # a flat list (from to_pylist) of the right size is fine
            raise ValueError(f"row {i}: {name} have shape {value.shape}, schema expects {shape}")
        stacked[i] = value.reshape(shape)
    return pa.FixedShapeTensorArray.from_numpy_ndarray(stacked)


def rows_to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Build a clip table from row dicts; `frames` and `landmarks` are stacked into their tensor columns."""
    columns = {}
    for field in schema:
        if isinstance(field.type, pa.FixedShapeTensorType):
            columns[field.name] = _tensor_column(rows, field.name, field.type)
        else:
            columns[field.name] = pa.array([r.get(field.name) for r in rows], type=field.type)
    return pa.table(columns, schema=schema)


def frames_to_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A tensor column as one array: `frames` (N, T, H, W, C) uint8, `landmarks` (N, K, 2) float32."""
    if isinstance(column, pa.ChunkedArray):
        return np.concatenate([chunk.to_numpy_ndarray() for chunk in column.chunks]) if column.num_chunks else np.empty((0,))
    return column.to_numpy_ndarray()


def shard_paths(directory: Path) -> list[Path]:
    """The complete Parquet shards under `directory` (temporary files are skipped)."""
    directory = Path(directory)
    if not directory.exists():
        return []
    return sorted(p for p in directory.rglob("*.parquet") if not p.name.startswith("."))


def iter_row_groups(paths: Iterable[Path], columns: list[str] | None = None) -> Iterator[pa.Table]:
    """Stream the clip table one row group at a time."""
    for path in paths:
        with pq.ParquetFile(path) as parquet:
            for index in range(parquet.num_row_groups):
                yield parquet.read_row_group(index, columns=columns)


def read_clips(directory: Path, columns: list[str] | None = None) -> pa.Table:
    """Read every shard under `directory` into one table (small data sets, reports, tests)."""
    paths = shard_paths(directory)
    if not paths:
        raise FileNotFoundError(f"no Parquet shards under {directory}")
    return pa.concat_tables(pq.read_table(p, columns=columns) for p in paths)


def write_rejected(rejections: list[Rejection], final: Path) -> None:
    table = pa.Table.from_pylist([r.__dict__ for r in rejections], schema=REJECTED_SCHEMA)
    write_table(table, final)


def read_rejected(path: Path) -> list[Rejection]:
    return [Rejection(**row) for row in pq.read_table(path, schema=REJECTED_SCHEMA).to_pylist()]


def _staging_dir(final: Path) -> Path:
    """An empty temporary sibling folder of `final`, named so a killed writer's is recognised."""
    final.parent.mkdir(parents=True, exist_ok=True)
    clear_interrupted_write(final)
    staged = Path(tempfile.mkdtemp(prefix=_temp_prefix(final), suffix=".tmp", dir=final.parent))
    staged.chmod(0o777 & ~_umask())
    return staged


def _replace_directory(staged: Path, final: Path) -> None:
    """Swap a fully written folder onto `final`; the old one is removed only afterwards."""
    old = None
    if final.exists():
        old = final.with_name(f"{_temp_prefix(final)}old.tmp")
        os.replace(final, old)
    os.replace(staged, final)
    if old is not None:
        shutil.rmtree(old)


@contextmanager
def staged_directory(final: Path) -> Iterator[Path]:
    """Build a folder beside `final` and swap it into place when the block ends without error.

    The previous `final` stays intact until the swap; an error in the block removes the
    staged folder, and what a killed writer left behind is cleared by the next one.
    """
    final = Path(final)
    try:
        staged = _staging_dir(final)
    except OSError as exc:
        raise cannot_write(final, exc) from exc
    try:
        yield staged
        _replace_directory(staged, final)
    except MerError:
        raise
    except OSError as exc:
        raise cannot_write(final, exc) from exc
    finally:
        if staged.exists():
            shutil.rmtree(staged)


def data_version(clips_dirs: Path | Iterable[Path]) -> str:
    """Content hash of the Parquet shards under `clips_dirs`: the one data version that
    checkpoints and the promotion gate compare, so training on other data never resumes a
    checkpoint and scores on other data are never ranked against each other."""
    dirs = [clips_dirs] if isinstance(clips_dirs, str | Path) else list(clips_dirs)
    digest = hashlib.sha256()
    for directory in dirs:
        for path in shard_paths(Path(directory)):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
