"""Anonymisation: keyed pseudonyms, no source paths, no background pixels, and a leak scan.

Subject identifiers become `s-<HMAC-SHA256(key, dataset, subject)>`, so the same person
keeps the same pseudonym across runs (subject-disjoint splits stay stable) while nobody
without the key can map it back. The key comes from an environment variable or a key
file outside the repository, created on first use; it is never logged or written out.
Only its fingerprint is stored beside the processed clips, so that a run with another
key — a lost key file silently re-created, a different `$MER_PSEUDONYM_KEY` — stops
instead of giving everyone new pseudonyms.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mer_core import MerError
from mer_core.config import ExecutorParams
from mer_core.data.faces import mask_outside_face
from mer_core.data.store import (
    SOURCE_COLUMNS,
    frames_to_numpy,
    iter_row_groups,
    shard_paths,
    staged_directory,
    write_row_groups,
    write_text_atomically,
)
from mer_core.parallel import open_job_pool

log = logging.getLogger(__name__)

KEY_BYTES = 32
# Beside the processed shards: which key made their pseudonyms (its fingerprint, never the key).
# Leading "_": Parquet readers (pyarrow datasets, Spark) skip it when reading the clip folder.
KEY_FINGERPRINT_FILE = "_pseudonym_key.json"


class PseudonymKeyError(MerError, RuntimeError):
    """The pseudonym key is unreadable, malformed, or stored where it could leak."""


class LeakError(MerError, RuntimeError):
    """Processed data still carries a raw identifier or a source path."""


@dataclass(frozen=True)
class PseudonymKey:
    secret: bytes = field(repr=False)
    source: str  # "env" or "file": where it came from, never the value
    created: bool = False  # a new key file was made for this run

    def digest(self, *parts: str) -> str:
        message = "\x1f".join(parts).encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    @property
    def fingerprint(self) -> str:
        """A non-secret tag that changes with the key: tells two keys apart, reveals nothing."""
        return self.digest("mer-key-fingerprint")[:12]


def _parse_key(text: str, where: str) -> bytes:
    text = text.strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise PseudonymKeyError(f"pseudonym key from {where} is not hex") from None
    if len(secret) < 16:
        raise PseudonymKeyError(f"pseudonym key from {where} is {len(secret)} bytes; at least 16 are needed")
    return secret


def load_key(env_var: str, key_file: Path, repo_root: Path | None = None) -> PseudonymKey:
    """The pseudonym key: `$env_var` (hex) if set, else `key_file`, created on first use.

    `key_file` is resolved (symlinks, `~`) before it is checked against `repo_root` (the
    repository: the params file's folder), wherever the command runs from.

    Raises:
        PseudonymKeyError: the key is malformed or unreadable, the key file lies inside the
            repository (where it could be committed), or others may read it.
    """
    if os.environ.get(env_var):
        return PseudonymKey(_parse_key(os.environ[env_var], f"${env_var}"), "env")
    path = Path(key_file).expanduser().resolve()
    root = (repo_root or Path.cwd()).resolve()
    if path.is_relative_to(root):
        raise PseudonymKeyError(f"key file {path} is inside the working tree {root}; keep it outside the repository")
    if not path.exists():
        return PseudonymKey(_create_key_file(path), "file", created=True)
    try:
        text = path.read_text(encoding="ascii")
    except OSError as exc:
        raise PseudonymKeyError(f"cannot read key file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise PseudonymKeyError(f"key file {path} is not a hex text key (binary content)") from None
    secret = _parse_key(text, f"key file {path}")
    if path.stat().st_mode & 0o077:
        others = "others" if path.stat().st_mode & 0o007 else "its group"
        raise PseudonymKeyError(f"key file {path} can be read by {others} (mode {path.stat().st_mode & 0o777:o}); "
                                f"`chmod 600 {path}`, and consider the key seen")
    return PseudonymKey(secret, "file")


def _create_key_file(path: Path) -> bytes:
    secret = secrets.token_bytes(KEY_BYTES)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # O_EXCL: two first runs at once must not write two different keys.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret.hex() + "\n")
    log.warning("created a new pseudonym key file; back it up: losing it breaks subject continuity")
    return secret


def recorded_fingerprint(clips_dir: Path) -> str | None:
    """The fingerprint of the key that pseudonymised `clips_dir`, None if it records none.

    Raises:
        PseudonymKeyError: the record exists but cannot be read.
    """
    path = Path(clips_dir) / KEY_FINGERPRINT_FILE
    if not path.exists():
        return None
    try:
        fingerprint = json.loads(path.read_text())["key_fingerprint"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PseudonymKeyError(f"key fingerprint record {path} is unreadable ({exc!r}); restore it, or delete "
                                f"{clips_dir} to start a new mapping deliberately") from None
    if not isinstance(fingerprint, str) or not fingerprint:
        raise PseudonymKeyError(f"key fingerprint record {path} holds no fingerprint")
    return fingerprint


def check_same_key(clips_dir: Path, key: PseudonymKey) -> None:
    """Refuse to overwrite processed clips whose pseudonyms another key made.

    Raises:
        PseudonymKeyError: `clips_dir` records a different key fingerprint.
    """
    recorded = recorded_fingerprint(clips_dir)
    if recorded is None or recorded == key.fingerprint:
        return
    origin = {"env": "from the environment", "file": "from the key file"}.get(key.source, key.source)
    if key.created:
        origin = "a key file created just now: the old one is missing"
    raise PseudonymKeyError(
        f"{clips_dir} was pseudonymised with the key of fingerprint {recorded}, but the key in use "
        f"({origin}) has fingerprint {key.fingerprint}: its pseudonyms would not match the old ones. Restore the "
        f"original key, or delete {clips_dir} to start a new mapping deliberately")


def _record_fingerprint(clips_dir: Path, key: PseudonymKey) -> None:
    write_text_atomically(Path(clips_dir) / KEY_FINGERPRINT_FILE,
                          json.dumps({"key_fingerprint": key.fingerprint}, indent=2) + "\n")


def pseudonym(key: PseudonymKey, dataset: str, subject: str) -> str:
    return "s-" + key.digest("subject", dataset, subject)[:12]


def pseudo_clip_id(key: PseudonymKey, clip_id: str) -> str:
    return "c-" + key.digest("clip", clip_id)[:16]


@dataclass
class AnonymizationReport:
    rows: int = 0
    subjects: int = 0
    datasets: dict[str, int] = field(default_factory=dict)
    rows_by_kind: dict[str, int] = field(default_factory=dict)
    columns_dropped: list[str] = field(default_factory=list)
    masked_outside_face: bool = False
    key_source: str = ""
    key_fingerprint: str = ""
    leak_scan: dict = field(default_factory=dict)

    def describe(self) -> str:
        return (f"anonymized {self.rows} rows of {self.subjects} subjects; leak scan: "
                f"{len(self.leak_scan['findings'])} finding(s) in {self.leak_scan['values_scanned']} values")


def _replace_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def anonymize_table(table: pa.Table, key: PseudonymKey, mask_outside: bool) -> pa.Table:
    """One row group: pseudonymise subject and clip_id, drop source columns, and with
    `mask_outside` blank every pixel outside the hull of each clip's landmarks."""
    subjects = [pseudonym(key, d, s) for d, s in zip(table["dataset"].to_pylist(), table["subject"].to_pylist())]
    table = _replace_column(table, "subject", pa.array(subjects, pa.string()))
    table = _replace_column(table, "clip_id", pa.array([pseudo_clip_id(key, c) for c in table["clip_id"].to_pylist()], pa.string()))
    table = table.drop_columns([c for c in SOURCE_COLUMNS if c in table.column_names])
    if mask_outside:
        landmarks = frames_to_numpy(table["landmarks"])  # (N, K, 2), crop pixels
        if np.isnan(landmarks).any():
            raise MerError("clips without landmarks cannot be masked outside the face; re-run `mer ingest`")
        frames = np.stack([mask_outside_face(clip, points)
                           for clip, points in zip(frames_to_numpy(table["frames"]), landmarks)])  # (N, T, H, W, C)
        table = _replace_column(table, "frames", pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(frames)))
    return table.replace_schema_metadata(None)


