"""Tiny data-set trees in the published layouts (see /work/shared/DATASETS.md), sheet quirks
included, for the adapter tests and for running hostile files through every adapter.

Each builder writes small generated images (never real faces from these data sets) and
its annotation files under `root`, and returns the annotation it wrote (a sheet, or the
folder that holds the labels) so that a test can damage it. `frame_image(n)` gives the
image for frame number n: a flat grey square by default, a rendered face where a test
needs face detection to succeed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np
from openpyxl import Workbook

FrameImage = Callable[[int], np.ndarray]

CASME2_HEADER = ["Subject", "Filename", None, "OnsetFrame", "ApexFrame", "OffsetFrame", None, "Action Units",
                 "Estimated Emotion"]
CASME2_SHEET = "CASME2-coding-20140508.xlsx"
CASME_HEADER = ["Subject", "Filename", "OnsetF", "ApexF1", "OffsetF", "Duration", "Action Units", "Emotion"]
CASME_SHEET = "CASME_label_Ver_2.xlsx"
SAMM_HEADER = ["Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame", "Duration",
               "Micro", "Action Units", "Estimated Emotion", "Objective Classes", "Notes"]
SAMM_SHEET = "SAMM_Micro_FACS_Codes_v2.xlsx"
# The v2 sheet opens with a title block and notes; the header sits on row 14 here.
SAMM_PREAMBLE = [["SAMM - Spontaneous Micro-Facial Movement Dataset"], [], ["FACS coded micro-movements"],
                 ["Version 2"], [], ["Notes:", "Onset/Apex/Offset are frame numbers of the image names"],
                 ["", "Apex -1 means no apex was coded"], [], ["Inducement Code", "see the paper"], [], [],
                 ["Coders: 2"], []]
CASME3_HEADER = ["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Objective class", "emotion"]
CASME3_SHEET = "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx"
MMEW_HEADER = ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units",
               "Estimated Emotion", "remarks"]
MMEW_SHEET = "MMEW_Micro_Exp.xlsx"
CASME3_C_HEADER = ["sub", "count", "au", "onset", "offset"]
CASME3_C_SHEET = "CAS(ME)3_part_C_ME.xlsx"
SAMM_LONG_HEADER = ["Subject", "Filename", "Onset", "Apex", "Offset", "Duration", "Type", "Action Units", "Notes"]
SAMM_LONG_SHEET = "SAMM_LongVideos_V2_Release.xlsx"
FOURDME_HEADER = ["sub_ID", "fold_name", "Emotion", "Onset", "Apex", "Offset", "AUs", "Positive", "Negative",
                  "Surprise", "Repression", "Others", "AU1", "AU2", "AU4", "AU12"]
FOURDME_SHEET = "4DME_Labelling_Micro_release v1.xlsx"


def grey_image(n: int) -> np.ndarray:
    """An 8×8 grey frame whose level moves a little with the frame number."""
    return np.full((8, 8, 3), 100 + n % 50, np.uint8)


def write_images(folder: Path, names: dict[int, str], frame_image: FrameImage = grey_image) -> None:
    """Write frame number → file name into `folder` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    for n, name in names.items():
        if not cv2.imwrite(str(folder / name), frame_image(n)):
            raise OSError(f"could not write {folder / name}")


def write_sheet(path: Path, header: list, rows: Iterable[list], preamble: Iterable[list] = (),
                title: str = "Sheet1") -> Path:
    """An .xlsx workbook: the preamble rows, the header row, then the data rows."""
    book = Workbook()
    sheet = book.active
    sheet.title = title
    for row in [*preamble, header, *rows]:
        sheet.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    book.save(path)
    return path


def casme2_tree(root: Path, rows: list[list], frames: dict[str, Iterable[int]],
                frame_image: FrameImage = grey_image) -> Path:
    """`sub01/EP02_01f/img46.jpg`; `frames` maps `subXX/EPxx` to frame numbers."""
    for clip, numbers in frames.items():
        write_images(root / clip, {n: f"img{n}.jpg" for n in numbers}, frame_image)
    return write_sheet(root / CASME2_SHEET, CASME2_HEADER, rows)


