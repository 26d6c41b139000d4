"""Peak memory of ingest against video length: a short synthetic face video and one 10× longer.

Each video is ingested in a fresh process through the same code as `mer ingest --adapter
videos` (one worker, so no pool), and the process reports its own peak RSS
(`getrusage(...).ru_maxrss`) and the wall time. Ingest streams a video and holds only the
frames its windows need, so the two peaks should match although the second video is ten
times longer; the "all frames" column is what loading every frame would have cost. Usage:
    python benchmarks/bench_ingest_memory.py [--params params.yaml] [--seconds 4] [--factor 10] [--size 384]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FPS = 25.0


def render_videos(folder: Path, seconds: float, factor: int, size: int) -> dict[str, tuple[Path, int]]:
    """A short face video and one `factor` times longer (the same clip looped), as MJPG .avi."""
    import cv2
    import numpy as np

    from mer_core.config import Nuisance
    from mer_core.data.synthetic import (
        ClipSpec,
        FaceRenderer,
        render_clip,
        sample_identity,
    )

    n = round(seconds * FPS)
    renderer = FaceRenderer(sample_identity(np.random.default_rng(5)), size)
    spec = ClipSpec("happiness", (6, 12), np.ones(2), 0.9, n, n // 3, n // 2, 2 * n // 3, seed=5)
    clip = render_clip(renderer, spec, FPS, Nuisance())
    videos = {}
    for name, repeats in (("short", 1), (f"{factor}x longer", factor)):
        path = folder / name.replace(" ", "_") / "face.avi"
        path.parent.mkdir(parents=True)
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (size, size))
        for _ in range(repeats):
            for frame in clip:
                writer.write(frame)
        writer.release()
        videos[name] = (path.parent, n * repeats)
    return videos


def ingest_in_this_process(source: Path, out: Path, params_file: Path) -> None:
    """The child: ingest one folder, then print its summary, wall time and peak RSS as JSON."""
    from mer_core.config import IngestParams, load_params
    from mer_core.data.ingest import folder_source, ingest_folder

    dataset = folder_source("videos", source)
    settings = load_params(params_file).ingest if params_file.exists() else IngestParams(datasets=[dataset])
    start = time.perf_counter()
    summary, rejected = ingest_folder(dataset, out, settings.model_copy(update={"workers": 1}))
    seconds = time.perf_counter() - start
    peak_kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                   resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # Linux: KiB
    print(json.dumps({"rows": summary.rows, "rejected": len(rejected), "frames_decoded": summary.frames_decoded,
                      "ingest_s": seconds, "peak_rss_mib": peak_kib / 1024}))


def measure(source: Path, out: Path, params_file: Path) -> tuple[dict, float]:
    start = time.perf_counter()
    child = subprocess.run([sys.executable, __file__, "--child", str(source), str(out), "--params", str(params_file)],
                           capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise SystemExit(f"ingest of {source} failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1]), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--seconds", type=float, default=4.0, help="length of the short video")
    parser.add_argument("--factor", type=int, default=10, help="how many times longer the long video is")
    parser.add_argument("--size", type=int, default=384, help="frame width and height in pixels")
    parser.add_argument("--child", nargs=2, type=Path, metavar=("SOURCE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        ingest_in_this_process(*args.child, args.params)
        return

    with tempfile.TemporaryDirectory() as tmp:
        videos = render_videos(Path(tmp), args.seconds, args.factor, args.size)
        print(f"{'video':12s} {'frames':>7s} {'decoded':>8s} {'all frames':>11s} {'peak RSS':>9s} {'ingest':>8s} "
              f"{'wall':>7s}  rows")
        for name, (source, frames) in videos.items():
            result, wall = measure(source, Path(tmp) / f"out_{source.name}", args.params.resolve())
            all_frames_mib = frames * args.size * args.size * 3 / 2**20
            print(f"{name:12s} {frames:7d} {result['frames_decoded']:8d} {all_frames_mib:7.0f} MiB {result['peak_rss_mib']:5.0f} MiB "
                  f"{result['ingest_s']:6.1f} s {wall:5.1f} s  {result['rows']}")


if __name__ == "__main__":
    main()