def _identifier_pattern(tokens: set[str]) -> re.Pattern | None:
    tokens = {t for t in tokens if t}
    if not tokens:
        return None
    alternatives = "|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True))
    # Delimited matches only: a raw id "sub01" must not fire inside an unrelated word. Case
    # does not hide an identity: "CAROL smiles" names the subject Carol.
    return re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])", re.IGNORECASE)


def _string_values(column: pa.ChunkedArray) -> list[str]:
    kind = column.type
    if pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind) or pa.types.is_large_list(kind):
        column = pc.list_flatten(column)
        kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return [v for v in column.to_pylist() if v]
    return []


def scan_for_leaks(paths: list[Path], raw_tokens: set[str]) -> dict:
    """Search every string value and all file metadata for raw identifiers and paths.

    Returns:
        {"files": n, "values_scanned": n, "findings": [{"file", "where", "count"}]}; the
        findings name columns, never the identifier found.
    """
    pattern = _identifier_pattern(raw_tokens)
    path_like = re.compile(r"(^|[\s'\"=])(/|~/|[A-Za-z]:\\)[^\s'\"]+")
    findings, scanned = [], 0
    for path in paths:
        parquet = pq.ParquetFile(path)
        metadata = parquet.metadata.metadata or {}
        meta_text = " ".join(k.decode(errors="replace") + "=" + v.decode(errors="replace") for k, v in metadata.items())
        if pattern and pattern.search(meta_text):
            findings.append({"file": path.name, "where": "file metadata", "count": 1})
        table = parquet.read(columns=[n for n in parquet.schema_arrow.names if n != "frames"])
        for name in table.column_names:
            values = _string_values(table[name])
            scanned += len(values)
            hits = sum(1 for v in values if (pattern and pattern.search(v)) or path_like.search(v))
            if hits:
                findings.append({"file": path.name, "where": f"column {name}", "count": hits})
        leftover = [c for c in SOURCE_COLUMNS if c in table.column_names]
        if leftover:
            findings.append({"file": path.name, "where": f"source column(s) {leftover}", "count": table.num_rows})
    return {"files": len(paths), "values_scanned": scanned, "findings": findings}


