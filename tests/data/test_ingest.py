"""Ingest through the real stack: files on disk → Parquet shards + rejected table.

Hostile input and faults too: the hostile corpus (tests/hostile.py) goes through `ingest`
beside good items. Nothing may crash, every bad item must land in the rejected table with
a reason naming it, the good items must still arrive, and no output may be half-written,
not even when the writer is killed.
"""

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from openpyxl import load_workbook

from mer_core.data.adapters import read_dataset
from mer_core.data.ingest import ingest
from mer_core.data.store import CLIPS_DIR, REJECTED_FILE, frames_to_numpy, read_clips
from mer_core.data.synthetic import (
    ACTION_UNITS,
    MACRO_MANIFEST_NAME,
    MICRO_SHEET_NAME,
    FaceRenderer,
    sample_identity,
)
from mer_core.data.video import count_video_frames
from tests.conftest import REPO, exits_cleanly, run_mer
from tests.hostile import LONG_VIDEO_FRAMES, HostileCorpus, first_half, render_face_video


@pytest.fixture(scope="module")
def ingested(tiny_synthetic, tiny_config, tmp_path_factory):
    """The tiny synthetic set plus planted bad items: a zero-byte video, a text file named
    .avi, a clip without a face, and a sheet row pointing at missing frames."""
    root = tmp_path_factory.mktemp("hostile")
    shutil.copytree(tiny_synthetic, root, dirs_exist_ok=True)
    macro = root / "macro"
    (macro / "videos" / "empty.avi").write_bytes(b"")
    (macro / "videos" / "text.avi").write_text("this is not a video")
    with (macro / MACRO_MANIFEST_NAME).open("a") as handle:
        handle.write("videos/empty.avi,actor009,happiness,0,1,2,12\nvideos/text.avi,actor009,anger,,,,4\n")
    micro = root / "micro"
    faceless = min((micro / "sub01").iterdir())
    for image in faceless.glob("*.jpg"):
        cv2.imwrite(str(image), np.full((128, 128, 3), 90, np.uint8))
    book = load_workbook(micro / MICRO_SHEET_NAME)
    book.active.append([2, "EP99_01", None, 1, 2, 3, None, "12", "happiness"])
    book.save(micro / MICRO_SHEET_NAME)

    micro_src, macro_src = tiny_config.ingest.datasets
    params = tiny_config.ingest.model_copy(update={"workers": 2})
    sources = [micro_src.model_copy(update={"root": micro}), macro_src.model_copy(update={"root": macro})]
    summaries = ingest(params, root / "interim", sources)
    return root / "interim", summaries, faceless.name


def test_good_items_arrive_as_clip_rows(ingested, tiny_config):
    out, summaries, _ = ingested
    table = read_clips(out / CLIPS_DIR)
    kinds = table["kind"].to_pylist()
    assert summaries["synth_micro"].rows == kinds.count("micro") == 3 * 4 - 1
    assert kinds.count("macro") == summaries["synth_macro"].rows >= 2 * 2  # several windows per video
    frames = frames_to_numpy(table["frames"])
    assert frames.shape[1:] == (4, 64, 64, 3)
    assert frames.std() > 10, "crops carry a face, not a blank"
    micro = [r for r in table.drop_columns(["frames"]).to_pylist() if r["kind"] == "micro"]
    for row in micro:
        assert row["onset"] <= row["apex"] <= row["offset"]
        assert row["frame_indices"][0] == row["onset"] and row["frame_indices"][2] == row["apex"]
        assert row["label"] in {"happiness", "disgust", "repression", "surprise", "others"}
    assert all(r["fps"] == 50 for r in micro)


def test_bad_items_are_rejected_with_reasons(ingested):
    out, summaries, faceless = ingested
    rejected = pq.read_table(out / REJECTED_FILE).to_pylist()
    by_item = {r["item"]: r["reason"] for r in rejected}
    assert by_item["videos/empty.avi"] == "videos/empty.avi: empty file"
    assert "not a readable video" in by_item["videos/text.avi"] or "no frame" in by_item["videos/text.avi"]
    assert by_item[f"sub01/{faceless}"].startswith("no face detected")
    assert any("missing" in reason or "does not exist" in reason for item, reason in by_item.items() if "row" in item)
    assert summaries["synth_micro"].rejected + summaries["synth_macro"].rejected == len(rejected) == 4


def test_shards_are_complete_parquet_with_row_groups(ingested):
    out, _, _ = ingested
    shards = sorted((out / CLIPS_DIR).rglob("*.parquet"))
    assert shards and not list((out / CLIPS_DIR).rglob("*.tmp"))
    metadata = pq.ParquetFile(shards[0]).metadata
    assert metadata.num_row_groups >= 2 and metadata.row_group(0).num_rows == 4


# --- a hostile corpus through ingest exactly as the stage runs it ---------------------------

def _sources(tiny_config, corpus: HostileCorpus):
    micro, macro = tiny_config.ingest.datasets
    return [micro.model_copy(update={"root": corpus.micro}), macro.model_copy(update={"root": corpus.macro})]


