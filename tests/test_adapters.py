"""Adapters on tiny fixtures in the published layouts, quirks included."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from openpyxl import Workbook

from mer_core.data.adapters import AnnotationError, macro_windows, micro_frame_numbers, read_dataset

HEADER = ["Subject", "Filename", None, "OnsetFrame", "ApexFrame", "OffsetFrame", None, "Action Units",
          "Estimated Emotion"]


def _casme2_tree(root: Path, rows: list[list], frames: dict[str, range]) -> None:
    for clip, numbers in frames.items():
        folder = root / clip
        folder.mkdir(parents=True)
        for n in numbers:
            cv2.imwrite(str(folder / f"img{n}.jpg"), np.full((8, 8, 3), 128, np.uint8))
    book = Workbook()
    book.active.append(HEADER)
    for row in rows:
        book.active.append(row)
    book.save(root / "CASME2-coding-20140508.xlsx")


def _read(adapter, root, **kw):
    return read_dataset(adapter, "fixture", root, annotation=kw.get("annotation"), fps=kw.get("fps"),
                        frames_per_clip=kw.get("frames", 4), labels=kw.get("labels"))


def test_casme2_reads_good_rows_and_rejects_bad_ones(tmp_path):
    _casme2_tree(
        tmp_path,
        rows=[
            [1, "EP02_01f", None, 46, 59, 86, None, "1+R2", "happiness"],
            ["sub02", "EP01_11", None, 10, "/", 20, None, "4", "Disgust"],  # '/' apex, capitalised label
            [2, "EP03_02", None, 30, 25, 40, None, "4", "others"],  # apex before onset
            [2, "EP04_01", None, 30, 35, 20, None, "4", "others"],  # onset after offset
            [2, "EP05_01", None, 10, "x", 20, None, "12", "happiness"],  # non-numeric apex
            [2, "EP06_01", None, 10, 15, 99, None, "12", "happiness"],  # frames beyond the clip
            [2, "EP07_01", None, 10, 15, 20, None, "12", "joy"],  # unknown label
            [1, "EP02_01f", None, 46, 59, 86, None, "1+R2", "happiness"],  # duplicate
            [3, "EP09_09", None, 1, 2, 3, None, "12", "happiness"],  # folder missing
            [None, None, None, None, None, None, None, None, None],  # blank spacer row: skipped
        ],
        frames={"sub01/EP02_01f": range(40, 90), "sub02/EP01_11": range(5, 25), "sub02/EP03_02": range(20, 45),
                "sub02/EP04_01": range(10, 40), "sub02/EP05_01": range(5, 25), "sub02/EP06_01": range(5, 25),
                "sub02/EP07_01": range(5, 25)},
    )
    result = _read("casme2", tmp_path)
    assert [c.item for c in result.clips] == ["sub01/EP02_01f", "sub02/EP01_11"]
    first, second = result.clips
    assert (first.subject, first.label, first.onset, first.apex, first.offset) == ("sub01", "happiness", 46, 59, 86)
    assert first.fps == 200.0 and first.action_units == "1+R2"
    assert [n for n, _ in first.frames] == micro_frame_numbers(46, 59, 86, 4)
    assert second.apex == 15 and second.label == "disgust"
    reasons = {r.item: r.reason for r in result.rejections}
    assert reasons == {
        "CASME2-coding-20140508.xlsx row 4": "ApexFrame 25 is outside [30, 40]",
        "CASME2-coding-20140508.xlsx row 5": "OnsetFrame 30 is after OffsetFrame 20",
        "CASME2-coding-20140508.xlsx row 6": "ApexFrame is not a number: 'x'",
        "CASME2-coding-20140508.xlsx row 7": reasons["CASME2-coding-20140508.xlsx row 7"],
        "CASME2-coding-20140508.xlsx row 8": reasons["CASME2-coding-20140508.xlsx row 8"],
        "CASME2-coding-20140508.xlsx row 9": "duplicate clip sub01/EP02_01f",
        "CASME2-coding-20140508.xlsx row 10": "clip folder sub03/EP09_09 does not exist",
    }
    assert "missing from sub02/EP06_01" in reasons["CASME2-coding-20140508.xlsx row 7"]
    assert "unknown emotion 'joy'" in reasons["CASME2-coding-20140508.xlsx row 8"]


def test_casme2_without_sheet_or_columns_is_a_clear_error(tmp_path):
    with pytest.raises(AnnotationError, match="no CASME II coding sheet"):
        _read("casme2", tmp_path)
    book = Workbook()
    book.active.append(["Subject", "Filename"])
    book.save(tmp_path / "CASME2-coding-x.xlsx")
    with pytest.raises(AnnotationError, match="missing column"):
        _read("casme2", tmp_path)


def _video(path: Path, frames: int = 6) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (16, 16))
    for _ in range(frames):
        writer.write(np.zeros((16, 16, 3), np.uint8))
    writer.release()


def test_videos_manifest_rejects_escapes_without_opening(tmp_path):
    root = tmp_path / "root"
    _video(root / "a.avi")
    _video(tmp_path / "outside.avi")
    (root / "link.avi").symlink_to(tmp_path / "outside.avi")
    (root / "manifest.csv").write_text(
        "path,subject,label,onset,apex,offset\n"
        "a.avi,p1,happiness,0,2,4\n"
        "../outside.avi,p2,happiness,,,\n"
        f"{tmp_path / 'outside.avi'},p3,,,,\n"
        "link.avi,p4,,,,\n"
        "missing.avi,p5,,,,\n"
        "a.avi,p1,happiness,4,2,0\n"
    )
    result = _read("videos", root)
    assert [(c.item, c.subject, c.label, c.onset) for c in result.clips] == [("a.avi", "p1", "happiness", 0)]
    reasons = [r.reason for r in result.rejections]
    assert "climbs out of the data root" in reasons[0]
    assert "is absolute" in reasons[1]
    assert "resolves outside the data root" in reasons[2]
    assert reasons[3] == "video missing.avi does not exist"
    assert "out of order" in reasons[4]


def test_videos_folder_without_manifest(tmp_path):
    _video(tmp_path / "s1" / "take1.avi")
    _video(tmp_path / "s2.mp4")
    (tmp_path / "notes.txt").write_text("not a video")
    result = _read("videos", tmp_path)
    assert [(c.item, c.subject, c.label) for c in result.clips] == [("s1/take1.avi", "s1/take1", None),
                                                                     ("s2.mp4", "s2", None)]


def test_frame_sampling():
    assert micro_frame_numbers(0, 8, 20, 8) == [0, 2, 4, 6, 8, 12, 16, 20]
    assert micro_frame_numbers(5, 5, 5, 4) == [5, 5, 5, 5]
    windows = macro_windows(100, count=4, stride=2, windows=3, onset=10, offset=60)
    assert windows == [[10, 12, 14, 16], [32, 34, 36, 38], [54, 56, 58, 60]]
    assert macro_windows(5, count=4, stride=2, windows=3) == [[0, 1, 2, 3], [1, 2, 3, 4]]
    assert macro_windows(3, count=4, stride=1, windows=2) == []
