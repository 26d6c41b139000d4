"""Ingestion: raw layouts → decoded, face-cropped, frame-sampled clip table shards.

Adapters say what the clips are; this module reads their pixels (in a process pool),
finds the face, crops it and writes the rows. Anything that fails — an unreadable
file, no face, a bad sheet row — goes to the rejected table and the run carries on.
"""

from __future__ import annotations

import logging
import multiprocessing
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from mer_core.config import DatasetSource, IngestParams
from mer_core.data.adapters import RawClip, macro_windows, read_dataset
from mer_core.data.faces import FaceBox, FaceDetector, NoFaceError, crop_face, stabilize_clip
from mer_core.data.store import (
    Rejection,
    ShardWriter,
    clip_schema,
    replace_directory,
    staging_dir,
    write_rejected,
)
from mer_core.data.video import FrameReadError, VideoReader, count_video_frames, read_image, read_video_frames
from mer_core.evaluation.protocols import composite_label

log = logging.getLogger(__name__)

CLIPS_DIR = "clips"
REJECTED_FILE = "rejected.parquet"


@dataclass(frozen=True)
class CropSettings:
    crop_size: int
    frames_per_clip: int
    window_stride: int
    windows_per_video: int
    face_margin: float
    min_face_px: int
    stabilize: bool = True

    @classmethod
    def from_params(cls, params: IngestParams) -> "CropSettings":
        return cls(params.crop_size, params.frames_per_clip, params.window_stride, params.windows_per_video,
                   params.face_margin, params.min_face_px, params.stabilize)


@dataclass(frozen=True)
class ClipJob:
    dataset: str
    adapter: str
    kind: str
    clip: RawClip
    settings: CropSettings


@dataclass
class ClipOutcome:
    rows: list[dict] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    frames_decoded: int = 0


@lru_cache(maxsize=4)
def _detector(min_face_px: int) -> FaceDetector:
    return FaceDetector(min_face_px)


def _init_worker() -> None:
    # One OpenCV thread per worker process: the pool already uses every core.
    cv2.setNumThreads(1)


def decode_windows(clip: RawClip, settings: CropSettings) -> tuple[list[tuple[list[int], list[np.ndarray]]], int, float | None]:
    """The clip's sampled frames as windows of (frame numbers, BGR frames).

    Returns:
        (windows, frames decoded, fps read from the container or None).
    """
    if clip.video is None:
        frames = [read_image(path) for _, path in clip.frames]
        return [([n for n, _ in clip.frames], frames)], len(frames), None
    kept, decoded, fps, windows = _read_video_windows(clip, settings, length_hint=None)
    return [(w, [kept[n] for n in w]) for w in windows], decoded, fps


def _read_video_windows(clip: RawClip, settings: CropSettings, length_hint: int | None):
    if length_hint is None:
        with VideoReader(clip.video) as reader:
            length_hint = reader.frame_count_hint
        if length_hint <= 0:
            length_hint, _ = count_video_frames(clip.video)
    windows = macro_windows(length_hint, settings.frames_per_clip, settings.window_stride,
                            settings.windows_per_video, clip.onset, clip.offset)
    if not windows:
        raise FrameReadError(f"{clip.item}: only {length_hint} frame(s), too short for one window "
                             f"of {settings.frames_per_clip}")
    wanted = {n for w in windows for n in w}
    kept, decoded, fps = read_video_frames(clip.video, wanted)
    if wanted - kept.keys():
        # The container promised more frames than the stream holds (truncated file): re-plan.
        actual, _ = count_video_frames(clip.video)
        if actual >= length_hint:
            raise FrameReadError(f"{clip.item}: frames {sorted(wanted - kept.keys())[:5]} could not be decoded")
        return _read_video_windows(clip, settings, length_hint=actual)
    return kept, decoded, fps, windows


