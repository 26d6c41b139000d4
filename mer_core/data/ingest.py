"""Ingestion: raw layouts → decoded, face-cropped, frame-sampled clip table shards.

Adapters say what the clips are; this module reads their pixels (in a process pool or on a
Dask cluster: mer_core/parallel.py), finds and tracks the face, aligns it and writes the
rows. Anything that fails — an unreadable file, no face, two faces, a face lost mid-clip, a
bad sheet row — goes to the rejected table and the run carries on.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
from pydantic import ValidationError
from tqdm import tqdm

from mer_core.config import DatasetSource, ExecutorParams, IngestParams, ParamsError, validation_problems
from mer_core.data.adapters import read_dataset
from mer_core.data.adapters.sheets import RawClip
from mer_core.data.corrections import CORRECTIONS_TABLE, Correction, load_corrections
from mer_core.data.faces import LANDMARK_POINTS, AlignedClip, CropSettings, NoFaceError, align_window
from mer_core.data.labels import LABEL_MAPPINGS, CompositeList, composite_label, read_composite_list
from mer_core.data.store import (
    CLIPS_DIR,
    REJECTED_FILE,
    Rejection,
    ShardWriter,
    clip_schema,
    read_rejected,
    staged_directory,
    write_rejected,
)
from mer_core.data.video import (
    FrameReadError,
    VideoReader,
    count_video_frames,
    macro_windows,
    read_image_sequence,
)
from mer_core.parallel import JobPool, open_job_pool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipJob:
    dataset: str
    adapter: str
    kind: str
    clip: RawClip
    settings: CropSettings
    label3: str | None = None  # the composite class (`protocol_labels`)


@dataclass
class ClipOutcome:
    rows: list[dict] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    frames_decoded: int = 0


def _init_worker() -> None:
    # One OpenCV thread per worker process: the pool already uses every core.
    cv2.setNumThreads(1)


def _align_into(outcome: ClipOutcome, job: ClipJob, where: str, numbers: list[int], frames: list[np.ndarray],
                fps: float | None) -> None:
    """Align one window's frames and add its row to `outcome`, or its rejection."""
    try:
        aligned = align_window(frames, numbers, job.settings, where)
    except (FrameReadError, NoFaceError) as exc:
        outcome.rejections.append(Rejection(job.dataset, where, str(exc)))
        return
    outcome.rows.append(_row(job, where, numbers, aligned, fps))


def _process_image_sequence(job: ClipJob) -> ClipOutcome:
    numbers = [n for n, _ in job.clip.frames]
    frames = read_image_sequence([path for _, path in job.clip.frames])
    outcome = ClipOutcome(frames_decoded=len(frames))
    _align_into(outcome, job, job.clip.item, numbers, frames, job.clip.fps)
    return outcome


def _labelled_end(clip: RawClip) -> int | None:
    """The last frame the annotation names, if it names any."""
    marks = [v for v in (clip.onset, clip.apex, clip.offset) if v is not None]
    return max(marks) if marks else None


def _video_length(clip: RawClip) -> tuple[int, int]:
    """(frames in the clip's video, frames decoded to learn that).

    The container's count is trusted unless it is missing or the annotation reaches past
    it; then the stream is decoded once to count.
    """
    with VideoReader(clip.video) as reader:
        count = reader.frame_count_hint
    end = _labelled_end(clip)
    if count > 0 and (end is None or end < count):
        return count, 0
    count, _ = count_video_frames(clip.video)
    return count, count


def _plan_windows(clip: RawClip, settings: CropSettings, length: int, why: str = "") -> list[list[int]]:
    """The frame numbers of each window to cut from a video of `length` usable frames."""
    end = _labelled_end(clip)
    if end is not None and end >= length:
        raise FrameReadError(f"{clip.video}: annotated frame {end} is past the last usable frame {length - 1}{why}")
    windows = macro_windows(length, settings.frames_per_clip, settings.window_stride,
                            settings.windows_per_video, clip.onset, clip.offset)
    if not windows:
        raise FrameReadError(f"{clip.video}: only {length} usable frame(s), too short for one window "
                             f"of {settings.frames_per_clip}{why}")
    return windows