def raw_identifiers(table: pa.Table) -> set[str]:
    """Tokens that must not survive: raw subjects, source paths, and the folder names in
    them that identify someone or something (those with a digit, like `sub01`, `EP02_01`,
    `S005`, or a subject's own name). Layout and emotion folders (`micro`, `negative`,
    `Micro_Expression/happiness`) identify nobody, and the labels repeat them by design."""
    subjects = {s for s in table["subject"].to_pylist() if s}
    tokens = set(subjects)
    for item in table["source_path"].to_pylist() if "source_path" in table.column_names else []:
        tokens.add(item)
        folders = Path(item.split(" window ")[0].split(" frames ")[0]).parts[:-1]
        tokens.update(part for part in folders if any(c.isdigit() for c in part) or part in subjects)
    tokens.update(c.split("/", 1)[1] for c in table["clip_id"].to_pylist() if "/" in c)
    return {t for t in tokens if t and len(t) >= 2}


@dataclass
class _ShardOutcome:
    """What one anonymized shard contributes to the report and to the leak scan."""

    rows: int = 0
    raw_tokens: set[str] = field(default_factory=set)
    subjects: set[str] = field(default_factory=set)
    datasets: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)


def _anonymize_shard(job: tuple[Path, Path, PseudonymKey, bool]) -> _ShardOutcome:
    """Stream one interim shard, row group by row group, into its anonymized twin."""
    source, target, key, mask_outside = job
    outcome = _ShardOutcome()

    def anonymized_groups():
        for group in iter_row_groups([source]):
            outcome.raw_tokens.update(raw_identifiers(group))
            group = anonymize_table(group, key, mask_outside)
            outcome.subjects.update(group["subject"].to_pylist())
            outcome.datasets.update(group["dataset"].to_pylist())
            outcome.kinds.update(group["kind"].to_pylist())
            yield group

    outcome.rows = write_row_groups(anonymized_groups(), target)
    return outcome


def anonymize(in_clips: Path, out_clips: Path, key: PseudonymKey, mask_outside_face: bool,
              workers: int = 1, executor: ExecutorParams = ExecutorParams()) -> AnonymizationReport:
    """Rewrite every interim shard into `out_clips`, then prove no raw identifier survived.

    Shards are independent, so `workers` processes rewrite them side by side (reading,
    masking and re-compressing frames is the cost; at the GPU profile's sizes one process
    managed about 40 clips/s on this project's 2-core machine); or the workers of a Dask
    cluster (`executor`), which must read and write the same paths — and receive the key
    inside each job, so a cluster across machines wants TLS (README, "Scale out with Dask").

    Raises:
        LeakError: the scan found a raw identifier or path; nothing is written.
        PseudonymKeyError: `out_clips` was made with another key; nothing is written.
    """
    paths = shard_paths(in_clips)
    if not paths:
        raise FileNotFoundError(f"no interim clip shards under {in_clips}; run `mer ingest` first")
    check_same_key(out_clips, key)
    report = AnonymizationReport(masked_outside_face=mask_outside_face, key_source=key.source,
                                 key_fingerprint=key.fingerprint)
    with staged_directory(out_clips) as staged:
        jobs = [(path, staged / path.relative_to(in_clips), key, mask_outside_face) for path in paths]
        with open_job_pool(executor, min(workers, len(jobs))) as pool:
            outcomes = list(pool.map(_anonymize_shard, jobs))
        tokens = set().union(*(o.raw_tokens for o in outcomes))
        report.leak_scan = scan_for_leaks(shard_paths(staged), tokens)
        if report.leak_scan["findings"]:
            raise LeakError(f"raw identifiers or paths found in processed data: {report.leak_scan['findings']}")
        _record_fingerprint(staged, key)
    report.rows = sum(o.rows for o in outcomes)
    report.subjects = len(set().union(*(o.subjects for o in outcomes)))
    report.datasets = dict(sorted(sum((o.datasets for o in outcomes), Counter()).items()))
    report.rows_by_kind = dict(sorted(sum((o.kinds for o in outcomes), Counter()).items()))
    report.columns_dropped = list(SOURCE_COLUMNS)
    return report
