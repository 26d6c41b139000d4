"""Adapters on tiny fixtures in the published layouts, quirks included."""

import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from openpyxl import Workbook

from mer_core.data.adapters import ADAPTERS, read_dataset
from mer_core.data.adapters.sheets import AnnotationError
from mer_core.data.labels import NATIVE_LABELS, composite_label
from mer_core.data.video import macro_windows, micro_frame_numbers
from tests.layouts import (
    ONE_CLIP_TREES,
    SAMM_HEADER,
    affwild2_tree,
    casme2_tree,
    casme3_c_tree,
    casme3_tree,
    casme_sq_tree,
    casme_tree,
    ckplus_tree,
    dfew_tree,
    fourdme_tree,
    mmew_tree,
    samm_long_tree,
    samm_tree,
    smic_tree,
    write_sheet,
)

CASME2_FIVE_CLASSES = ["disgust", "happiness", "others", "repression", "surprise"]


def _read(adapter, root, **kw):
    return read_dataset(adapter, "fixture", root, annotation=kw.get("annotation"), fps=kw.get("fps"),
                        frames_per_clip=kw.get("frames", 4), labels=kw.get("labels"))


def test_casme2_reads_good_rows_and_rejects_bad_ones(tmp_path):
    casme2_tree(
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
        "CASME2-coding-20140508.xlsx row 9": "duplicate clip sub01/EP02_01f (frames 46-86, as "
                                              "CASME2-coding-20140508.xlsx row 2)",
        "CASME2-coding-20140508.xlsx row 10": "clip folder sub03/EP09_09 does not exist",
    }
    assert "missing from sub02/EP06_01" in reasons["CASME2-coding-20140508.xlsx row 7"]
    assert "unknown emotion 'joy'" in reasons["CASME2-coding-20140508.xlsx row 8"]


def test_casme_one_reads_its_sheet_with_the_midpoint_for_a_missing_apex(tmp_path):
    casme_tree(tmp_path, rows=[[1, "EP01_5", 10, 13, 18, 9, "4+9", "Disgust"],
                               ["sub01", "EP02_1", 20, "/", 30, 11, "1+2", "surprise"],
                               [2, "EP01_1", 20, 25, 30, 11, "12", "happiness"]],  # not a CASME I class
               frames={"sub01/EP01_5": range(8, 20), "sub01/EP02_1": range(20, 31), "sub02/EP01_1": range(20, 31)})
    result = _read("casme", tmp_path)
    assert [(c.item, c.subject, c.label, c.apex, c.fps) for c in result.clips] == [
        ("sub01/EP01_5", "sub01", "disgust", 13, 60.0), ("sub01/EP02_1", "sub01", "surprise", 25, 60.0)]
    assert result.clips[0].frames[0][1].name == "EP01_5-10.jpg"
    assert "unknown emotion 'happiness'" in _reasons(result)["CASME_label_Ver_2.xlsx row 4"]


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
    assert "resolves outside the data set root" in reasons[2]
    assert reasons[3] == "video missing.avi does not exist"
    assert "out of order" in reasons[4]


# --------------------------------------------------------------------------- events, sheets, files
def test_a_second_event_in_one_folder_is_a_clip_of_its_own(tmp_path):
    casme2_tree(tmp_path, [[1, "EP02_01f", None, 46, 50, 55, None, "12", "happiness"],
                           [1, "EP02_01f", None, 70, 75, 80, None, "4", "disgust"],  # another expression
                           [1, "EP02_01f", None, 70, 74, 80, None, "4", "disgust"]],  # the same one again
                {"sub01/EP02_01f": range(40, 90)})
    result = _read("casme2", tmp_path)
    assert [(c.item, c.label) for c in result.clips] == [("sub01/EP02_01f frames 46-55", "happiness"),
                                                         ("sub01/EP02_01f frames 70-80", "disgust")]
    (rejected,) = result.rejections
    assert rejected.item.endswith("row 4") and "duplicate clip sub01/EP02_01f (frames 70-80" in rejected.reason


def test_a_second_event_in_one_video_is_a_clip_of_its_own(tmp_path):
    _video(tmp_path / "a.avi", frames=12)
    (tmp_path / "manifest.csv").write_text("path,subject,label,onset,apex,offset\n"
                                           "a.avi,p1,happiness,0,2,4\na.avi,p1,anger,6,8,10\n")
    result = _read("videos", tmp_path)
    assert [(c.item, c.label) for c in result.clips] == [("a.avi frames 0-4", "happiness"), ("a.avi frames 6-10", "anger")]
    assert not result.rejections


def test_every_coding_worksheet_of_a_workbook_is_read(tmp_path):
    from openpyxl import load_workbook

    from tests.layouts import CASME2_HEADER, CASME2_SHEET

    sheet = casme2_tree(tmp_path, [[1, "EP01_01", None, 10, 12, 16, None, "12", "happiness"],
                                   [1, "EP01_02", None, 10, 12, 16, None, "4", "disgust"]],
                        {f"sub0{s}/EP01_0{c}": range(10, 17) for s in (1, 2) for c in (1, 2, 3)})
    book = load_workbook(sheet)
    second = book.create_sheet("Sheet2")
    for row in (CASME2_HEADER, [2, "EP01_01", None, 10, 12, 16, None, "12", "happiness"],
                [2, "EP01_03", None, 10, 20, 16, None, "12", "happiness"]):
        second.append(row)
    book.create_sheet("Legend").append(["AU", "meaning"])  # no coding header: left out
    book.save(tmp_path / CASME2_SHEET)
    result = _read("casme2", tmp_path)
    assert [c.item for c in result.clips] == ["sub01/EP01_01", "sub01/EP01_02", "sub02/EP01_01"]
    assert [(r.item, r.reason) for r in result.rejections] == [
        (f"{CASME2_SHEET} Sheet2 row 3", "ApexFrame 20 is outside [10, 16]")]


def test_a_duplicated_header_column_is_refused_in_one_line(tmp_path):
    write_sheet(tmp_path / "CASME2-coding-dup.xlsx",
                ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Estimated Emotion", "Subject"],
                [[1, "EP01_01", 10, 12, 16, "happiness", 2]])
    with pytest.raises(AnnotationError) as failure:
        _read("casme2", tmp_path)
    assert "column 'Subject' appears twice in the header (columns 1 and 7)" in str(failure.value)
    assert "\n" not in str(failure.value)