def _stream_windows(job: ClipJob, windows: list[list[int]]) -> tuple[ClipOutcome, bool]:
    """Decode the video once, aligning each window as soon as its frames are in; only the
    frames of windows not yet aligned are held. Returns the outcome and whether every
    window was reached before the stream ended."""
    clip = job.clip
    outcome, reached = ClipOutcome(), 0
    with VideoReader(clip.video) as reader:
        for k, frames in reader.frame_groups(windows):
            where = clip.item if len(windows) == 1 else f"{clip.item} window {k}"
            _align_into(outcome, job, where, windows[k], frames, clip.fps or reader.fps)
            reached += 1
        outcome.frames_decoded = reader.frames_read
    return outcome, reached == len(windows)


def _process_video(job: ClipJob) -> ClipOutcome:
    clip = job.clip
    length, counted = _video_length(clip)
    outcome, complete = _stream_windows(job, _plan_windows(clip, job.settings, length))
    if complete:
        outcome.frames_decoded += counted
        return outcome
    decoded = outcome.frames_decoded
    if decoded == 0:
        raise FrameReadError(f"{clip.video}: no frame could be decoded")
    # The stream ended before the container's count: a truncated file. Its last decoded
    # frame can be partly garbage (a cut-off MJPEG frame still decodes), so it is left out
    # and the windows are planned again over what is intact.
    why = f" (the container lists {length} frames but only {decoded} decode: truncated file?)"
    log.warning("%s%s; using frames 0..%d", clip.item, why, decoded - 2)
    outcome, complete = _stream_windows(job, _plan_windows(clip, job.settings, decoded - 1, why))
    if not complete:
        raise FrameReadError(f"{clip.video}: decoding stopped at a different frame on a second pass")
    outcome.frames_decoded += counted + decoded
    return outcome


def process_clip(job: ClipJob) -> ClipOutcome:
    """Decode, detect, crop: one RawClip → clip rows (one per window) and rejections.

    Whatever is wrong with the item's pixels becomes a rejection naming it; the run goes on.
    """
    try:
        return _process_image_sequence(job) if job.clip.video is None else _process_video(job)
    except FrameReadError as exc:
        return ClipOutcome(rejections=[Rejection(job.dataset, job.clip.item, str(exc))])
    except cv2.error as exc:  # OpenCV failing on pixels it cannot handle: a bad item, not a bug here
        return ClipOutcome(rejections=[Rejection(job.dataset, job.clip.item, f"OpenCV could not process it: {exc}")])


def _row(job: ClipJob, where: str, numbers: list[int], aligned: AlignedClip, fps: float | None) -> dict:
    clip = job.clip
    return {
        "clip_id": f"{job.dataset}/{where}",
        "dataset": job.dataset,
        "subject": clip.subject,
        "kind": clip.kind or job.kind,
        "label": clip.label,
        "label3": job.label3,
        "onset": clip.onset,
        "apex": clip.apex,
        "offset": clip.offset,
        "fps": fps,
        "action_units": clip.action_units,
        "corrections": clip.corrections,
        "frame_indices": numbers,
        "face_box": [int(round(v)) for v in aligned.face.box],
        "face_score": aligned.face.score,
        "source_path": clip.item,
        "landmarks": aligned.landmarks,  # (K, 2) onset landmarks, crop pixels
        "frames": aligned.crops,  # (T, S, S, 3) RGB
    }


@dataclass
class DatasetSummary:
    clips_listed: int = 0
    corrected: int = 0  # clips whose sheet row the corrections table changed
    rows: int = 0
    rejected: int = 0
    frames_decoded: int = 0
    seconds: float = 0.0
    # With a composite list that names this data set: its rows here, those no clip matched,
    # and the clips it leaves out (their label3 is null).
    composite_listed: int | None = None
    composite_not_found: list[str] | None = None
    composite_not_listed: list[str] | None = None

    @property
    def frames_per_second(self) -> float:
        return self.frames_decoded / self.seconds if self.seconds else 0.0

    def as_report(self) -> dict:
        """The summary as `reports/ingest.json` holds it, throughput included."""
        fields = {k: v for k, v in asdict(self).items() if v is not None}
        return {**fields, "frames_per_second": round(self.frames_per_second, 1)}

    def describe(self, name: str) -> str:
        line = (f"{name}: {self.clips_listed} clips listed, {self.rows} rows, {self.rejected} rejected, "
                f"{self.frames_per_second:.0f} frames/s")
        if self.composite_listed is not None:
            line += (f"; composite list: {self.composite_listed} listed, {len(self.composite_not_found)} not found, "
                     f"{len(self.composite_not_listed)} clips not listed")
        return line