def casme_tree(root: Path, rows: list[list], frames: dict[str, Iterable[int]],
               frame_image: FrameImage = grey_image) -> Path:
    """`sub01/EP01_5/EP01_5-1.jpg`; `frames` maps `subXX/EPxx_y` to frame numbers."""
    for clip, numbers in frames.items():
        name = clip.split("/")[-1]
        write_images(root / clip, {n: f"{name}-{n}.jpg" for n in numbers}, frame_image)
    return write_sheet(root / CASME_SHEET, CASME_HEADER, rows)


def samm_tree(root: Path, rows: list[list], frames: dict[str, Iterable[int]], preamble: list[list] = SAMM_PREAMBLE,
              frame_image: FrameImage = grey_image) -> Path:
    """`006/006_1_2/006_05562.jpg`; `frames` maps `006/006_1_2` to frame numbers."""
    for clip, numbers in frames.items():
        subject = clip.split("/")[0]
        write_images(root / clip, {n: f"{subject}_{n:05d}.jpg" for n in numbers}, frame_image)
    return write_sheet(root / SAMM_SHEET, SAMM_HEADER, rows, preamble)


def casme3_tree(root: Path, rows: list[list], frames: dict[str, Iterable[int]],
                frame_image: FrameImage = grey_image) -> Path:
    """`spNo.1/a/color/175.jpg` (plus an unused depth folder); `frames` maps `spNo.1/a` to
    frame numbers. The sheet goes to `annotation/` beside the data, as released."""
    for recording, numbers in frames.items():
        write_images(root / "data" / recording / "color", {n: f"{n}.jpg" for n in numbers}, frame_image)
        (root / "data" / recording / "depth").mkdir(parents=True, exist_ok=True)
    return write_sheet(root / "annotation" / CASME3_SHEET, CASME3_HEADER, rows, title="label")


def casme3_c_tree(root: Path, rows: list[list], frames: dict[str, Iterable[int]],
                  frame_image: FrameImage = grey_image) -> Path:
    """`C01/1/color/N.jpg` (the layout is undocumented; see the adapter); `frames` maps
    `C01/1` to frame numbers, or `C01/1/.` to write the frames in the clip folder itself."""
    for clip, numbers in frames.items():
        folder = root / clip if clip.endswith("/.") else root / clip / "color"
        write_images(folder, {n: f"{n}.jpg" for n in numbers}, frame_image)
    return write_sheet(root / CASME3_C_SHEET, CASME3_C_HEADER, rows)


def mmew_tree(root: Path, rows: list[list], frames: dict[str, Iterable[int]],
              frame_image: FrameImage = grey_image) -> Path:
    """`Micro_Expression/happiness/S01-01-001/1.jpg`; `frames` maps `happiness/S01-01-001`
    to frame numbers."""
    for clip, numbers in frames.items():
        write_images(root / "Micro_Expression" / clip, {n: f"{n}.jpg" for n in numbers}, frame_image)
    return write_sheet(root / MMEW_SHEET, MMEW_HEADER, rows)


def fourdme_tree(root: Path, rows: list[list], frames: dict[str, Iterable[int]], folder: str = "gray_micro",
                 frame_image: FrameImage = grey_image) -> Path:
    """`gray_micro/S01/fold1/N.jpg` (or another `folder`); `frames` maps `S01/fold1` to frame
    numbers (the release's image names are not documented: `N.jpg` here)."""
    for clip, numbers in frames.items():
        write_images(root / folder / clip, {n: f"{n}.jpg" for n in numbers}, frame_image)
    return write_sheet(root / FOURDME_SHEET, FOURDME_HEADER, rows)


def casme_sq_tree(root: Path, rows: list[list], subjects: list[list], videos: list[list],
                  frames: dict[str, Iterable[int]], frame_image: FrameImage = grey_image) -> Path:
    """`rawpic/s15/15_0101disgustingteeth/img1.jpg` and `code_final.xlsx`: the coding rows on
    a first worksheet without a header, then the subject and video naming worksheets as
    given; `frames` maps `s15/15_0101disgustingteeth` to frame numbers."""
    for video, numbers in frames.items():
        write_images(root / "rawpic" / video, {n: f"img{n}.jpg" for n in numbers}, frame_image)
    book = Workbook()
    for k, (title, table) in enumerate((("Sheet1", rows), ("naming rule1", subjects), ("naming rule2", videos))):
        sheet = book.active if k == 0 else book.create_sheet(title)
        sheet.title = title
        for row in table:
            sheet.append(row)
    root.mkdir(parents=True, exist_ok=True)
    book.save(root / "CAS(ME)^2code_final.xlsx")
    return root / "CAS(ME)^2code_final.xlsx"