def test_two_files_for_one_frame_number_reject_the_clip_naming_both(tmp_path):
    casme2_tree(tmp_path, [[1, "EP01_01", None, 4, 5, 6, None, "12", "happiness"]], {"sub01/EP01_01": range(4, 7)})
    cv2.imwrite(str(tmp_path / "sub01/EP01_01/img05.jpg"), np.zeros((8, 8, 3), np.uint8))  # a black "frame 5"
    result = _read("casme2", tmp_path, frames=3)
    assert not result.clips
    assert "img05.jpg and img5.jpg in sub01/EP01_01 are both frame 5" in result.rejections[0].reason


def test_symlinks_out_of_the_root_or_in_a_loop_are_rejections(tmp_path):
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    casme2_tree(root, [[1, "EP01_01", None, 4, 5, 6, None, "12", "happiness"],
                       [1, "EP01_02", None, 4, 5, 6, None, "12", "happiness"],
                       [1, "EP01_03", None, 4, 5, 6, None, "12", "happiness"]], {"sub01/EP01_01": range(4, 7)})
    casme2_tree(elsewhere, [], {"sub09/EP09_09": range(4, 7)})
    (root / "sub01/EP01_02").symlink_to(elsewhere / "sub09/EP09_09")  # a clip folder kept elsewhere
    (root / "sub01/EP01_01/img5.jpg").unlink()
    (root / "sub01/EP01_01/img5.jpg").symlink_to(elsewhere / "sub09/EP09_09/img5.jpg")  # one frame elsewhere
    (root / "sub01/EP01_03").symlink_to(root / "sub01/EP01_03")  # a loop
    result = _read("casme2", root, frames=3)
    assert not result.clips
    reasons = sorted(r.reason for r in result.rejections)
    assert "clip folder sub01/EP01_02 resolves outside the data set root (a symlink to elsewhere)" in reasons
    assert "clip folder sub01/EP01_03 is a symlink loop" in reasons
    assert "sub01/EP01_01/img5.jpg resolves outside the data set root (a symlink to elsewhere)" in reasons

    videos = tmp_path / "videos"
    _video(videos / "ok.avi")
    _video(elsewhere / "secret.avi")
    (videos / "link.avi").symlink_to(elsewhere / "secret.avi")
    (videos / "loop.avi").symlink_to(videos / "loop.avi")
    (videos / "linked_folder").symlink_to(elsewhere)  # not entered
    listing = _read("videos", videos)
    assert [c.item for c in listing.clips] == ["ok.avi"]
    assert {r.item: r.reason for r in listing.rejections} == {
        "link.avi": "link.avi resolves outside the data set root (a symlink to elsewhere)",
        "loop.avi": "loop.avi is a symlink loop"}


def test_a_file_given_as_a_data_set_root_is_not_a_folder(tmp_path):
    (tmp_path / "CASME2.zip").write_bytes(b"PK")
    with pytest.raises(FileNotFoundError, match="CASME2.zip is a file, not a folder"):
        _read("casme2", tmp_path / "CASME2.zip")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _read("casme2", tmp_path / "absent")


def test_xls_coding_sheets_are_read(tmp_path):
    import xlwt

    from tests.layouts import CASME2_HEADER

    casme2_tree(tmp_path, [], {"sub01/EP01_01": range(10, 17)})
    (tmp_path / "CASME2-coding-20140508.xlsx").unlink()
    book = xlwt.Workbook()
    sheet = book.add_sheet("Sheet1")
    for r, row in enumerate([CASME2_HEADER, [1, "EP01_01", None, 10, 12, 16, None, "12", "happiness"]]):
        for c, value in enumerate(row):
            if value is not None:
                sheet.write(r, c, value)
    book.save(str(tmp_path / "CASME2-coding-old.xls"))
    assert [c.item for c in _read("casme2", tmp_path).clips] == ["sub01/EP01_01"]


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


def _reasons(result) -> dict[str, str]:
    return {r.item: r.reason for r in result.rejections}


def _numbers(clip) -> list[int]:
    return [n for n, _ in clip.frames]


# --------------------------------------------------------------------------- SAMM
SAMM_ROWS = [
    [6, "006_1_2", 1, 5562, 5570, 5590, 29, "Micro - 1/2", "R12", "Happiness", 2, None],
    ["007", "007_3_1", 2, 100, -1, 120, 21, "Micro - 1/2", "4+7", "Anger", 1, "apex not coded"],
    [7, "007_5_2", 2, 100, None, 120, 21, "Micro - 1/2", "14", "Contempt", 1, None],
    [7, "007_6_1", 2, 100, "x", 120, 21, "Micro - 1/2", "4", "Anger", 1, None],  # non-numeric apex
    [7, "007_6_2", 2, 130, 125, 120, 21, "Micro - 1/2", "4", "Anger", 1, None],  # onset after offset
    [7, "007_6_3", 2, 100, 110, 400, 21, "Micro - 1/2", "4", "Anger", 1, None],  # frames beyond the clip
    [7, "007_6_4", 2, 100, 110, 120, 21, "Micro - 1/2", "4", "Joy", 1, None],  # unknown label
    [6, "006_1_2", 1, 5562, 5570, 5590, 29, "Micro - 1/2", "R12", "Happiness", 2, None],  # duplicate
    [None] * 12,  # blank spacer row: skipped
    [7, "007_6_5", 2, 100, 125, 120, 21, "Micro - 1/2", "4", "Anger", 1, None],  # apex outside
    ["seven", "007_6_6", 2, 100, 110, 120, 21, "Micro - 1/2", "4", "Anger", 1, None],  # bad subject
]
SAMM_FRAMES = {"006/006_1_2": range(5560, 5592), "007/007_3_1": range(100, 121), "007/007_5_2": range(100, 121),
               "007/007_6_1": range(100, 121), "007/007_6_2": range(100, 131), "007/007_6_3": range(100, 121),
               "007/007_6_4": range(100, 121), "007/007_6_5": range(100, 131)}


