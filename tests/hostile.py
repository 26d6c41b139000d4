"""A hostile corpus: the tiny synthetic set with bad files planted in the real layouts —
zero-byte, truncated and non-video files with video names, frames of another size, mode or
depth, missing and unreadable frames, a very long video — and what ingest must make of each.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mer_core.config import Nuisance
from mer_core.data.adapters import read_dataset
from mer_core.data.synthetic import (
    MACRO_MANIFEST_NAME,
    ClipSpec,
    FaceRenderer,
    render_clip,
    sample_identity,
    write_video,
)
from mer_core.data.video import VideoReader

LONG_VIDEO_FRAMES = 400


def render_face_video(path: Path, n_frames: int, seed: int, size: int = 128, fps: float = 25.0) -> Path:
    """A synthetic face smiling once, with the generator's nuisances, as an MJPG .avi."""
    rng = np.random.default_rng(seed)
    renderer = FaceRenderer(sample_identity(rng), size)
    spec = ClipSpec("happiness", (6, 12), np.ones(2), 0.9, n_frames, n_frames // 3, n_frames // 2,
                    2 * n_frames // 3, seed)
    write_video(path, render_clip(renderer, spec, fps, Nuisance()), fps, "MJPG")
    return path


def first_half(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


@dataclass
class HostileCorpus:
    """A copy of the tiny synthetic set with bad items planted, and what ingest should make of it."""

    micro: Path
    macro: Path
    rejected: dict[str, list[str]] = field(default_factory=dict)  # item → words its reason must hold
    good: set[str] = field(default_factory=set)  # items that must arrive as clip rows
    mixed_modes: str = ""  # the clip whose frames are grey, BGRA and 16-bit at once
    colour_modes: str = ""  # the clip whose frames are BGRA and 16-bit colour


def _save_png(path: Path, image: np.ndarray) -> None:
    path.with_suffix(".jpg").unlink()
    assert cv2.imwrite(str(path.with_suffix(".png")), image)


def _plant_micro(corpus: HostileCorpus, frames_per_clip: int) -> None:
    """CASME II layout: frames of another mode, depth or size, missing, empty, cut off or not images."""
    listing = read_dataset("casme2", "hostile_micro", corpus.micro, annotation=None, fps=50,
                           frames_per_clip=frames_per_clip)
    clips = listing.clips
    assert len(clips) >= 9, "the tiny profile renders 12 micro clips"

    def sampled(k: int, i: int) -> Path:
        return clips[k].frames[i][1]

    mixed = clips[0]
    grey = cv2.cvtColor(cv2.imread(str(sampled(0, 0))), cv2.COLOR_BGR2GRAY)
    _save_png(sampled(0, 0), grey)
    _save_png(sampled(0, 1), cv2.cvtColor(cv2.imread(str(sampled(0, 1))), cv2.COLOR_BGR2BGRA))
    _save_png(sampled(0, 2), cv2.imread(str(sampled(0, 2))).astype(np.uint16) * 257)
    corpus.mixed_modes = mixed.item

    _save_png(sampled(1, 0), cv2.cvtColor(cv2.imread(str(sampled(1, 0))), cv2.COLOR_BGR2BGRA))
    _save_png(sampled(1, -1), cv2.imread(str(sampled(1, -1))).astype(np.uint16) * 257)
    corpus.colour_modes = clips[1].item

    odd = sampled(2, 1)
    cv2.imwrite(str(odd), cv2.resize(cv2.imread(str(odd)), (96, 128)))
    corpus.rejected[clips[2].item] = ["frames differ in size", f"{odd.name} is 96×128", "others are 128×128"]

    missing_number, missing = clips[3].frames[2]
    missing.unlink()
    sheet_row = _sheet_row_of(corpus.micro, clips[3].item)
    corpus.rejected[sheet_row] = [f"frame(s) [{missing_number}] missing", clips[3].item]

    sampled(4, 1).write_bytes(b"")
    corpus.rejected[clips[4].item] = [f"{clips[4].item}/{sampled(4, 1).name}", "empty file"]

    sampled(5, 0).write_text("not an image at all")
    corpus.rejected[clips[5].item] = [f"{clips[5].item}/{sampled(5, 0).name}", "not a readable image"]

    first_half(sampled(6, 3), sampled(6, 3))
    corpus.rejected[clips[6].item] = [f"{clips[6].item}/{sampled(6, 3).name}", "truncated JPEG"]

    # A gap in the sequence where no sampled frame lies costs nothing: only needed frames are read.
    needed = {n for n, _ in clips[7].frames}
    folder = sampled(7, 0).parent
    spare = next(p for p in sorted(folder.glob("img*.jpg")) if int(p.stem[3:]) not in needed)
    spare.unlink()

    corpus.good |= {c.item for c in clips} - set(corpus.rejected) - {clips[3].item}


def _sheet_row_of(micro: Path, item: str) -> str:
    """The rejected-table name of the sheet row describing `item` (e.g. `sub02/EP01_05`)."""
    from openpyxl import load_workbook

    sheet = next(micro.glob("CASME2-coding*.xlsx"))
    subject, filename = item.split("/")
    for number, row in enumerate(load_workbook(sheet).active.iter_rows(values_only=True), start=1):
        if row[1] == filename and f"sub{int(row[0]):02d}" == subject:
            return f"{sheet.name} row {number}"
    raise AssertionError(f"{item} is not in {sheet}")


def _plant_macro(corpus: HostileCorpus, scratch: Path) -> None:
    """Video folder: empty, text, cut-off and very long files with video names."""
    videos = corpus.macro / "videos"
    long = render_face_video(videos / "long.avi", LONG_VIDEO_FRAMES, seed=11)
    first_half(long, videos / "truncated.avi")
    first_half(long, videos / "truncated_labelled.avi")
    mp4 = scratch / "real.mp4"
    writer = cv2.VideoWriter(str(mp4), cv2.VideoWriter_fourcc(*"mp4v"), 25, (128, 128))
    for number, frame in VideoReader(long).frames():
        if number == 40:
            break
        writer.write(frame)
    writer.release()
    first_half(mp4, videos / "truncated.mp4")
    (videos / "zero.mp4").write_bytes(b"")
    (videos / "zero.avi").write_bytes(b"")
    (videos / "text.mp4").write_text("this is not a video\n")
    (videos / "text.avi").write_text("neither is this\n")
    rows = ["videos/long.avi,actor090,happiness,,,,", "videos/truncated.avi,actor091,happiness,,,,",
            "videos/truncated_labelled.avi,actor092,happiness,250,300,350,12",
            "videos/truncated.mp4,actor093,happiness,,,,", "videos/zero.mp4,actor094,anger,,,,",
            "videos/zero.avi,actor094,anger,0,1,2,4", "videos/text.mp4,actor095,anger,,,,",
            "videos/text.avi,actor095,anger,,,,"]
    with (corpus.macro / MACRO_MANIFEST_NAME).open("a") as handle:
        handle.write("\n".join(rows) + "\n")
    corpus.rejected.update({
        "videos/zero.mp4": ["videos/zero.mp4", "empty file"],
        "videos/zero.avi": ["videos/zero.avi", "empty file"],
        "videos/text.mp4": ["videos/text.mp4", "not a readable video"],
        "videos/text.avi": ["videos/text.avi", "not a readable video"],
        "videos/truncated.mp4": ["videos/truncated.mp4", "not a readable video"],
        "videos/truncated_labelled.avi": ["videos/truncated_labelled.avi", "annotated frame 350",
                                          f"container lists {LONG_VIDEO_FRAMES} frames", "truncated"],
    })
    listed = [line.split(",")[0] for line in (corpus.macro / MACRO_MANIFEST_NAME).read_text().splitlines()[1:]]
    corpus.good |= set(listed) - set(corpus.rejected)


def build_corpus(synthetic: Path, root: Path, scratch: Path, frames_per_clip: int) -> HostileCorpus:
    """A copy of `synthetic` under `root` with every bad item planted."""
    shutil.copytree(synthetic, root, dirs_exist_ok=True)
    built = HostileCorpus(micro=root / "micro", macro=root / "macro")
    _plant_micro(built, frames_per_clip)
    _plant_macro(built, scratch)
    return built