def samm_long_tree(root: Path, rows: list[list], frames: dict[str, Iterable[int]], micro_rows: list[list] = (),
                   frame_image: FrameImage = grey_image) -> Path:
    """`006_1/006_1_0001.jpg` and the long-video sheet under SAMM's preamble; with `micro_rows`,
    the SAMM micro sheet beside it (where the emotions come from)."""
    for video, numbers in frames.items():
        write_images(root / video, {n: f"{video}_{n:04d}.jpg" for n in numbers}, frame_image)
    if micro_rows:
        write_sheet(root / SAMM_SHEET, SAMM_HEADER, micro_rows, SAMM_PREAMBLE)
    return write_sheet(root / SAMM_LONG_SHEET, SAMM_LONG_HEADER, rows, SAMM_PREAMBLE[:10])


def dfew_tree(root: Path, clips: dict[str, Iterable[int]], label_files: dict[str, str],
              frame_image: FrameImage = grey_image) -> Path:
    """`data_affine/single_label/data/00001/00001_00001.jpg` for each clip of `clips` (clip
    number → frame numbers) and `label/<file>` with the text `label_files` gives; returns
    the label folder."""
    for clip, numbers in clips.items():
        write_images(root / "data_affine/single_label/data" / clip, {n: f"{clip}_{n:05d}.jpg" for n in numbers},
                     frame_image)
    (root / "label").mkdir(parents=True, exist_ok=True)
    for name, text in label_files.items():
        (root / "label" / name).write_text(text)
    return root / "label"


AFFWILD2_HEADER = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"


def affwild2_tree(root: Path, videos: dict[str, tuple[str, list[int], Iterable[int]]],
                  frame_image: FrameImage = grey_image) -> Path:
    """`cropped_aligned/<video>/00001.jpg` and `Annotations/EXPR_Classification_Challenge/
    <set>/<video>.txt`: `videos` maps a video to (its set folder, the class index of every
    frame, the frame numbers that have an image). Returns the annotation folder."""
    annotations = root / "Annotations/EXPR_Classification_Challenge"
    for video, (split, classes, numbers) in videos.items():
        write_images(root / "cropped_aligned" / video, {n: f"{n:05d}.jpg" for n in numbers}, frame_image)
        (annotations / split).mkdir(parents=True, exist_ok=True)
        (annotations / split / f"{video}.txt").write_text("\n".join([AFFWILD2_HEADER, *map(str, classes)]) + "\n")
    return annotations


def smic_tree(root: Path, clips: dict[str, Iterable[int]], frame_image: FrameImage = grey_image) -> Path:
    """One subset folder (name `root` HS, VIS or NIR): `clips` maps a clip path such as
    `s1/micro/negative/s1_ne_01` to frame numbers, written as `reg_image022917.bmp`. An
    empty range leaves an empty folder. Returns `root` (the labels are its folders)."""
    for clip, numbers in clips.items():
        (root / clip).mkdir(parents=True, exist_ok=True)
        write_images(root / clip, {n: f"reg_image{n:06d}.bmp" for n in numbers}, frame_image)
    return root


def ckplus_tree(root: Path, sequences: dict[str, int], emotions: dict[str, str | list[str]],
                frame_image: FrameImage = grey_image) -> Path:
    """`cohn-kanade-images/S005/001/S005_001_00000001.png` with `sequences` mapping
    `S005/001` to its frame count, and `Emotion/S005/001/S005_001_000000NN_emotion.txt`
    holding the text `emotions` gives (a list writes one file per entry). Returns the
    Emotion folder."""
    for sequence, count in sequences.items():
        prefix = sequence.replace("/", "_")
        write_images(root / "cohn-kanade-images" / sequence,
                     {n: f"{prefix}_{n:08d}.png" for n in range(1, count + 1)}, frame_image)
    for sequence, texts in emotions.items():
        folder = root / "Emotion" / sequence
        folder.mkdir(parents=True, exist_ok=True)
        last = sequences.get(sequence, 1)
        for k, text in enumerate([texts] if isinstance(texts, str) else texts):
            (folder / f"{sequence.replace('/', '_')}_{last + k:08d}_emotion.txt").write_text(text)
    return root / "Emotion"