@pytest.mark.parametrize("preamble", [None, []], ids=["header-below-preamble", "header-on-row-1"])
def test_samm_reads_good_rows_and_rejects_bad_ones(tmp_path, preamble):
    sheet = samm_tree(tmp_path, SAMM_ROWS, SAMM_FRAMES, **({} if preamble is None else {"preamble": preamble}))
    result = _read("samm", tmp_path)
    assert [(c.item, c.subject, c.label) for c in result.clips] == [
        ("006/006_1_2", "006", "happiness"), ("007/007_3_1", "007", "anger"), ("007/007_5_2", "007", "contempt")]
    first, minus_one, blank = result.clips
    assert (first.onset, first.apex, first.offset, first.fps, first.action_units) == (5562, 5570, 5590, 200.0, "R12")
    assert _numbers(first) == micro_frame_numbers(5562, 5570, 5590, 4)
    assert first.frames[0][1].name == "006_05562.jpg"
    assert minus_one.apex == blank.apex == 110  # -1 and empty apex: the midpoint
    header_row = 1 if preamble == [] else 14
    row = {k: f"{sheet.name} row {header_row + k}" for k in range(4, 12)}
    reasons = _reasons(result)
    assert set(reasons) == {row[k] for k in (4, 5, 6, 7, 8, 10, 11)}
    assert reasons[row[4]] == "Apex Frame is not a number: 'x'"
    assert reasons[row[5]] == "Onset Frame 130 is after Offset Frame 120"
    assert "missing from 007/007_6_3" in reasons[row[6]]
    assert "unknown emotion 'Joy'" in reasons[row[7]]
    assert reasons[row[8]].startswith("duplicate clip 006/006_1_2 (frames 5562-5590, as ")
    assert reasons[row[10]] == "Apex Frame 125 is outside [100, 120]"
    assert "not a subject number" in reasons[row[11]]


def test_samm_sheet_without_required_columns_names_file_and_columns(tmp_path):
    write_sheet(tmp_path / "SAMM_Micro_FACS_Codes_v2.xlsx", [c for c in SAMM_HEADER if c != "Apex Frame"], [])
    with pytest.raises(AnnotationError, match=r"SAMM_Micro_FACS_Codes_v2.xlsx: missing column\(s\) \['Apex Frame'\]; "
                                              r"found \['Subject', 'Filename'"):
        _read("samm", tmp_path)
    (tmp_path / "broken.xlsx").write_bytes(b"PK\x03\x04 not really a workbook")
    with pytest.raises(AnnotationError, match="cannot read SAMM FACS-codes sheet .*broken.xlsx"):
        _read("samm", tmp_path, annotation="broken.xlsx")


# --------------------------------------------------------------------------- SMIC
SMIC_CLIPS = {
    "s1/micro/negative/s1_ne_01": range(22917, 22927),
    "s2/micro/positive/s2_po_03": range(500, 512),
    "micro/surprise/s4/s4_sur_01": range(10, 20),  # the other arrangement
    "s1/micro/surprise/s1_ne_02": range(1, 10),  # coded negative, filed under surprise
    "s1/micro/negative/s1_ne_03": range(0),  # empty folder
    "s1/micro/negative/s1-ne-04": range(1, 10),  # not a clip name
    "s3/micro/negative/s1_ne_05": range(1, 10),  # subject 1 inside s3/
    "micro/negative/s1/s1_ne_01": range(1, 10),  # the same clip twice
    "s1/micro/disgust/s1_ne_06": range(1, 10),  # no emotion folder SMIC knows
    "s1/non_micro/s1_ne_07": range(1, 10),  # not a micro-expression: ignored
}


def test_smic_labels_from_folders_with_midpoint_apex(tmp_path):
    root = smic_tree(tmp_path / "HS", SMIC_CLIPS)
    result = _read("smic", root)
    assert [(c.item, c.subject, c.label, c.fps) for c in result.clips] == [
        ("micro/negative/s1/s1_ne_01", "s1", "negative", 100.0),
        ("micro/surprise/s4/s4_sur_01", "s4", "surprise", 100.0),
        ("s2/micro/positive/s2_po_03", "s2", "positive", 100.0)]
    clip = result.clips[2]
    assert (clip.onset, clip.apex, clip.offset) == (500, 506, 511)  # first, middle, last frame on disk
    assert _numbers(clip) == [500 + k for k in micro_frame_numbers(0, 6, 11, 4)]
    reasons = _reasons(result)
    assert reasons["s1/micro/negative/s1_ne_01"] == "duplicate clip s1_ne_01 (also at micro/negative/s1/s1_ne_01)"
    assert reasons["s1/micro/surprise/s1_ne_02"] == "clip s1_ne_02 is coded 'ne' but filed under surprise/"
    assert reasons["s1/micro/negative/s1_ne_03"] == "clip folder s1/micro/negative/s1_ne_03 holds no numbered images"
    assert "not a SMIC clip name" in reasons["s1/micro/negative/s1-ne-04"]
    assert reasons["s3/micro/negative/s1_ne_05"] == "clip s1_ne_05 sits in subject folder ['s3']"
    assert "expected one emotion folder" in reasons["s1/micro/disgust/s1_ne_06"]
    assert len(reasons) == 6


def test_smic_subset_decides_fps(tmp_path):
    smic_tree(tmp_path / "SMIC" / "VIS", {"s1/micro/positive/s1_po_01": range(1, 9)})
    smic_tree(tmp_path / "SMIC" / "NIR", {"s1/micro/positive/s1_po_01": range(1, 9)})
    assert _read("smic", tmp_path / "SMIC" / "VIS").clips[0].fps == 25.0
    with pytest.raises(AnnotationError, match=r"holds the SMIC subsets \['NIR', 'VIS'\]"):
        _read("smic", tmp_path / "SMIC")
    renamed = smic_tree(tmp_path / "smic_hs_copy", {"s1/micro/positive/s1_po_01": range(1, 9)})
    with pytest.raises(AnnotationError, match="cannot tell which SMIC subset"):
        _read("smic", renamed)
    assert _read("smic", renamed, fps=100).clips[0].fps == 100
    with pytest.raises(AnnotationError, match="labels from folders"):
        _read("smic", tmp_path / "SMIC" / "VIS", annotation="labels.xlsx")


