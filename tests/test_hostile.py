"""Hostile input and faults, through the real ingest stack.

A corpus of bad files in the real layouts — zero-byte, truncated and non-video files
with video names, frames of another size, mode or depth, missing and unreadable frames,
a very long video — goes through `ingest` beside good items. Nothing may crash, every
bad item must land in the rejected table with a reason naming it, the good items must
still arrive, and no output may be half-written, not even when the writer is killed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from mer_core.config import Nuisance
from mer_core.data.adapters import read_dataset
from mer_core.data.ingest import (
    CLIPS_DIR,
    REJECTED_FILE,
    CropSettings,
    align_window,
    ingest,
)
from mer_core.data.store import frames_to_numpy, read_clips
from mer_core.data.synthetic import (
    ACTION_UNITS,
    MACRO_MANIFEST_NAME,
    ClipSpec,
    FaceRenderer,
    render_clip,
    sample_identity,
    write_video,
)
from mer_core.data.video import FrameReadError, VideoReader, count_video_frames
from tests.conftest import REPO, tiny_params

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


@pytest.fixture(scope="module")
def corpus(tiny_synthetic, tiny_config, tmp_path_factory) -> HostileCorpus:
    root = tmp_path_factory.mktemp("hostile_corpus")
    shutil.copytree(tiny_synthetic, root, dirs_exist_ok=True)
    built = HostileCorpus(micro=root / "micro", macro=root / "macro")
    _plant_micro(built, tiny_config.ingest.frames_per_clip)
    _plant_macro(built, tmp_path_factory.mktemp("scratch"))
    return built


def _sources(tiny_config, corpus: HostileCorpus):
    micro, macro = tiny_config.ingest.datasets
    return [micro.model_copy(update={"root": corpus.micro}), macro.model_copy(update={"root": corpus.macro})]


@pytest.fixture(scope="module")
def ingested(corpus, tiny_config, tmp_path_factory):
    """The corpus through `ingest` exactly as the stage runs it: a spawn pool of 2 workers."""
    out = tmp_path_factory.mktemp("hostile_out")
    params = tiny_config.ingest.model_copy(update={"out_dir": out, "workers": 2})
    summaries = ingest(params, _sources(tiny_config, corpus))
    return out, summaries


def _clip_items(table) -> set[str]:
    return {path.split(" window ")[0] for path in table["source_path"].to_pylist()}


def test_every_bad_item_is_rejected_with_a_reason_naming_it(corpus, ingested):
    out, summaries = ingested
    rejected = {r["item"]: r["reason"] for r in pq.read_table(out / REJECTED_FILE).to_pylist()}
    assert set(rejected) == set(corpus.rejected), "exactly the planted items are rejected"
    for item, words in corpus.rejected.items():
        for word in words:
            assert word in rejected[item], f"{item}: {rejected[item]!r} lacks {word!r}"
    assert sum(s.rejected for s in summaries.values()) == len(rejected)
    assert not any(str(corpus.micro.parent) in reason for reason in rejected.values()), "no machine paths"


def test_good_items_in_the_same_run_still_arrive(corpus, ingested, tiny_config):
    out, summaries = ingested
    table = read_clips(out / CLIPS_DIR)
    assert _clip_items(table) == corpus.good
    windows = tiny_config.ingest.windows_per_video
    long_rows = [r for r in table["source_path"].to_pylist() if r.startswith("videos/long.avi")]
    assert len(long_rows) == windows, "the very long video gives its windows like any other"
    assert sum(s.rows for s in summaries.values()) == table.num_rows


def test_truncated_video_uses_only_its_intact_frames(corpus, ingested):
    out, _ = ingested
    table = read_clips(out / CLIPS_DIR).drop_columns(["frames"]).to_pylist()
    rows = [r for r in table if r["source_path"].startswith("videos/truncated.avi")]
    decodable, _ = count_video_frames(corpus.macro / "videos" / "truncated.avi")
    assert 0 < decodable < LONG_VIDEO_FRAMES
    # The last frame that decodes may be cut off part-way (MJPEG): it is never used.
    assert rows and max(max(r["frame_indices"]) for r in rows) <= decodable - 2


def test_frame_modes_and_depths_are_normalised_not_rejected(corpus, ingested):
    out, _ = ingested
    table = read_clips(out / CLIPS_DIR)
    by_item = dict(zip(table["source_path"].to_pylist(), frames_to_numpy(table["frames"])))
    mixed = by_item[corpus.mixed_modes].astype(int)  # (T, S, S, 3)
    assert mixed.dtype.kind == "i" and mixed.shape[-1] == 3
    # One grey frame turns the whole clip grey, so no frame differs from the next in colour only.
    assert np.abs(mixed[..., 0] - mixed[..., 1]).max() <= 1 and np.abs(mixed[..., 1] - mixed[..., 2]).max() <= 1
    colour = by_item[corpus.colour_modes].astype(int)
    assert np.abs(colour[..., 0] - colour[..., 2]).mean() > 5, "BGRA and 16-bit frames keep their colour"


def test_outputs_are_complete_files_only(ingested):
    out, _ = ingested
    leftovers = [p for p in Path(out).rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert not leftovers
    for shard in (Path(out) / CLIPS_DIR).rglob("*.parquet"):
        assert pq.ParquetFile(shard).metadata.num_rows > 0


def test_frames_of_another_size_in_a_video_window_are_named():
    frames = [np.zeros((120, 160, 3), np.uint8)] * 3 + [np.zeros((60, 80, 3), np.uint8)]
    settings = CropSettings(64, 4, 1, 1, 0.15, 48)
    with pytest.raises(FrameReadError, match=r"clip\.avi window 0: frames differ in size: frame 13 is 80×60 "
                                             r"where the others are 160×120"):
        align_window(frames, [10, 11, 12, 13], settings, "clip.avi window 0")


def test_a_long_video_streams_in_bounded_memory(corpus):
    """Four windows spread over 400 frames: only the frames of the window being filled are held."""
    groups = [[start + 2 * k for k in range(4)] for start in (0, 130, 260, 390)]
    frame_bytes = 128 * 128 * 3
    tracemalloc.start()
    try:
        with VideoReader(corpus.macro / "videos" / "long.avi") as reader:
            seen = [k for k, frames in reader.frame_groups(groups)]
            assert reader.frames_read == max(groups[-1]) + 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seen == [0, 1, 2, 3]
    assert peak < 20 * frame_bytes, f"peak {peak / frame_bytes:.0f} frames held while streaming 400"


# --- faults: a stage killed or failing mid-write ------------------------------------------

KILL_WHILE_WRITING_A_SHARD = """
import os, signal, sys
import pyarrow.parquet as pq
from mer_core.config import IngestParams
from mer_core.data.ingest import ingest