# One valid clip per adapter, for hostile-file corpora: adapter → (builder, read_dataset
# keyword arguments). A builder writes the tree under its root, which it returns: the
# root to pass to read_dataset (SMIC's must be named HS, VIS or NIR).
def _casme2_one(root: Path) -> Path:
    casme2_tree(root, [[1, "EP02_01f", None, 46, 48, 52, None, "12", "happiness"]],
                {"sub01/EP02_01f": range(44, 56)})
    return root


def _casme_one(root: Path) -> Path:
    casme_tree(root, [[1, "EP01_5", 10, 13, 18, 9, "4+9", "disgust"]], {"sub01/EP01_5": range(8, 20)})
    return root


def _samm_one(root: Path) -> Path:
    samm_tree(root, [[6, "006_1_2", 1, 5562, 5566, 5570, 9, "Micro - 1/2", "R12", "Happiness", 2, None]],
              {"006/006_1_2": range(5560, 5572)})
    return root


def _casme3_one(root: Path) -> Path:
    casme3_tree(root, [["spNO.1", "a", 100, 103, 108, "4", "negative", "disgust"]], {"spNo.1/a": range(98, 110)})
    return root / "data"


def _casme3_c_one(root: Path) -> Path:
    casme3_c_tree(root, [["C01", 1, "4+L10", 30, 40]], {"C01/1": range(28, 42)})
    return root


def _mmew_one(root: Path) -> Path:
    mmew_tree(root, [["S01", "S01-01-001", 2, 5, 9, "12", "happiness", None]], {"happiness/S01-01-001": range(1, 12)})
    return root


def _fourdme_one(root: Path) -> Path:
    fourdme_tree(root, [["S01", "fold1", "happy", 10, 13, 18, "AU12", 1, 0, 0, 0, 0, 0, 0, 0, 1]],
                 {"S01/fold1": range(8, 20)})
    return root


CASME_SQ_NAMING = ([["subject 1", 15, 1]], [["0101", "disgust1"]])


def _casme_sq_one(root: Path) -> Path:
    casme_sq_tree(root, [[1, "disgust1_1", 100, 103, 108, "4+9", "negative", "micro-expression", "disgust"]],
                  *CASME_SQ_NAMING, {"s15/15_0101disgustingteeth": range(98, 110)})
    return root


def _samm_long_one(root: Path) -> Path:
    samm_long_tree(root, [[6, "006_1_1", 100, 103, 108, 9, "Micro - 1/2", "R12", None]], {"006_1": range(98, 110)})
    return root


def _dfew_one(root: Path) -> Path:
    dfew_tree(root, {"00001": range(1, 13)}, {"single_testset_1.csv": "order,label\n1,5\n"})
    return root


def _affwild2_one(root: Path) -> Path:
    affwild2_tree(root, {"1-30-1280x720": ("Train_Set", [4] * 12, range(1, 13))})
    return root


def _smic_one(root: Path) -> Path:
    return smic_tree(root / "HS", {"s1/micro/negative/s1_ne_01": range(22917, 22929)})


def _ckplus_one(root: Path) -> Path:
    ckplus_tree(root, {"S005/001": 12}, {"S005/001": "   3.0000000e+00\n"})
    return root


ONE_CLIP_TREES: dict[str, tuple[Callable[[Path], Path], dict]] = {
    "casme": (_casme_one, {}),
    "casme2": (_casme2_one, {}),
    "samm": (_samm_one, {}),
    "casme3": (_casme3_one, {"annotation": f"../annotation/{CASME3_SHEET}"}),
    "mmew": (_mmew_one, {}),
    "smic": (_smic_one, {}),
    "ckplus": (_ckplus_one, {}),
    "4dme": (_fourdme_one, {}),
    "casme3_c": (_casme3_c_one, {}),
    "casme_sq": (_casme_sq_one, {"kind": "long"}),
    "samm_long": (_samm_long_one, {"kind": "long"}),
    "dfew": (_dfew_one, {}),
    "affwild2": (_affwild2_one, {}),
}
