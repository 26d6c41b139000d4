"""Data-stage figures on the default profile: wall time per stage, rows, ingest frames/s.

Runs synthesize → ingest → anonymize → validate in a temporary folder with the repo's
params.yaml (paths redirected), and prints one line per stage; then ingests the same files
through the other face front end (Haar box, or landmarks when params choose Haar) and
decodes them alone, to set ingest's frames/s against a raw OpenCV decode. Usage:
    python benchmarks/bench_data.py [--params params.yaml] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def redirect_paths(raw: dict, root: Path) -> dict:
    """params.yaml's paths (and the data set roots, which point into them) moved under
    `root`, so a benchmark leaves the workspace alone."""
    raw["paths"] = {key: str(root / value) for key, value in raw.get("paths", {}).items()}
    for source in raw["ingest"]["datasets"]:
        source["root"] = str(root / source["root"])
    raw["validate"]["data_docs"] = False
    return raw


def build_data(params, workers: int) -> tuple[dict[str, float], dict, dict, object]:
    """synthesize → ingest → anonymize with `params` (paths already redirected), each timed
    and printed as it ends. Returns (seconds per stage, synthesize's counts, ingest's
    summaries per data set, anonymize's report)."""
    from mer_core.data import anonymize as anon
    from mer_core.data.ingest import ingest
    from mer_core.data.store import CLIPS_DIR
    from mer_core.data.synthetic import synthesize

    os.environ.setdefault("MER_PSEUDONYM_KEY", "ab" * 32)
    timings = {}
    start = time.perf_counter()
    counts = synthesize(params.synthesize, params.paths.synthetic, workers=workers)
    timings["synthesize"] = time.perf_counter() - start
    print(f"synthesize  {timings['synthesize']:7.1f} s  micro clips {counts['micro']['clips']}, "
          f"macro videos {counts['macro']['clips']}", flush=True)

    start = time.perf_counter()
    summaries = ingest(params.ingest.model_copy(update={"workers": workers}), params.paths.interim)
    timings["ingest"] = time.perf_counter() - start
    frames = sum(s.frames_decoded for s in summaries.values())
    rows = sum(s.rows for s in summaries.values())
    front_end = f"{params.ingest.face_detector}, {params.ingest.alignment}"
    print(f"ingest ({front_end})  {timings['ingest']:7.1f} s  rows {rows}, rejected "
          f"{sum(s.rejected for s in summaries.values())}, frames decoded {frames}, "
          f"{frames / timings['ingest']:.0f} frames/s overall "
          + ", ".join(f"{n} {s.frames_per_second:.0f} frames/s" for n, s in summaries.items()), flush=True)

    start = time.perf_counter()
    key = anon.load_key(params.anonymize.key_env, params.anonymize.key_file)
    report = anon.anonymize(params.paths.interim / CLIPS_DIR, params.paths.processed / CLIPS_DIR, key,
                            True, workers)
    timings["anonymize"] = time.perf_counter() - start
    print(f"anonymize   {timings['anonymize']:7.1f} s  rows {report.rows}, subjects {report.subjects}", flush=True)
    return timings, counts, summaries, report


def _decode_clip(clip) -> int:
    """Decode what ingest decodes of one clip, nothing more: its sampled images, or its video
    front to back. Returns the frames decoded."""
    from mer_core.data.video import FrameReadError, VideoReader, read_image_sequence

    try:
        if clip.video is None:
            return len(read_image_sequence([path for _, path in clip.frames]))
        with VideoReader(clip.video) as reader:
            return sum(1 for _ in reader.frames())
    except FrameReadError:
        return 0


def raw_decode(params, workers: int) -> tuple[int, float]:
    """(frames, seconds) of decoding every clip of params' data sets with OpenCV alone, in
    `workers` processes as ingest does."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from mer_core.data.adapters import read_dataset

    start = time.perf_counter()
    clips = [clip for source in params.ingest.datasets for clip in read_dataset(
        source.adapter, source.name, source.root, annotation=source.annotation, fps=source.fps,
        frames_per_clip=params.ingest.frames_per_clip, labels=source.labels).clips]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        frames = sum(pool.map(_decode_clip, clips, chunksize=4))
    return frames, time.perf_counter() - start


def compare_front_ends(params, workers: int, root: Path) -> None:
    """Ingest frames/s of the other face front end and of a raw decode of the same files."""
    from mer_core.data.ingest import ingest

    other = ({"face_detector": "haar", "alignment": "box"} if params.ingest.face_detector == "hog"
             else {"face_detector": "hog", "alignment": "landmarks"})
    start = time.perf_counter()
    summaries = ingest(params.ingest.model_copy(update={"workers": workers, **other}), root / "interim_other")
    seconds = time.perf_counter() - start
    frames = sum(s.frames_decoded for s in summaries.values())
    print(f"ingest ({other['face_detector']}, {other['alignment']})  {seconds:7.1f} s  rows "
          f"{sum(s.rows for s in summaries.values())}, rejected {sum(s.rejected for s in summaries.values())}, "
          f"{frames / seconds:.0f} frames/s", flush=True)
    frames, seconds = raw_decode(params, workers)
    print(f"raw decode  {seconds:7.1f} s  frames {frames}, {frames / seconds:.0f} frames/s (OpenCV alone, "
          f"{workers} processes)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from mer_core.config import Params, apply_profile
    from mer_core.data.store import CLIPS_DIR
    from mer_core.data.validate import dataset_labels, validate_clips

    with tempfile.TemporaryDirectory() as tmp:
        raw = apply_profile(yaml.safe_load(args.params.read_text()), args.params)
        params = Params.model_validate(redirect_paths(raw, Path(tmp)))
        timings, *_ = build_data(params, args.workers)
        compare_front_ends(params, args.workers, Path(tmp))

        start = time.perf_counter()
        result = validate_clips(params.paths.processed / CLIPS_DIR, params.validate_,
                                dataset_labels(params.ingest.datasets))
        timings["validate"] = time.perf_counter() - start
        print(f"validate    {timings['validate']:7.1f} s  success {result.success}, rows {result.rows}")

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"total       {sum(timings.values()):7.1f} s  peak RSS of this process {peak:.0f} MiB")


if __name__ == "__main__":
    main()