write_table = pq.write_table

def write_half_then_die(table, where, **kwargs):
    write_table(table, where, **kwargs)
    with open(where, "r+b") as handle:
        handle.truncate(os.path.getsize(where) // 2)
    os.kill(os.getpid(), signal.SIGKILL)

pq.write_table = write_half_then_die
ingest(IngestParams.model_validate_json(sys.argv[1]))
"""


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def micro_params(tiny_synthetic, tiny_config, tmp_path):
    micro = tiny_config.ingest.datasets[0]
    return tiny_config.ingest.model_copy(update={"out_dir": tmp_path / "interim", "datasets": [micro], "workers": 1})


def test_a_killed_ingest_leaves_the_previous_output_and_reruns_cleanly(micro_params):
    out = Path(micro_params.out_dir)
    ingest(micro_params)
    before = _snapshot(out)
    clip_ids = read_clips(out / CLIPS_DIR)["clip_id"].to_pylist()
    child = subprocess.run([sys.executable, "-c", KILL_WHILE_WRITING_A_SHARD, micro_params.model_dump_json()],
                           cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert child.returncode == -9, child.stderr[-2000:]
    leftovers = [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert leftovers, "the killed run died inside its staging folder"
    assert {k: v for k, v in _snapshot(out).items() if not k.startswith(".")} == before, "previous output intact"

    ingest(micro_params)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")], "the re-run cleared the killed run's leftovers"
    assert _snapshot(out).keys() == before.keys()
    assert read_clips(out / CLIPS_DIR)["clip_id"].to_pylist() == clip_ids


def test_an_ingest_failing_mid_write_leaves_the_previous_output(micro_params, monkeypatch):
    from mer_core.data import store

    out = Path(micro_params.out_dir)
    ingest(micro_params)
    before = _snapshot(out)
    write_table = store.pq.write_table

    def write_half_then_fail(table, where, **kwargs):
        write_table(table, where, **kwargs)
        Path(where).write_bytes(Path(where).read_bytes()[:100])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.pq, "write_table", write_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        ingest(micro_params)
    assert _snapshot(out) == before
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


# --- the command line: `mer ingest --adapter` and `mer predict` on hostile files -------------

@pytest.fixture(scope="module")
def params_file(tiny_root, tmp_path_factory) -> Path:
    raw = tiny_params(tiny_root)
    raw["ingest"]["workers"] = 1
    path = tmp_path_factory.mktemp("cli") / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _mer(*args: str):
    from mer_core.cli import app

    return CliRunner().invoke(app, list(args))


def _exits_cleanly(result, code: int) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)


def test_mer_ingest_reads_an_ad_hoc_folder_and_reports_rejects(params_file, tiny_config, tmp_path):
    source = tmp_path / "My Videos"
    source.mkdir()
    render_face_video(source / "face.avi", 30, seed=3)
    (source / "broken.mp4").write_text("not a video")
    out = tmp_path / "out"
    result = _mer("ingest", "--adapter", "videos", "--source", str(source), "--output", str(out),
                  "--params", str(params_file))
    _exits_cleanly(result, 0)
    assert "2 item(s) listed" in result.output and "1 rejected" in result.output
    assert "broken.mp4: not a readable video" in result.output
    table = read_clips(out / CLIPS_DIR / "my_videos")
    assert set(table["subject"].to_pylist()) == {"face"} and set(table["label"].to_pylist()) == {None}
    assert table.num_rows == tiny_config.ingest.windows_per_video
    assert [r["item"] for r in pq.read_table(out / REJECTED_FILE).to_pylist()] == ["broken.mp4"]


@pytest.mark.parametrize("plant, message", [
    (None, "does not exist"),
    (lambda folder: None, "found nothing for adapter videos"),
    (lambda folder: (folder / "a.avi").write_bytes(b""), "nothing could be read"),
])
def test_mer_ingest_fails_clearly_when_nothing_can_be_read(params_file, tmp_path, plant, message):
    source = tmp_path / "source"
    if plant is not None:
        source.mkdir()
        plant(source)
    result = _mer("ingest", "--adapter", "videos", "--source", str(source), "--output", str(tmp_path / "out"),
                  "--params", str(params_file))
    _exits_cleanly(result, 1)
    assert message in result.output and str(source) in result.output


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained MIACNet saved as `finetune` saves its final model: enough to run `mer predict`."""
    from mer_core.cli import app

    if "predict" not in {c.name or c.callback.__name__ for c in app.registered_commands}:
        pytest.skip("`mer predict` is not there yet")
    import torch

    from mer_core.models.miacnet import build_miacnet

    torch.manual_seed(0)
    model = build_miacnet("vit_mini_patch8_64", 3)
    path = tmp_path_factory.mktemp("model") / "final.pt"
    torch.save({"state_dict": model.state_dict(), "encoder": "vit_mini_patch8_64", "variant": "scratch",
                "classes": ["negative", "positive", "surprise"], "img_size": 64, "label_column": "label3"}, path)
    return path


@pytest.mark.parametrize("name", ["zero.mp4", "zero.avi", "text.mp4", "text.avi", "truncated.mp4"])
def test_mer_predict_refuses_unreadable_videos_clearly(corpus, tiny_model, params_file, name):
    result = _mer("predict", str(corpus.macro / "videos" / name), "--model", str(tiny_model),
                  "--params", str(params_file))
    _exits_cleanly(result, 1)
    assert name in result.output and ("empty file" in result.output or "not a readable video" in result.output)


@pytest.mark.parametrize("name", ["long.avi", "truncated.avi"])
def test_mer_predict_scores_long_and_cut_off_videos(corpus, tiny_model, params_file, name):
    result = _mer("predict", str(corpus.macro / "videos" / name), "--model", str(tiny_model),
                  "--params", str(params_file))
    _exits_cleanly(result, 0)
    assert json.loads(result.stdout)["windows"], result.output


# --- every image-sequence adapter: the same damage in each published layout ---------------

def _png_bytes(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


def _mixed_modes(frames: list[Path], face: np.ndarray) -> Path:
    # PNG bytes under the layout's own file name: decoders go by content, and only PNG
    # holds alpha and 16 bits in every layout's extension.
    frames[0].write_bytes(_png_bytes(cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)))
    frames[1].write_bytes(_png_bytes(cv2.cvtColor(face, cv2.COLOR_BGR2BGRA)))
    frames[2].write_bytes(_png_bytes(face.astype(np.uint16) * 257))
    return frames[0]


def _damage(index: int, write: Callable[[Path, np.ndarray], object]) -> Callable[[list[Path], np.ndarray], Path]:
    """A planter that rewrites the clip's `index`-th sampled frame with `write(path, face)`."""
    def plant(frames: list[Path], face: np.ndarray) -> Path:
        write(frames[index], face)
        return frames[index]
    return plant


# damage → (planter returning the damaged file, pattern its rejection must match; None: a row arrives)
FRAME_DAMAGE = {
    "zero_byte": (_damage(1, lambda path, face: path.write_bytes(b"")), "empty file"),
    "not_an_image": (_damage(2, lambda path, face: path.write_text("just text")), "not a readable image"),
    "cut_in_half": (_damage(1, lambda path, face: first_half(path, path)), "not a readable image|truncated JPEG"),
    "other_size": (_damage(3, lambda path, face: path.write_bytes(_png_bytes(cv2.resize(face, (96, 128))))),
                   "frames differ in size"),
    "mixed_modes": (_mixed_modes, None),
}


@pytest.fixture(scope="module")
def face_frame() -> np.ndarray:
    """One rendered face (128², BGR) that the detector finds."""
    return FaceRenderer(sample_identity(np.random.default_rng(3)), 128).render(np.zeros((len(ACTION_UNITS), 2)))


def _one_clip_with_faces(adapter: str, root: Path, face: np.ndarray) -> tuple[Path, dict, list[Path]]:
    """The adapter's one-clip fixture with every frame a face; returns its root, the
    read_dataset options and the clip's sampled frame files."""
    from datasets_fixtures import ONE_CLIP_TREES

    build, options = ONE_CLIP_TREES[adapter]
    data_root = build(root)
    for image in root.rglob("*"):
        if image.suffix.lower() in {".jpg", ".png", ".bmp"}:
            assert cv2.imwrite(str(image), face)
    listing = read_dataset(adapter, adapter, data_root, annotation=options.get("annotation"), fps=options.get("fps"),
                           frames_per_clip=4)
    assert len(listing.clips) == 1 and not listing.rejections
    return data_root, options, [path for _, path in listing.clips[0].frames]


def _adapters_with_fixtures() -> list[str]:
    try:
        from datasets_fixtures import ONE_CLIP_TREES
    except ImportError:  # the fixtures module comes with the adapters
        return ["casme2"]
    return sorted(ONE_CLIP_TREES)


@pytest.mark.parametrize("adapter", _adapters_with_fixtures())
def test_damaged_frames_in_every_layout_are_rejected_by_name(adapter, face_frame, tmp_path):
    from mer_core.config import DatasetSource, IngestParams

    sources, damaged = [], {}
    for damage, (plant, _) in FRAME_DAMAGE.items():
        root, options, frames = _one_clip_with_faces(adapter, tmp_path / damage, face_frame)
        damaged[damage] = plant(frames, face_frame)
        sources.append(DatasetSource(name=damage, adapter=adapter, root=root, kind="micro",
                                     annotation=options.get("annotation"), fps=options.get("fps")))
    params = IngestParams(datasets=sources, out_dir=tmp_path / "interim", crop_size=32, frames_per_clip=4,
                          workers=1, rows_per_shard=8, row_group_size=4)
    summaries = ingest(params)
    rejected = {r["dataset"]: r for r in pq.read_table(tmp_path / "interim" / REJECTED_FILE).to_pylist()}
    for damage, (_, words) in FRAME_DAMAGE.items():
        if words is None:
            assert summaries[damage].rows == 1 and damage not in rejected, rejected.get(damage)
            continue
        assert summaries[damage].rows == 0, f"{adapter} {damage}: a damaged clip gave a row"
        reason = rejected[damage]["reason"]
        assert re.search(words, reason) and damaged[damage].name in reason, f"{adapter} {damage}: {reason!r}"
        assert str(tmp_path) not in reason


def test_a_writer_killed_between_its_two_renames_gets_the_previous_version_back(tmp_path):
    from mer_core.data.store import staging_dir

    final = tmp_path / "clips"
    (final / "synth").mkdir(parents=True)
    (final / "synth" / "part-00000.parquet").write_bytes(b"previous version")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # What replace_directory leaves if killed after moving the old folder aside, before the swap.
    final.rename(tmp_path / f".clips.{dead.pid}-old.tmp")
    (tmp_path / f".clips.{dead.pid}-k3x9.tmp").mkdir()

    staged = staging_dir(final)
    assert (final / "synth" / "part-00000.parquet").read_bytes() == b"previous version"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["clips", staged.name])


def test_a_cut_off_video_withholds_its_last_decoded_frame(corpus):
    from mer_core.data.video import VideoReader, count_video_frames

    cut = corpus.macro / "videos" / "truncated.avi"
    decoded, _ = count_video_frames(cut)
    with VideoReader(cut) as reader:
        numbers = [n for n, _ in reader.intact_frames()]
    assert numbers == list(range(decoded - 1))  # the possibly half-garbage last frame is left out
    whole = corpus.macro / "videos" / "long.avi"
    with VideoReader(whole) as reader:
        assert len(list(reader.intact_frames())) == count_video_frames(whole)[0]