@pytest.fixture(scope="module")
def ingested_corpus(corpus, tiny_config, tmp_path_factory):
    """The corpus through `ingest` exactly as the stage runs it: a spawn pool of 2 workers."""
    out = tmp_path_factory.mktemp("hostile_out")
    params = tiny_config.ingest.model_copy(update={"workers": 2})
    summaries = ingest(params, out, _sources(tiny_config, corpus))
    return out, summaries


def _clip_items(table) -> set[str]:
    return {path.split(" window ")[0] for path in table["source_path"].to_pylist()}


def test_every_bad_item_is_rejected_with_a_reason_naming_it(corpus, ingested_corpus):
    out, summaries = ingested_corpus
    rejected = {r["item"]: r["reason"] for r in pq.read_table(out / REJECTED_FILE).to_pylist()}
    assert set(rejected) == set(corpus.rejected), "exactly the planted items are rejected"
    for item, words in corpus.rejected.items():
        for word in words:
            assert word in rejected[item], f"{item}: {rejected[item]!r} lacks {word!r}"
    assert sum(s.rejected for s in summaries.values()) == len(rejected)
    assert not any(str(corpus.micro.parent) in reason for reason in rejected.values()), "no machine paths"


def test_good_items_in_the_same_run_still_arrive(corpus, ingested_corpus, tiny_config):
    out, summaries = ingested_corpus
    table = read_clips(out / CLIPS_DIR)
    assert _clip_items(table) == corpus.good
    windows = tiny_config.ingest.windows_per_video
    long_rows = [r for r in table["source_path"].to_pylist() if r.startswith("videos/long.avi")]
    assert len(long_rows) == windows, "the very long video gives its windows like any other"
    assert sum(s.rows for s in summaries.values()) == table.num_rows


def test_truncated_video_uses_only_its_intact_frames(corpus, ingested_corpus):
    out, _ = ingested_corpus
    table = read_clips(out / CLIPS_DIR).drop_columns(["frames"]).to_pylist()
    rows = [r for r in table if r["source_path"].startswith("videos/truncated.avi")]
    decodable, _ = count_video_frames(corpus.macro / "videos" / "truncated.avi")
    assert 0 < decodable < LONG_VIDEO_FRAMES
    # The last frame that decodes may be cut off part-way (MJPEG): it is never used.
    assert rows and max(max(r["frame_indices"]) for r in rows) <= decodable - 2


def test_frame_modes_and_depths_are_normalised_not_rejected(corpus, ingested_corpus):
    out, _ = ingested_corpus
    table = read_clips(out / CLIPS_DIR)
    by_item = dict(zip(table["source_path"].to_pylist(), frames_to_numpy(table["frames"])))
    mixed = by_item[corpus.mixed_modes].astype(int)  # (T, S, S, 3)
    assert mixed.dtype.kind == "i" and mixed.shape[-1] == 3
    # One grey frame turns the whole clip grey, so no frame differs from the next in colour only.
    assert np.abs(mixed[..., 0] - mixed[..., 1]).max() <= 1 and np.abs(mixed[..., 1] - mixed[..., 2]).max() <= 1
    colour = by_item[corpus.colour_modes].astype(int)
    assert np.abs(colour[..., 0] - colour[..., 2]).mean() > 5, "BGRA and 16-bit frames keep their colour"