def clip_filename(clip: RawClip) -> str:
    """The clip's own folder or file name (`EP02_01f` of `sub01/EP02_01f frames 10-40`)."""
    return Path(clip.item.split(" frames ")[0]).name


def protocol_labels(source: DatasetSource, clips: list[RawClip], composite: CompositeList | None,
                    summary: DatasetSummary) -> tuple[list[tuple[RawClip, str | None]], list[Rejection]]:
    """Each clip with its label under the data set's `label_mapping` and its composite class
    (`label3`): the composite list's when the list names this data set, else the label
    mapping's. A class the mapping leaves out is a rejection; `summary` learns what the
    list left out."""
    mapping = LABEL_MAPPINGS[source.label_mapping] if source.label_mapping else None
    listed = composite is not None and source.adapter in composite.datasets
    labelled, rejections, not_listed = [], [], []
    for clip in clips:
        label3 = composite_label(source.adapter, clip.label)
        if listed:
            authority = composite.label_of(source.adapter, clip.subject, clip_filename(clip))
            if authority is None:
                not_listed.append(clip.item)
            elif label3 is not None and authority != label3:
                log.info("%s %s: the composite list says %s, its label %s maps to %s", source.name, clip.item,
                         authority, clip.label, label3)
            label3 = authority
        if mapping is not None and clip.label is not None:
            if clip.label not in mapping:
                rejections.append(Rejection(source.name, clip.item, f"emotion {clip.label!r} is outside the "
                                                                    f"{source.label_mapping} protocol"))
                continue
            clip = replace(clip, label=mapping[clip.label])
        labelled.append((clip, label3))
    if listed:
        not_found = composite.not_found(source.adapter)
        summary.composite_listed = sum(key[0] == source.adapter for key in composite.entries)
        summary.composite_not_found, summary.composite_not_listed = not_found, not_listed
        log.info("%s: the composite list names %d clips, %d not found; %d clips not listed", source.name,
                 summary.composite_listed, len(not_found), len(not_listed))
    return labelled, rejections


def _ingest_dataset(source: DatasetSource, params: IngestParams, clips_dir: Path, pool: JobPool,
                    corrections: list[Correction], composite: CompositeList | None
                    ) -> tuple[DatasetSummary, list[Rejection]]:
    start = time.perf_counter()
    listing = read_dataset(source.adapter, source.name, source.root, annotation=source.annotation,
                           fps=source.fps, frames_per_clip=params.frames_per_clip, labels=source.labels,
                           corrections=corrections)
    summary = DatasetSummary(clips_listed=len(listing.clips), corrected=sum(bool(c.corrections) for c in listing.clips))
    labelled, rejections = protocol_labels(source, listing.clips, composite, summary)
    rejections = [*listing.rejections, *rejections]
    writer = ShardWriter(clips_dir / source.name, clip_schema(params.frames_per_clip, params.crop_size,
                                                              landmarks=LANDMARK_POINTS[params.landmark_model]),
                         params.rows_per_shard, params.row_group_size)
    settings = CropSettings.from_params(params)
    jobs = [ClipJob(source.name, source.adapter, source.kind, clip, settings, label3) for clip, label3 in labelled]
    results = pool.map(process_clip, jobs, chunksize=4)
    for outcome in tqdm(results, total=len(jobs), desc=f"ingest {source.name}", unit="clip", leave=False, disable=None):
        for row in outcome.rows:
            writer.add(row)
        rejections.extend(_without_root(r, source.root) for r in outcome.rejections)
        summary.frames_decoded += outcome.frames_decoded
    writer.flush()
    summary.rows, summary.rejected = writer.rows_written, len(rejections)
    summary.seconds = time.perf_counter() - start
    log.info("%s: %d clips listed → %d rows, %d rejected, %.0f frames/s", source.name, summary.clips_listed,
             summary.rows, summary.rejected, summary.frames_per_second)
    return summary, rejections


def _without_root(rejection: Rejection, root: Path) -> Rejection:
    """The rejection with the data set's root cut out of its reason, so that it names files
    as the layout does (`videos/a.avi`), not where this machine keeps them."""
    reason = rejection.reason
    for prefix in (str(Path(root).resolve()), str(root)):
        reason = reason.replace(prefix + os.sep, "")
    return replace(rejection, reason=reason)


