"""Ingest through the real stack: files on disk → Parquet shards + rejected table."""

import shutil

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from openpyxl import load_workbook

from mer_core.data.ingest import CLIPS_DIR, REJECTED_FILE, ingest
from mer_core.data.store import frames_to_numpy, read_clips
from mer_core.data.synthetic import MACRO_MANIFEST_NAME, MICRO_SHEET_NAME


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
    params = tiny_config.ingest.model_copy(update={"out_dir": root / "interim", "workers": 2})
    sources = [micro_src.model_copy(update={"root": micro}), macro_src.model_copy(update={"root": macro})]
    summaries = ingest(params, sources)
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