def test_outputs_are_complete_files_only(ingested_corpus):
    out, _ = ingested_corpus
    leftovers = [p for p in Path(out).rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert not leftovers
    for shard in (Path(out) / CLIPS_DIR).rglob("*.parquet"):
        assert pq.ParquetFile(shard).metadata.num_rows > 0


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
ingest(IngestParams.model_validate_json(sys.argv[1]), sys.argv[2])
"""


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def micro_params(tiny_synthetic, tiny_config, tmp_path):
    micro = tiny_config.ingest.datasets[0]
    return tiny_config.ingest.model_copy(update={"datasets": [micro], "workers": 1}), tmp_path / "interim"


def test_a_killed_ingest_leaves_the_previous_output_and_reruns_cleanly(micro_params):
    micro_params, out = micro_params
    ingest(micro_params, out)
    before = _snapshot(out)
    clip_ids = read_clips(out / CLIPS_DIR)["clip_id"].to_pylist()
    child = subprocess.run([sys.executable, "-c", KILL_WHILE_WRITING_A_SHARD, micro_params.model_dump_json(), str(out)],
                           cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert child.returncode == -9, child.stderr[-2000:]
    leftovers = list(out.parent.glob(f".{out.name}.*.tmp"))  # the whole output is staged beside it
    assert leftovers, "the killed run died inside its staging folder"
    assert _snapshot(out) == before, "previous output intact"

    ingest(micro_params, out)
    assert not list(out.parent.glob(".*.tmp")), "the re-run cleared the killed run's leftovers"
    assert _snapshot(out).keys() == before.keys()
    assert read_clips(out / CLIPS_DIR)["clip_id"].to_pylist() == clip_ids


def test_an_ingest_failing_mid_write_leaves_the_previous_output(micro_params, monkeypatch):
    from mer_core.data import store

    micro_params, out = micro_params
    ingest(micro_params, out)
    before = _snapshot(out)
    write_table = store.pq.write_table

    def write_half_then_fail(table, where, **kwargs):
        write_table(table, where, **kwargs)
        Path(where).write_bytes(Path(where).read_bytes()[:100])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.pq, "write_table", write_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        ingest(micro_params, out)
    assert _snapshot(out) == before
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_mer_ingest_reads_an_ad_hoc_folder_and_reports_rejects(params_file, tiny_config, tmp_path):
    source = tmp_path / "My Videos"
    source.mkdir()
    render_face_video(source / "face.avi", 30, seed=3)
    (source / "broken.mp4").write_text("not a video")
    out = tmp_path / "out"
    result = run_mer("ingest", "--adapter", "videos", "--source", str(source), "--output", str(out),
                  "--params", str(params_file))
    exits_cleanly(result, 0)
    assert "2 item(s) listed" in result.output and "1 rejected" in result.output
    assert "broken.mp4: not a readable video" in result.output
    table = read_clips(out / CLIPS_DIR / "my_videos")
    assert set(table["subject"].to_pylist()) == {"face"} and set(table["label"].to_pylist()) == {None}
    assert table.num_rows == tiny_config.ingest.windows_per_video
    assert [r["item"] for r in pq.read_table(out / REJECTED_FILE).to_pylist()] == ["broken.mp4"]


def test_an_ad_hoc_ingest_adds_to_an_earlier_output_and_never_deletes(params_file, tmp_path):
    first, second, out = tmp_path / "first", tmp_path / "second", tmp_path / "out"
    for folder, seed in ((first, 3), (second, 4)):
        folder.mkdir()
        render_face_video(folder / "face.avi", 30, seed=seed)
        (folder / "broken.mp4").write_text("not a video")
    exits_cleanly(run_mer("ingest", "--adapter", "videos", "--source", str(first), "--output", str(out),
                          "--params", str(params_file)), 0)
    before = read_clips(out / CLIPS_DIR / "first")
    result = run_mer("ingest", "--adapter", "videos", "--source", str(second), "--output", str(out),
                     "--params", str(params_file))
    exits_cleanly(result, 0)
    assert "1 rejected" in result.output  # its own rejections, not the earlier run's too
    assert sorted(p.name for p in (out / CLIPS_DIR).iterdir()) == ["first", "second"]
    assert read_clips(out / CLIPS_DIR / "first").equals(before)
    assert sorted(r["dataset"] for r in pq.read_table(out / REJECTED_FILE).to_pylist()) == ["first", "second"]


def test_an_ad_hoc_ingest_refuses_an_output_holding_other_files(params_file, tmp_path):
    source, out = tmp_path / "source", tmp_path / "my_documents"
    source.mkdir(), out.mkdir()
    render_face_video(source / "face.avi", 30, seed=3)
    (out / "thesis.tex").write_text("months of work")
    result = run_mer("ingest", "--adapter", "videos", "--source", str(source), "--output", str(out),
                     "--params", str(params_file))
    exits_cleanly(result, 1)
    assert "holds other files (thesis.tex)" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def test_a_full_disk_ends_in_one_line_naming_the_file(params_file, tmp_path, monkeypatch):
    from mer_core.data import store

    source, out = tmp_path / "source", tmp_path / "out"
    source.mkdir()
    render_face_video(source / "face.avi", 30, seed=3)

    def disk_full(table, where, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.pq, "write_table", disk_full)
    result = run_mer("ingest", "--adapter", "videos", "--source", str(source), "--output", str(out),
                     "--params", str(params_file))
    exits_cleanly(result, 1)
    (line,) = result.output.strip().splitlines()
    assert line.startswith("mer ingest: cannot write ") and "part-00000.parquet: No space left on device" in line
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


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
    result = run_mer("ingest", "--adapter", "videos", "--source", str(source), "--output", str(tmp_path / "out"),
                  "--params", str(params_file))
    exits_cleanly(result, 1)
    assert message in result.output and str(source) in result.output


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
    from tests.layouts import ONE_CLIP_TREES

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
        from tests.layouts import ONE_CLIP_TREES
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
        sources.append(DatasetSource(name=damage, adapter=adapter, root=root, kind=options.get("kind", "micro"),
                                     annotation=options.get("annotation"), fps=options.get("fps")))
    params = IngestParams(datasets=sources, crop_size=32, frames_per_clip=4,
                          workers=1, rows_per_shard=8, row_group_size=4)
    summaries = ingest(params, tmp_path / "interim")
    rejected = {r["dataset"]: r for r in pq.read_table(tmp_path / "interim" / REJECTED_FILE).to_pylist()}
    for damage, (_, words) in FRAME_DAMAGE.items():
        if words is None:
            assert summaries[damage].rows == 1 and damage not in rejected, rejected.get(damage)
            continue
        assert summaries[damage].rows == 0, f"{adapter} {damage}: a damaged clip gave a row"
        reason = rejected[damage]["reason"]
        assert re.search(words, reason) and damaged[damage].name in reason, f"{adapter} {damage}: {reason!r}"
        assert str(tmp_path) not in reason