# --------------------------------------------------------------------------- CAS(ME)^3
def test_casme3_matches_case_and_keeps_expressions_of_one_recording_apart(tmp_path):
    casme3_tree(tmp_path, rows=[
        ["spNO.1", "A", 100, 105, 110, "4+L10", "negative", "disgust"],  # sheet case differs from folders
        ["spNO.1", "a", 120, 125, 130, "12", "positive", "Happy"],  # same recording, another expression
        ["spNO.1", "a", 100, 105, 110, "4+L10", "negative", "disgust"],  # duplicate
        ["spNO.1", "a", 120, None, 130, "12", "positive", "happy"],  # missing apex: no convention
        ["spNO.2", "a", 1, 2, 3, "12", "positive", "happy"],  # no such subject folder
        ["spNO.1", "b", 135, 138, 150, "1+2", "surprise", "surprise"],  # frames beyond the clip
        ["spNO.1", "a", 130, 125, 120, "12", "positive", "happy"],  # onset after offset
        ["spNO.1", "a", 100, 105, 110, "", "", "joy"],  # unknown label
        ["spNO.1", "../spNo.1/a", 100, 105, 110, "4", "negative", "disgust"],  # a path, not a folder name
    ], frames={"spNo.1/a": range(95, 135), "spNo.1/b": range(130, 145)})
    result = _read("casme3", tmp_path / "data", annotation="../annotation/cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx")
    assert [(c.item, c.subject, c.label, c.onset, c.apex, c.offset, c.fps) for c in result.clips] == [
        ("spNo.1/a/color/100-110", "spNO.1", "disgust", 100, 105, 110, 30.0),
        ("spNo.1/a/color/120-130", "spNO.1", "happy", 120, 125, 130, 30.0)]
    assert result.clips[0].frames[0][1].as_posix().endswith("spNo.1/a/color/100.jpg")
    reasons = list(_reasons(result).values())
    assert reasons[0] == ("duplicate clip spNo.1/a/color/100-110 (frames 100-110, as "
                          "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx row 2)")
    assert reasons[1] == "Apex is missing"
    assert reasons[2] == "clip folder spNO.2/a/color/1-3 does not exist"
    assert "frame(s) [150] missing" in reasons[3]
    assert reasons[4] == "Onset 130 is after Offset 120"
    assert "unknown emotion 'joy'" in reasons[5]
    assert reasons[6] == "Filename '../spNo.1/a' is not a folder name"
    assert len(reasons) == 7


def test_casme3_part_c_clips_are_unlabelled_with_the_midpoint_apex(tmp_path):
    casme3_c_tree(tmp_path, rows=[
        ["C01", 1, "4+L10", 30, 40],
        ["c01", "2", "12", 50, 61],  # frames in the clip folder itself; subject case differs
        ["C01", 3, "12", 61, 50],  # onset after offset
        ["C02", 1, "1+2", 1, 9],  # no such folder
    ], frames={"C01/1": range(28, 42), "C01/2/.": range(50, 62)})
    result = _read("casme3_c", tmp_path)
    assert [(c.item, c.subject, c.label, c.onset, c.apex, c.offset, c.action_units) for c in result.clips] == [
        ("C01/1", "C01", None, 30, 35, 40, "4+L10"), ("C01/2", "c01", None, 50, 55, 61, "12")]
    assert result.clips[0].frames[0][1].as_posix().endswith("C01/1/color/30.jpg")
    assert result.allowed_labels is None
    assert list(_reasons(result).values()) == ["onset 61 is after offset 50", "clip folder C02/1 does not exist"]


# --------------------------------------------------------------------------- MMEW
def test_mmew_finds_clips_through_their_emotion_folder(tmp_path):
    mmew_tree(tmp_path, rows=[
        ["S01", "S01-01-001", 3, 8, 15, "AU12", "happiness", None],
        ["S02", "S02-05-003", 2, 10, 25, "AU1+AU2", "surprise", "folder is capitalised"],
        ["S02", "S02-05-004", 2, "/", 25, "AU1+AU2", "surprise", None],  # apex not a number
        ["S02", "S02-05-005", 2, 10, 25, "AU14", "contempt", None],  # not an MMEW class
        ["S03", "S03-01-001", 2, 10, 25, "AU12", "happiness", None],  # no such folder
        ["S01", "S01-01-001", 3, 8, 15, "AU12", "happiness", None],  # duplicate
        ["S01", "S01-01-002", 3, 8, 45, "AU12", "happiness", None],  # frames beyond the clip
    ], frames={"happiness/S01-01-001": range(1, 20), "Surprise/S02-05-003": range(1, 30),
               "Surprise/S02-05-004": range(1, 30), "happiness/S01-01-002": range(1, 20)})
    result = _read("mmew", tmp_path)
    assert [(c.item, c.subject, c.label, c.apex, c.fps) for c in result.clips] == [
        ("Micro_Expression/happiness/S01-01-001", "S01", "happiness", 8, 90.0),
        ("Micro_Expression/Surprise/S02-05-003", "S02", "surprise", 10, 90.0)]
    reasons = _reasons(result)
    assert reasons == {
        "MMEW_Micro_Exp.xlsx row 4": "ApexFrame is not a number: '/'",
        "MMEW_Micro_Exp.xlsx row 5": reasons["MMEW_Micro_Exp.xlsx row 5"],
        "MMEW_Micro_Exp.xlsx row 6": "clip folder Micro_Expression/happiness/S03-01-001 does not exist",
        "MMEW_Micro_Exp.xlsx row 7": "duplicate clip Micro_Expression/happiness/S01-01-001 (frames 3-15, as "
                                     "MMEW_Micro_Exp.xlsx row 2)",
        "MMEW_Micro_Exp.xlsx row 8": reasons["MMEW_Micro_Exp.xlsx row 8"],
    }
    assert "unknown emotion 'contempt'" in reasons["MMEW_Micro_Exp.xlsx row 5"]
    assert "missing from Micro_Expression/happiness/S01-01-002" in reasons["MMEW_Micro_Exp.xlsx row 8"]