def _detect(frames: list[np.ndarray], min_face_px: int) -> FaceBox:
    """Face on the first frame (the onset), else on the middle one."""
    detector = _detector(min_face_px)
    try:
        return detector.detect(frames[0])
    except NoFaceError:
        return detector.detect(frames[len(frames) // 2])


def _consistent_shape(frames: list[np.ndarray], item: str) -> None:
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise FrameReadError(f"{item}: frames differ in size {sorted(shapes)}")


def align_window(frames: list[np.ndarray], numbers: list[int], settings: CropSettings,
                 where: str) -> tuple[FaceBox, np.ndarray]:
    """Detect the face once, crop every frame around it and register the crops to the
    first: BGR frames → (box, (T, S, S, 3) uint8 RGB). Ingest and `mer predict` share it.

    Raises:
        FrameReadError: the frames differ in size.
        NoFaceError: no face on the onset or the middle frame; the message names them.
    """
    _consistent_shape(frames, where)
    try:
        box = _detect(frames, settings.min_face_px)
    except NoFaceError:
        raise NoFaceError(f"no face detected in frames {numbers[0]} or {numbers[len(numbers) // 2]}") from None
    crops = np.stack([crop_face(f, box, settings.crop_size, settings.face_margin) for f in frames])
    if settings.stabilize:
        crops = stabilize_clip(crops, settings.face_margin)
    return box, crops


def process_clip(job: ClipJob) -> ClipOutcome:
    """Decode, detect, crop: one RawClip → clip rows (one per window) and rejections."""
    clip, s = job.clip, job.settings
    outcome = ClipOutcome()
    try:
        windows, outcome.frames_decoded, container_fps = decode_windows(clip, s)
    except FrameReadError as exc:
        outcome.rejections.append(Rejection(job.dataset, clip.item, str(exc).replace(str(clip.video), clip.item)))
        return outcome
    for k, (numbers, frames) in enumerate(windows):
        where = clip.item if len(windows) == 1 else f"{clip.item} window {k}"
        try:
            box, crops = align_window(frames, numbers, s, where)
        except (FrameReadError, NoFaceError) as exc:
            outcome.rejections.append(Rejection(job.dataset, where, str(exc)))
            continue
        outcome.rows.append(_row(job, where, numbers, box, crops, clip.fps or container_fps))
    return outcome


def _row(job: ClipJob, where: str, numbers: list[int], box: FaceBox, crops: np.ndarray, fps: float | None) -> dict:
    clip = job.clip
    return {
        "clip_id": f"{job.dataset}/{where}",
        "dataset": job.dataset,
        "subject": clip.subject,
        "kind": job.kind,
        "label": clip.label,
        "label3": composite_label(job.adapter, clip.label),
        "onset": clip.onset,
        "apex": clip.apex,
        "offset": clip.offset,
        "fps": fps,
        "action_units": clip.action_units,
        "frame_indices": numbers,
        "face_box": [box.x, box.y, box.w, box.h],
        "face_score": box.score,
        "source_path": clip.item,
        "frames": crops,  # (T, S, S, 3) RGB
    }


@dataclass
class DatasetSummary:
    clips_listed: int = 0
    rows: int = 0
    rejected: int = 0
    frames_decoded: int = 0
    seconds: float = 0.0

    @property
    def frames_per_second(self) -> float:
        return self.frames_decoded / self.seconds if self.seconds else 0.0


def _ingest_dataset(source: DatasetSource, params: IngestParams, staged: Path, pool) -> tuple[DatasetSummary, list[Rejection]]:
    start = time.perf_counter()
    listing = read_dataset(source.adapter, source.name, source.root, annotation=source.annotation,
                           fps=source.fps, frames_per_clip=params.frames_per_clip, labels=source.labels)
    rejections = list(listing.rejections)
    summary = DatasetSummary(clips_listed=len(listing.clips))
    writer = ShardWriter(staged / source.name, clip_schema(params.frames_per_clip, params.crop_size),
                         params.rows_per_shard, params.row_group_size)
    settings = CropSettings.from_params(params)
    jobs = [ClipJob(source.name, source.adapter, source.kind, clip, settings) for clip in listing.clips]
    results = pool.map(process_clip, jobs, chunksize=4) if pool else map(process_clip, jobs)
    for outcome in tqdm(results, total=len(jobs), desc=f"ingest {source.name}", unit="clip", leave=False, disable=None):
        for row in outcome.rows:
            writer.add(row)
        rejections.extend(outcome.rejections)
        summary.frames_decoded += outcome.frames_decoded
    writer.flush()
    summary.rows, summary.rejected = writer.rows_written, len(rejections)
    summary.seconds = time.perf_counter() - start
    log.info("%s: %d clips listed → %d rows, %d rejected, %.0f frames/s", source.name, summary.clips_listed,
             summary.rows, summary.rejected, summary.frames_per_second)
    return summary, rejections


def ingest(params: IngestParams, sources: list[DatasetSource] | None = None) -> dict[str, DatasetSummary]:
    """Ingest every data set into `out_dir/clips/<name>/` and `out_dir/rejected.parquet`.

    The clips folder is built beside the old one and swapped in at the end, so an
    interrupted run leaves the previous output intact.
    """
    sources = params.datasets if sources is None else sources
    out_dir = Path(params.out_dir)
    staged = staging_dir(out_dir / CLIPS_DIR)
    summaries, rejections = {}, []
    try:
        # Spawn, not fork: OpenCV's thread pool deadlocks in a forked child.
        pool = ProcessPoolExecutor(params.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker) if params.workers > 1 else None
        try:
            for source in sources:
                summaries[source.name], rejected = _ingest_dataset(source, params, staged, pool)
                rejections.extend(rejected)
        finally:
            if pool:
                pool.shutdown()
        write_rejected(rejections, out_dir / REJECTED_FILE)
        replace_directory(staged, out_dir / CLIPS_DIR)
    finally:
        if staged.exists():
            shutil.rmtree(staged)
    return summaries