def ingest(params: IngestParams, out_dir: Path, sources: list[DatasetSource] | None = None,
           keep_other_datasets: bool = False, corrections: Path | None = CORRECTIONS_TABLE,
           executor: ExecutorParams = ExecutorParams()) -> dict[str, DatasetSummary]:
    """Ingest every data set into `out_dir/clips/<name>/` and `out_dir/rejected.parquet`.

    The whole of `out_dir` is built beside the old one and swapped in at the end, so an
    interrupted run (killed, or a full disk) leaves the previous output intact, clips and
    rejected table together; what a killed run left behind is cleared by the next one.

    Args:
        keep_other_datasets: carry over the clips and rejections of data sets already in
            `out_dir` that `sources` does not name (an ad-hoc ingest adds, never deletes).
        corrections: the sheet corrections table (mer_core/data/corrections.py); None: none.
        executor: where the clips are processed (`params.workers` processes, or a Dask
            cluster); the output is the same.
    """
    sources = params.datasets if sources is None else sources
    if not sources:
        raise ParamsError("no data sets to ingest: ingest.datasets is empty")
    out_dir = Path(out_dir)
    summaries, rejections, table = {}, [], load_corrections(corrections)
    composite = read_composite_list(params.composite_list) if params.composite_list else None
    with staged_directory(out_dir) as staged:
        if keep_other_datasets:
            rejections += _carry_over(out_dir, staged, {s.name for s in sources})
        with open_job_pool(executor, params.workers, _init_worker) as pool:
            for source in sources:
                summaries[source.name], rejected = _ingest_dataset(source, params, staged / CLIPS_DIR, pool, table,
                                                                   composite)
                rejections.extend(rejected)
        write_rejected(rejections, staged / REJECTED_FILE)
    return summaries


def _carry_over(out_dir: Path, staged: Path, replaced: set[str]) -> list[Rejection]:
    """Link the clips of every data set in `out_dir` but `replaced` into `staged`; their rejections."""
    clips = out_dir / CLIPS_DIR
    for folder in sorted(clips.iterdir()) if clips.is_dir() else []:
        if folder.is_dir() and folder.name not in replaced:
            shutil.copytree(folder, staged / CLIPS_DIR / folder.name, copy_function=os.link)
    previous = out_dir / REJECTED_FILE
    return [r for r in read_rejected(previous) if r.dataset not in replaced] if previous.exists() else []


def check_ingest_output(output: Path) -> None:
    """Refuse an ad-hoc `--output` that holds anything but an earlier ingest's output:
    the output folder is replaced whole, and nothing else in it may be lost.

    Raises:
        ParamsError: `output` is a file, or a folder with other contents.
    """
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ParamsError(f"--output {output} is a file, not a folder")
    others = sorted(p.name for p in output.iterdir() if p.name not in {CLIPS_DIR, REJECTED_FILE}) \
        if output.is_dir() else []
    if others:
        raise ParamsError(f"--output {output} holds other files ({', '.join(others[:5])}); give a new or empty "
                          "folder, or the output of an earlier `mer ingest --adapter` to add to it")


def folder_source(adapter: str, root: Path, kind: str = "macro") -> DatasetSource:
    """A data set given on the command line rather than in params: named after its folder.

    Raises:
        FileNotFoundError: `root` is not a folder.
        ParamsError: the adapter or kind is unknown.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"source folder {root} does not exist")
    if not root.is_dir():
        raise FileNotFoundError(f"source {root} is a file, not a folder")
    name = re.sub(r"[^a-z0-9_]+", "_", root.resolve().name.lower()).strip("_") or "folder"
    try:
        return DatasetSource(name=name, adapter=adapter, root=root, kind=kind)
    except ValidationError as exc:
        raise ParamsError(f"cannot ingest {root} with adapter {adapter!r} as {kind}: "
                          + "; ".join(validation_problems(exc))) from None


def ingest_folder(source: DatasetSource, output: Path, settings: IngestParams | None = None,
                  executor: ExecutorParams = ExecutorParams()) -> tuple[DatasetSummary, list[Rejection]]:
    """Ingest one data set into `output/clips/<name>/` and `output/rejected.parquet` with the
    crop settings of `settings` (the defaults if None), keeping the other data sets an
    earlier run put there; returns its summary and its rejections.

    Raises:
        ParamsError: `output` holds anything but an earlier ingest's output.
    """
    check_ingest_output(output)
    settings = settings or IngestParams(datasets=[source])
    summary = ingest(settings.model_copy(update={"datasets": [source]}), Path(output),
                     keep_other_datasets=True, executor=executor)[source.name]
    return summary, [r for r in read_rejected(Path(output) / REJECTED_FILE) if r.dataset == source.name]