# --------------------------------------------------------------------------- 4DME
def test_fourdme_labels_from_the_class_columns_and_keeps_k_tagged_aus(tmp_path):
    onehot = {"positive": [1, 0, 0, 0, 0], "negative": [0, 1, 0, 0, 0], "none": [0] * 5, "two": [1, 1, 0, 0, 0]}
    fourdme_tree(tmp_path, rows=[
        ["S01", "fold1", "happy", 10, 13, 18, "AU12+AU6(k)", *onehot["positive"], 0, 0, 0, 1],
        ["S01", "fold2", "disgust", 20, 24, 30, "AU4+L10", *onehot["negative"], 0, 0, 1, 0],
        ["S01", "fold3", "?", 20, 24, 30, "AU4", *onehot["none"], 0, 0, 1, 0],  # no class marked
        ["S01", "fold4", "?", 20, 24, 30, "AU4", *onehot["two"], 0, 0, 1, 0],  # two classes marked
        ["S02", "fold1", "happy", 10, 13, 18, "AU12", *onehot["positive"], 0, 0, 0, 1],  # no such folder
    ], frames={"S01/fold1": range(8, 20), "S01/fold2": range(18, 32)}, folder="gray_micro_crop")
    result = _read("4dme", tmp_path)
    assert [(c.item, c.subject, c.label, c.apex, c.fps, c.action_units) for c in result.clips] == [
        ("gray_micro_crop/S01/fold1", "S01", "positive", 13, 60.0, "AU12+AU6(k)"),
        ("gray_micro_crop/S01/fold2", "S01", "negative", 24, 60.0, "AU4+L10")]
    sheet = "4DME_Labelling_Micro_release v1.xlsx"
    assert _reasons(result) == {
        f"{sheet} row 4": "expected one of the class columns ['Positive', 'Negative', 'Surprise', 'Repression', "
                          "'Others'] marked, found none",
        f"{sheet} row 5": "expected one of the class columns ['Positive', 'Negative', 'Surprise', 'Repression', "
                          "'Others'] marked, found ['Positive', 'Negative']",
        f"{sheet} row 6": "clip folder gray_micro_crop/S02/fold1 does not exist"}
    (tmp_path / "gray_micro_crop").rename(tmp_path / "elsewhere")
    with pytest.raises(AnnotationError, match="no gray_micro or gray_micro_crop folder"):
        _read("4dme", tmp_path)


# --------------------------------------------------------------------------- long videos
def test_casme_sq_intervals_become_micro_and_macro_clips(tmp_path):
    casme_sq_tree(tmp_path, rows=[
        [1, "disgust1_1", 100, 105, 110, "4+9", "negative", "micro-expression", "disgust"],
        [1, "disgust1_2", 120, 140, 0, "4", "Negative", "macro-expression", "disgust"],  # offset 0: ends at the apex
        [1, "anger1_1", 10, 12, 30, "4+7", "negative", "macro-expression", "anger"],  # video code 102 → 0102
        [1, "disgust1_3", 150, 151, 152, "4", "negative", "macro-expression", ""],  # shorter than a window
        [2, "anger1_1", 1, 2, 3, "4", "negative", "micro-expression", ""],  # subject not in the naming worksheet
        [1, "happy9_1", 1, 2, 3, "12", "positive", "micro-expression", ""],  # video not in the naming worksheet
        [1, "disgust1_4", 10, 12, 14, "4", "negative", "spotted", ""],  # neither micro nor macro
        [None] * 9,  # blank
    ], subjects=[["name", 15, 1]], videos=[["0101", "disgust1"], [102, "anger1"]],
        frames={"s15/15_0101disgustingteeth": range(98, 160), "s15/15_0102angrywhale": range(5, 35)})
    result = _read("casme_sq", tmp_path)
    clips = [(c.item, c.subject, c.kind, c.label, c.onset, c.apex, c.offset, c.fps) for c in result.clips]
    assert clips == [
        ("rawpic/s15/15_0101disgustingteeth frames 100-110", "s15", "micro", "negative", 100, 105, 110, 30.0),
        ("rawpic/s15/15_0101disgustingteeth frames 120-140", "s15", "macro", "negative", 120, 140, 140, 30.0),
        ("rawpic/s15/15_0102angrywhale", "s15", "macro", "negative", 10, 12, 30, 30.0)]
    assert _numbers(result.clips[0]) == micro_frame_numbers(100, 105, 110, 4)
    assert _numbers(result.clips[1]) == [120, 127, 133, 140]  # a macro interval: evenly spread
    assert list(_reasons(result).values()) == [
        "macro interval 150-152 is shorter than 4 frames", "subject '2' is not in the subject naming worksheet",
        "video 'happy9_1' (happy9) is not in the video naming worksheet",
        "type 'spotted' is neither a micro- nor a macro-expression"]


def test_samm_long_videos_take_micro_emotions_from_the_micro_sheet(tmp_path):
    root = tmp_path / "SAMM_longvideos"
    samm_long_tree(root, rows=[
        [6, "006_1_1", 100, 105, 110, 11, "Micro - 1/2", "R12", None],
        [6, "006_1_2", 200, -1, 260, 61, "Macro", "4+7", None],  # apex -1: the midpoint
        [6, "006_1_3", 300, 305, 310, 11, "Micro - 1/2", "14", "not in the micro sheet"],
        [6, "006_2_1", 1, 2, 3, 3, "Micro - 1/2", "4", None],  # no such video folder
        [6, "0061", 1, 2, 3, 3, "Micro - 1/2", "4", None],  # not <subject>_<video>_<interval>
    ], frames={"006_1": range(95, 315)},
        micro_rows=[[6, "006_1_1", 1, 100, 105, 110, 11, "Micro - 1/2", "R12", "Happiness", 2, None]])
    result = _read("samm_long", root)
    assert [(c.item, c.subject, c.kind, c.label, c.apex, c.fps, c.action_units) for c in result.clips] == [
        ("006_1 frames 100-110", "006", "micro", "happiness", 105, 200.0, "R12"),
        ("006_1 frames 200-260", "006", "macro", None, 230, 200.0, "4+7"),
        ("006_1 frames 300-310", "006", "micro", None, 305, 200.0, "14")]
    assert result.clips[0].frames[0][1].name == "006_1_0100.jpg"
    assert list(_reasons(result).values()) == ["clip folder 006_2 does not exist",
                                               "Filename '0061' is not <subject>_<video>_<interval>"]


def test_long_video_data_sets_are_of_kind_long():
    from pydantic import ValidationError

    from mer_core.config import DatasetSource

    assert DatasetSource(name="c", adapter="casme_sq", root=Path("x"), kind="long").kind == "long"
    for adapter, kind in (("casme_sq", "micro"), ("casme2", "long")):
        with pytest.raises(ValidationError, match="kind 'long' is for the long-video adapters"):
            DatasetSource(name="c", adapter=adapter, root=Path("x"), kind=kind)


# --------------------------------------------------------------------------- CK+
def test_ckplus_sequences_end_at_the_peak_labelled_or_not(tmp_path):
    ckplus_tree(tmp_path, sequences={"S005/001": 12, "S005/002": 10, "S010/001": 3, "S011/001": 8, "S011/002": 8,
                                     "S011/003": 8},
                emotions={"S005/001": "   3.0000000e+00\n", "S011/001": "abc", "S011/002": "9.0000000e+00",
                          "S011/003": ["5.0", "6.0"], "S099/001": "1.0"})
    result = _read("ckplus", tmp_path)
    assert [(c.item, c.subject, c.label, c.onset, c.apex, c.offset, c.fps) for c in result.clips] == [
        ("S005/001", "S005", "disgust", 1, 12, 12, 30.0), ("S005/002", "S005", None, 1, 10, 10, 30.0)]
    assert _numbers(result.clips[0]) == [6, 8, 10, 12]  # stride 2, ending at the peak frame
    assert _numbers(result.clips[1]) == [4, 6, 8, 10]
    reasons = _reasons(result)
    assert reasons["S010/001"] == "sequence S010/001 has 3 numbered image(s), fewer than 4"
    assert reasons["S011/001"] == "Emotion/S011/001/S011_001_00000008_emotion.txt does not hold an emotion code: 'abc'"
    assert "is not one of 0-7" in reasons["S011/002"]
    assert reasons["S011/003"].startswith("2 emotion files in Emotion/S011/003")
    assert reasons["Emotion/S099/001/S099_001_00000001_emotion.txt"] == "emotion label for a sequence with no images"
    assert len(reasons) == 5


# --------------------------------------------------------------------------- DFEW, Aff-Wild2
def test_dfew_labels_clips_from_every_fold_file(tmp_path):
    dfew_tree(tmp_path, clips={"00001": range(1, 31), "00002": range(1, 17), "00003": range(1, 17),
                               "00004": range(1, 3), "00005": range(1, 17)},
              label_files={"single_trainset_1.csv": "order,label\n1,5\n2,1\n3,2\n",
                           "single_testset_1.csv": "order,label\n5,7\n",
                           "single_testset_2.csv": "order,label\n2,1\n3,6\nx,9\n"})  # 3: sad and disgust
    result = _read("dfew", tmp_path)
    assert [(c.item, c.subject, c.label, c.onset, c.offset, c.fps) for c in result.clips] == [
        ("data_affine/single_label/data/00001", "00001", "surprise", 1, 30, 25.0),
        ("data_affine/single_label/data/00002", "00002", "happy", 1, 16, 25.0),
        ("data_affine/single_label/data/00003", "00003", None, 1, 16, 25.0),
        ("data_affine/single_label/data/00005", "00005", "fear", 1, 16, 25.0)]
    assert _numbers(result.clips[0]) == [12, 14, 16, 18]  # a window in the middle, stride 2
    assert result.clips[0].frames[0][1].name == "00001_00012.jpg"
    assert _reasons(result) == {
        "single_trainset_1.csv row 4": "clip 3 is sad here but disgust in single_testset_2.csv row 3",
        "single_testset_2.csv row 4": "expected a clip number and a code 1-7, got ['x', '9']",
        "data_affine/single_label/data/00004": "clip data_affine/single_label/data/00004 has 2 frame(s), fewer than 4"}


def test_affwild2_gives_a_clip_per_labelled_run_and_ignores_minus_one(tmp_path):
    classes = [0] * 10 + [-1] * 5 + [4] * 12 + [6] * 3  # neutral, ignored, happiness, a short surprise
    affwild2_tree(tmp_path, videos={
        "10-60-1280x720_right": ("Train_Set", classes, [n for n in range(1, 31) if n != 20]),  # no face at frame 20
        "10-60-1280x720_left": ("Validation_Set", [7] * 8, range(1, 9)),
        "missing_video": ("Train_Set", [1] * 8, []),
    })
    (tmp_path / "Annotations/EXPR_Classification_Challenge/Train_Set/bad.txt").write_text("Neutral,Happy\n0\n")
    result = _read("affwild2", tmp_path)
    assert [(c.item, c.subject, c.label, c.onset, c.offset) for c in result.clips] == [
        ("cropped_aligned/10-60-1280x720_right frames 1-10", "10-60-1280x720_right", "neutral", 1, 10),
        ("cropped_aligned/10-60-1280x720_right frames 16-27", "10-60-1280x720_right", "happiness", 16, 27),
        ("cropped_aligned/10-60-1280x720_left frames 1-8", "10-60-1280x720_left", "other", 1, 8)]
    assert _numbers(result.clips[1]) == [18, 21, 23, 25]  # frames on disk only (20 has no face)
    assert _reasons(result) == {
        "Annotations/EXPR_Classification_Challenge/Train_Set/bad.txt":
            "bad.txt: the first line is not Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other",
        "Annotations/EXPR_Classification_Challenge/Train_Set/missing_video.txt":
            "clip folder cropped_aligned/missing_video holds no numbered images"}


# --------------------------------------------------------------------------- every adapter
@pytest.mark.parametrize("adapter", sorted(ONE_CLIP_TREES))
def test_one_clip_fixture_reads_cleanly(tmp_path, adapter):
    build, options = ONE_CLIP_TREES[adapter]
    result = _read(adapter, build(tmp_path), **options)
    assert len(result.clips) == 1 and not result.rejections
    assert len(result.clips[0].frames) == 4 and all(path.is_file() for _, path in result.clips[0].frames)


@pytest.mark.parametrize("adapter", ["casme2", "samm", "casme3", "mmew"])
def test_sheet_adapters_reject_an_unreadable_sheet(tmp_path, adapter):
    build, options = ONE_CLIP_TREES[adapter]
    root = build(tmp_path)
    sheet = next(p for p in tmp_path.rglob("*.xlsx"))
    sheet.write_text("Subject;Filename\nthis is not a workbook")
    with pytest.raises(AnnotationError, match=f"cannot read .*{re.escape(sheet.name)}"):
        _read(adapter, root, **options)


# --------------------------------------------------------------------------- label protocols
SAMM_PUBLISHED_COUNTS = {"anger": 57, "contempt": 12, "disgust": 9, "fear": 8, "happiness": 26, "sadness": 6,
                         "surprise": 15, "other": 26}


def test_composite_protocol_is_megc2019():
    samm = [label for label, n in SAMM_PUBLISHED_COUNTS.items() for _ in range(n)]
    composite = Counter(composite_label("samm", label) for label in samm)
    assert composite == {"negative": 92, "positive": 26, "surprise": 15, None: 26}  # 133 clips, as published
    assert {label: composite_label("casme2", label) for label in sorted(NATIVE_LABELS["casme2"])} == {
        "disgust": "negative", "fear": None, "happiness": "positive", "others": None, "repression": "negative",
        "sadness": None, "surprise": "surprise"}
    assert all(composite_label("smic", label) == label for label in NATIVE_LABELS["smic"])
    assert composite_label("mmew", "happiness") is None and composite_label("casme2", None) is None


def test_casme2_labels_select_the_five_class_protocol(tmp_path):
    casme2_tree(tmp_path, [[1, "EP01_01", None, 10, 12, 16, None, "4", "fear"],
                           [1, "EP01_02", None, 10, 12, 16, None, "12", "happiness"]],
                {"sub01/EP01_01": range(10, 17), "sub01/EP01_02": range(10, 17)})
    five = CASME2_FIVE_CLASSES
    result = _read("casme2", tmp_path, labels=five)
    assert [c.label for c in result.clips] == ["happiness"] and result.allowed_labels == frozenset(five)
    assert [r.reason for r in result.rejections] == [f"emotion 'fear' is not among this data set's labels {five}"]


def test_label_mappings_read_a_data_set_under_another_protocol(tmp_path):
    from mer_core.config import DatasetSource
    from mer_core.data.ingest import DatasetSummary, protocol_labels
    from mer_core.data.labels import LABEL_MAPPINGS

    casme3_tree(tmp_path, rows=[["spNO.1", "a", 100, 105, 110, "4", "", "anger"],
                                ["spNO.1", "a", 120, 125, 130, "12", "", "happy"],
                                ["spNO.1", "a", 140, 145, 150, "", "", "others"]], frames={"spNo.1/a": range(95, 155)})
    listing = _read("casme3", tmp_path / "data", annotation="../annotation/cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx")
    for mapping, expected in (("casme3_4class", ["negative", "positive", "others"]),
                              ("casme3_3class", ["negative", "positive"])):
        source = DatasetSource(name="c3", adapter="casme3", root=tmp_path, kind="micro", label_mapping=mapping)
        labelled, rejections = protocol_labels(source, listing.clips, None, DatasetSummary())
        assert [clip.label for clip, _ in labelled] == expected
        assert [r.reason for r in rejections] == ([] if mapping == "casme3_4class" else
                                                  ["emotion 'others' is outside the casme3_3class protocol"])
    assert LABEL_MAPPINGS["casme2_3class"] == {"disgust": "negative", "repression": "negative",
                                               "happiness": "positive", "surprise": "surprise"}  # the 145-clip variant
    with pytest.raises(ValueError, match="label_mapping 'casme3_4class' is not one for adapter 'casme2'"):
        DatasetSource(name="c2", adapter="casme2", root=tmp_path, kind="micro", label_mapping="casme3_4class")


def test_the_megc_list_decides_label3_and_reports_what_it_and_the_data_leave_out(tmp_path, face_image):
    from mer_core.config import DatasetSource, IngestParams
    from mer_core.data.ingest import ingest
    from mer_core.data.labels import CompositeListError, read_composite_list
    from mer_core.data.store import CLIPS_DIR, read_clips

    casme2_tree(tmp_path / "casme2", [[1, "EP02_01f", None, 10, 12, 15, None, "12", "happiness"],
                                      [2, "EP03_02", None, 10, 12, 15, None, "14", "repression"],
                                      [4, "EP12_01f", None, 10, 12, 15, None, "4", "disgust"]],
                {"sub01/EP02_01f": range(10, 16), "sub02/EP03_02": range(10, 16), "sub04/EP12_01f": range(10, 16)},
                frame_image=face_image)
    samm_tree(tmp_path / "samm", [[6, "006_1_2", 1, 10, 12, 15, 6, "Micro - 1/2", "R12", "Happiness", 2, None]],
              {"006/006_1_2": range(10, 16)}, frame_image=face_image)
    # As published: no header, CRLF, SAMM subjects unpadded, CASME II names mostly without the `f`.
    (tmp_path / "gt.csv").write_bytes(b"casme2,sub01,EP02_01,1\r\ncasme2,sub02,EP03_02,0\r\n"
                                      b"casme2,sub05,EP01_01,2\r\nsamm,6,006_1_2,1\r\n")
    sources = [DatasetSource(name="c2", adapter="casme2", root=tmp_path / "casme2", kind="micro"),
               DatasetSource(name="sm", adapter="samm", root=tmp_path / "samm", kind="micro")]
    params = IngestParams(datasets=sources, crop_size=32, frames_per_clip=4, workers=1,
                          composite_list=tmp_path / "gt.csv")
    summaries = ingest(params, tmp_path / "interim")
    rows = read_clips(tmp_path / "interim" / CLIPS_DIR, columns=["source_path", "label", "label3"]).to_pylist()
    assert sorted((r["source_path"], r["label"], r["label3"]) for r in rows) == [
        ("006/006_1_2", "happiness", "positive"), ("sub01/EP02_01f", "happiness", "positive"),
        ("sub02/EP03_02", "repression", "negative"), ("sub04/EP12_01f", "disgust", None)]  # left out by the list
    report = summaries["c2"].as_report()
    assert (report["composite_listed"], report["composite_not_found"], report["composite_not_listed"]) == (
        3, ["casme2,5,ep1_1 (line 3)"], ["sub04/EP12_01f"])
    assert summaries["sm"].as_report()["composite_not_listed"] == []
    (tmp_path / "bad.csv").write_text("casme2,sub01,EP02_01,3\n")
    with pytest.raises(CompositeListError, match="line 1: expected dataset, subject, filename, class 0/1/2"):
        read_composite_list(tmp_path / "bad.csv")


def test_every_adapter_has_native_labels_and_a_config_name():
    from typing import get_args

    from mer_core.config import AdapterName, LabelMapping
    from mer_core.data.labels import LABEL_MAPPINGS

    assert set(get_args(AdapterName)) == set(ADAPTERS)
    assert set(get_args(LabelMapping)) == set(LABEL_MAPPINGS)
    assert set(NATIVE_LABELS) == set(ADAPTERS) - {"videos", "casme3_c"}  # free-form; no emotions


# --------------------------------------------------------------------------- through ingest
@pytest.fixture(scope="module")
def face_image():
    """One rendered synthetic face (128², BGR) that the ingest face detector finds."""
    from mer_core.data.synthetic import ACTION_UNITS, FaceRenderer, sample_identity

    face = FaceRenderer(sample_identity(np.random.default_rng(3)), 128).render(np.zeros((len(ACTION_UNITS), 2)))
    return lambda n: face


def test_samm_and_ckplus_fixtures_ingest_into_clip_rows(tmp_path, face_image):
    from mer_core.config import DatasetSource, IngestParams
    from mer_core.data.ingest import ingest
    from mer_core.data.store import CLIPS_DIR, read_clips

    samm_tree(tmp_path / "samm", [[6, "006_1_2", 1, 5562, 5566, 5570, 9, "Micro - 1/2", "R12", "Happiness", 2, None],
                                  [6, "006_1_3", 1, 10, 12, 90, 9, "Micro - 1/2", "R12", "Happiness", 2, None]],
              {"006/006_1_2": range(5560, 5572)}, frame_image=face_image)
    (tmp_path / "corrections.csv").write_text("dataset,subject,filename,field,old,new,source\n"
                                              "samm,006,006_1_2,action_units,R12,R12+R14,test\n")
    ckplus_tree(tmp_path / "ckplus", {"S005/001": 9}, {"S005/001": "7.0"}, frame_image=face_image)
    casme_sq_tree(tmp_path / "casme_sq", [[1, "disgust1_1", 100, 103, 106, "4", "negative", "micro-expression", ""],
                                          [1, "disgust1_2", 108, 112, 0, "4", "negative", "macro-expression", ""]],
                  [["x", 15, 1]], [["0101", "disgust1"]], {"s15/15_0101disgustingteeth": range(100, 113)},
                  frame_image=face_image)
    sources = [DatasetSource(name="samm", adapter="samm", root=tmp_path / "samm", kind="micro"),
               DatasetSource(name="ck", adapter="ckplus", root=tmp_path / "ckplus", kind="macro"),
               DatasetSource(name="sq", adapter="casme_sq", root=tmp_path / "casme_sq", kind="long")]
    params = IngestParams(datasets=sources, crop_size=32, frames_per_clip=4,
                          workers=1, rows_per_shard=8, row_group_size=4)
    summaries = ingest(params, tmp_path / "interim", corrections=tmp_path / "corrections.csv")
    table = read_clips(tmp_path / "interim" / CLIPS_DIR).drop_columns(["frames"]).to_pylist()
    assert sorted((r["kind"], r["onset"], r["offset"]) for r in table if r["dataset"] == "sq") == [
        ("macro", 108, 112), ("micro", 100, 106)]  # a long video gives both kinds
    rows = {r["dataset"]: r for r in table}
    assert summaries["samm"].rows == summaries["ck"].rows == 1 and summaries["samm"].rejected == 1
    samm, ck = rows["samm"], rows["ck"]
    assert (samm["kind"], samm["label"], samm["label3"], samm["fps"]) == ("micro", "happiness", "positive", 200.0)
    assert (samm["action_units"], samm["corrections"], ck["corrections"]) == ("R12+R14", "action_units R12→R12+R14 (test)",
                                                                              None)
    assert summaries["samm"].corrected == 1
    assert samm["frame_indices"] == micro_frame_numbers(5562, 5566, 5570, 4)
    assert (ck["kind"], ck["label"], ck["label3"], ck["subject"]) == ("macro", "surprise", None, "S005")
    assert ck["frame_indices"] == [3, 5, 7, 9]


# --------------------------------------------------------------------------- sheet corrections
def _corrections(tmp_path, *rows: str):
    from mer_core.data.corrections import load_corrections

    path = tmp_path / "corrections.csv"
    path.write_text("# a comment line\ndataset,subject,filename,field,old,new,source\n" + "\n".join(rows) + "\n")
    return load_corrections(path)


def test_sheet_corrections_apply_by_clip_whatever_the_row(tmp_path, caplog):
    root = tmp_path / "casme2"
    casme2_tree(root, [[1, "EP01_01", None, 10, 25, 16, None, "12", "happiness"],  # apex outside: corrected
                       ["01", "EP01_02f", None, 10, 12, 16, None, "4", "disgust"],  # old value differs: left alone
                       [2, "EP01_01", None, 10, 12, 16, None, "12", "happiness"]],
                {f"sub0{s}/EP01_0{c}": range(10, 17) for s, c in ((1, 1), (2, 1))} | {"sub01/EP01_02f": range(10, 17)})
    table = _corrections(tmp_path, "casme2,1,ep01_01,apex,25,13,test: row 2 apex",
                         "casme2,001,EP01_02f,emotion,happiness,others,test: stale",
                         "casme2,9,EP09_09,offset,,20,test: no such clip",
                         "samm,1,EP01_01,apex,,11,test: another data set")
    with caplog.at_level("INFO", logger="mer_core.data.corrections"):
        result = read_dataset("casme2", "c2", root, annotation=None, fps=None, frames_per_clip=4, corrections=table)
    assert not result.rejections
    assert [(c.item, c.apex, c.label, c.corrections) for c in result.clips] == [
        ("sub01/EP01_01", 13, "happiness", "apex 25→13 (test: row 2 apex)"),
        ("sub01/EP01_02f", 12, "disgust", None), ("sub02/EP01_01", 12, "happiness", None)]
    log = caplog.text
    assert "row 2 (1/EP01_01): corrected ApexFrame '25' → '13' (test: row 2 apex)" in log
    assert "correction line 4 left alone: Estimated Emotion is 'disgust', not 'happiness'" in log
    assert "correction line 5 (casme2 9/EP09_09) matches no row" in log and "EP01_01) matches" not in log


def test_the_corrections_table_is_checked_when_read(tmp_path):
    from mer_core.data.corrections import CorrectionsError, load_corrections

    assert all(c.dataset and c.source for c in load_corrections())  # the shipped table parses
    with pytest.raises(CorrectionsError, match="line 3: field 'frame' is not one of"):
        _corrections(tmp_path, "casme2,1,EP01_01,frame,,13,x")
    with pytest.raises(CorrectionsError, match=r"missing column\(s\) \['source'\]"):
        (tmp_path / "bad.csv").write_text("dataset,subject,filename,field,old,new\n")
        load_corrections(tmp_path / "bad.csv")
