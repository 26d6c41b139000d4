"""What the adapters share: the `RawClip` they produce, and reading annotation sheets.

An adapter only parses layouts and annotation sheets: it never decodes pixels. Every
row or file it cannot use becomes a `Rejection` naming the item and the problem.
Here: sheet loading (header row located by its column names), the row loop with
duplicate detection, onset/apex/offset checks, and the numbered images of clip folders.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from mer_core import MerError
from mer_core.data.corrections import SheetCorrections
from mer_core.data.store import Rejection
from mer_core.data.video import macro_windows, micro_frame_numbers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawClip:
    """One clip as the layout describes it, before any pixel is read.

    Either `video` is set (windows are chosen once its length is known) or `frames`
    lists the (frame number, image path) pairs already sampled from an image sequence.
    """

    item: str  # location relative to the data set root; interim only
    subject: str  # the data set's own subject identifier (pseudonymised later)
    label: str | None
    onset: int | None
    apex: int | None
    offset: int | None
    fps: float | None
    action_units: str | None = None
    video: Path | None = None
    frames: tuple[tuple[int, Path], ...] = ()
    corrections: str | None = None  # what the corrections table changed in its sheet row
    kind: str | None = None  # "micro" or "macro" when the layout says (long videos); else the data set's kind


@dataclass(frozen=True)
class AdapterResult:
    clips: list[RawClip]
    rejections: list[Rejection]
    allowed_labels: frozenset[str] | None  # None: labels are free-form


class AnnotationError(MerError, ValueError):
    """An annotation sheet cannot be used at all (missing, unreadable, wrong columns)."""


def cell_text(value) -> str | None:
    """A sheet or CSV cell as stripped text; None for empty cells and NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def parse_frame_number(value, column: str) -> int:
    """An annotation cell as a frame number; ValueError with the column name otherwise."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
        raise ValueError(f"{column} is missing")
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{column} is not a number: {text!r}") from None
    if not number.is_integer() or number < 0:
        raise ValueError(f"{column} is not a frame number: {text!r}")
    return int(number)


NUMBERED_IMAGE = re.compile(r"(\d+)\.(?:jpe?g|png|bmp|tiff?)$", re.IGNORECASE)


def one_line(message: object, limit: int = 300) -> str:
    """A reason for the rejected table: one line, whitespace runs collapsed, at most `limit` characters."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def resolve_inside(root: Path, path: Path, what: str) -> Path:
    """`path` with its symlinks followed, if that stays inside `root`.

    A data set is read from its root and nowhere else: a symlink from inside to a file
    elsewhere on the machine is refused, not followed (a path that does not exist is
    returned as it is, for the caller to report).

    Raises:
        ValueError: `path` resolves outside `root`, or is a symlink loop.
    """
    try:
        resolved = Path(path).resolve()
    except (RuntimeError, OSError):  # Python 3.11 raises RuntimeError on a loop
        raise ValueError(f"{what} is a symlink loop") from None
    if not resolved.is_relative_to(Path(root).resolve()):
        raise ValueError(f"{what} resolves outside the data set root (a symlink to elsewhere)")
    return resolved


def numbered_images(folder: Path, root: Path | None = None, where: str = "") -> dict[int, Path]:
    """Frame number → image path for files like `img46.jpg` or `reg_img46.jpg`.

    Raises:
        ValueError: two files give one frame number (`img5.jpg` and `img05.jpg`: which is
            frame 5 cannot be told), or, with `root`, an image links outside it.
    """
    found: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        match = NUMBERED_IMAGE.search(path.name)
        if not match:
            continue
        if root is not None:
            resolve_inside(root, path, f"{where or folder.name}/{path.name}")
        if not path.is_file():
            continue
        number = int(match.group(1))
        if number in found:
            raise ValueError(f"{found[number].name} and {path.name} in {where or folder.name} are both frame {number}")
        found[number] = path
    return found


def child_ignoring_case(parent: Path, name: str) -> Path | None:
    """`parent/name`, else the one child whose name matches ignoring case (sheets and
    folders disagree on case, e.g. CAS(ME)^3's `spNO.1` vs `spNo.1`); None if absent.

    Raises:
        ValueError: several children match ignoring case.
    """
    exact = parent / name
    if exact.exists():
        return exact
    if not parent.is_dir():
        return None
    matches = sorted(p for p in parent.iterdir() if p.name.casefold() == name.casefold())
    if len(matches) > 1:
        raise ValueError(f"{[m.name for m in matches]} in {parent.name} all match {name!r} ignoring case")
    return matches[0] if matches else None


def subject_number(value, prefix: str = "") -> int:
    """`6`, `6.0`, `'006'` and `'<prefix>6'` all give 6; ValueError for anything else."""
    text = str(value).strip()
    if prefix and text.lower().startswith(prefix):
        text = text[len(prefix):]
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"Subject is not a subject number: {value!r}") from None
    if not number.is_integer() or number < 0:
        raise ValueError(f"Subject is not a subject number: {value!r}")
    return int(number)


def sheet_label(value, column: str, allowed: frozenset[str], native: frozenset[str]) -> str:
    """A sheet's emotion cell as a lower-case native label.

    Raises:
        ValueError: the label is not in `allowed`; the message says whether it is a
            native class that the data set's `labels` leave out or no class at all.
    """
    label = (cell_text(value) or "").lower()
    if label not in allowed and label not in native:
        raise ValueError(f"unknown emotion {value!r} in {column}; expected one of {sorted(allowed)}")
    return require_allowed(label, allowed)


def require_allowed(label: str, allowed: frozenset[str]) -> str:
    """`label` if the data set's `labels` allow it; ValueError naming them otherwise."""
    if label not in allowed:
        raise ValueError(f"emotion {label!r} is not among this data set's labels {sorted(allowed)}")
    return label


def required_text(row: pd.Series, column: str) -> str:
    """A cell that must not be empty, as text; ValueError naming the column otherwise."""
    text = cell_text(row[column])
    if text is None:
        raise ValueError(f"{column} is missing")
    return text


def folder_name(row: pd.Series, column: str) -> str:
    """A cell naming one folder of the layout; ValueError if it is empty or would reach
    elsewhere (a separator, `..`), so a sheet cannot point outside the data set root."""
    text = required_text(row, column)
    if "/" in text or "\\" in text or text in {".", ".."}:
        raise ValueError(f"{column} {text!r} is not a folder name")
    return text


# --------------------------------------------------------------------------- sheets
SHEET_SUFFIXES = frozenset({".xlsx", ".xlsm", ".xls", ".csv"})


def find_sheet(root: Path, annotation: str | None, pattern: str, what: str) -> Path:
    """`root/annotation` if given, else the last (newest-named) file matching `pattern`.

    Raises:
        AnnotationError: the named file is missing, or nothing matches.
    """
    if annotation:
        path = root / annotation
        if not path.is_file():
            raise AnnotationError(f"{what} {path} does not exist")
        return path
    candidates = sorted(p for p in root.glob(pattern) if p.suffix.lower() in SHEET_SUFFIXES and p.is_file())
    if not candidates:
        raise AnnotationError(f"no {what} ({pattern} as {'/'.join(sorted(SHEET_SUFFIXES))}) in {root}")
    if len(candidates) > 1:
        log.info("%d %ss in %s; using %s (set `annotation` to choose)", len(candidates), what, root,
                 candidates[-1].name)
    return candidates[-1]


def _column_key(text) -> str:
    return " ".join(str(text).split()).casefold()


def read_worksheets(path: Path, what: str) -> dict[str, pd.DataFrame]:
    """Worksheet name → header-less table whose index k is sheet row k + 1."""
    try:
        if path.suffix.lower() == ".csv":
            return {path.name: pd.read_csv(path, header=None, dtype=object, skip_blank_lines=False)}
        return pd.read_excel(path, sheet_name=None, header=None, dtype=object)
    except Exception as exc:  # pandas raises many types for a broken workbook; name the file
        raise AnnotationError(f"cannot read {what} {path}: {one_line(exc)}") from exc


def _header_row(table: pd.DataFrame, required: tuple[str, ...]) -> tuple[int | None, list[str]]:
    """(index of the first row naming every required column or None, the cells of the row
    naming the most of them)."""
    wanted = {_column_key(c) for c in required}
    best, best_hits = [], 0
    for index, cells in table.iterrows():
        names = [text for text in (cell_text(v) for v in cells) if text is not None]
        hits = len(wanted & {_column_key(n) for n in names})
        if hits == len(wanted):
            return index, names
        if hits > best_hits:
            best, best_hits = names, hits
    return None, best


def _column_names(cells: pd.Series, required: tuple[str, ...], where: str) -> list[str]:
    """The header's cells as column names: required ones in their canonical spelling,
    blanks as `Unnamed: <i>`, a repeated other name as `<name>.1`.

    Raises:
        AnnotationError: a required column appears twice (which one holds the data?).
    """
    canonical = {_column_key(c): c for c in required}
    names: list[str] = []
    for i, value in enumerate(cells):
        text = cell_text(value)
        name = f"Unnamed: {i}" if text is None else canonical.get(_column_key(text), text)
        if name in names:
            if name in required:
                raise AnnotationError(f"{where}: column {name!r} appears twice in the header (columns "
                                      f"{names.index(name) + 1} and {i + 1}); keep one")
            name = f"{name}.{names.count(name)}"
        names.append(name)
    return names


def read_sheet(path: Path, required: tuple[str, ...], what: str) -> pd.DataFrame:
    """The rows under every worksheet's header row, indexed by where each row is:
    `row 5`, or `Sheet2 row 5` when several worksheets hold rows.

    A worksheet's header row is the first one holding every required column name
    (compared ignoring case and repeated spaces): SAMM puts it under a preamble, CASME II
    on row 1. Every worksheet that has one is read (a release split over two coding
    worksheets loses neither); the others (a legend, notes) are left out with a log line.
    Required columns take the spelling of `required`; blank header cells become
    `Unnamed: <i>`.

    Raises:
        AnnotationError: the file cannot be read, no worksheet names every required
            column, or one names a required column twice.
    """
    found: list[str] = []
    tables, skipped = {}, []
    for worksheet, table in read_worksheets(path, what).items():
        header, cells = _header_row(table, required)
        if header is None:
            skipped.append(worksheet)
            found = found or cells
            continue
        rows = table.loc[header + 1:].copy()
        rows.columns = _column_names(table.loc[header], required, f"{path.name} [{worksheet}]")
        tables[worksheet] = rows
    if not tables:
        missing = [c for c in required if _column_key(c) not in {_column_key(f) for f in found}]
        raise AnnotationError(f"{path}: missing column(s) {missing}; found {found}")
    if skipped and path.suffix.lower() != ".csv":
        log.info("%s: worksheet(s) %s have no %s header; reading %s", path.name, skipped, what, list(tables))
    for worksheet, rows in tables.items():
        prefix = f"{worksheet} " if len(tables) > 1 else ""
        rows.index = [f"{prefix}row {k + 1}" for k in rows.index]
    return pd.concat(tables.values()) if len(tables) > 1 else next(iter(tables.values()))


def clips_from_sheet(name: str, sheet_path: Path, sheet: pd.DataFrame, required: tuple[str, ...],
                     parse_row: Callable[[pd.Series], RawClip]) -> tuple[list[RawClip], list[Rejection]]:
    """Run `parse_row` over every row (the sheet's index says where it is, `row 5`): a
    ValueError becomes a one-line Rejection naming the sheet row; rows blank in every
    required column are skipped.

    A clip is one event: (item, onset, offset). Two rows for the same event are a
    duplicate; two events in the same folder or video (a second expression, another
    onset) are two clips, their items told apart by their frames (`sub01/EP02 frames 10-40`).
    """
    clips, rejections, seen = [], [], {}
    for where_in_sheet, row in sheet.iterrows():
        if all(cell_text(row[c]) is None for c in required):
            continue  # blank spacer rows are common in and at the end of sheets
        where = f"{sheet_path.name} {where_in_sheet}"
        try:
            clip = parse_row(row)
        except ValueError as exc:
            rejections.append(Rejection(name, where, one_line(exc)))
            continue
        event = (clip.item, clip.onset, clip.offset)
        if event in seen:
            rejections.append(Rejection(name, where, f"duplicate clip {clip.item} (frames {clip.onset}-"
                                                     f"{clip.offset}, as {seen[event]})"))
            continue
        seen[event] = where
        clips.append(clip)
    return _distinct_items(clips), rejections


def _distinct_items(clips: list[RawClip]) -> list[RawClip]:
    """Clips that share an item (several events of one folder or video) get their frames in it."""
    counts = Counter(clip.item for clip in clips)
    return [replace(clip, item=f"{clip.item} frames {clip.onset}-{clip.offset}") if counts[clip.item] > 1 else clip
            for clip in clips]


# --------------------------------------------------------------------------- frames
def expression_interval(row: pd.Series, columns: tuple[str, str | None, str], where: str,
                        unknown_apex: frozenset[str | None] = frozenset()) -> tuple[int, int, int]:
    """(onset, apex, offset) from the sheet columns named in `columns`.

    An apex cell whose text is in `unknown_apex` (None: an empty cell) stands for the
    midpoint of onset and offset, as several MER papers do; the choice is logged. A sheet
    without an apex column (`columns[1]` None) gives every clip the midpoint, silently.

    Raises:
        ValueError: a frame number is missing or not a number, onset is after offset,
            or the apex lies outside [onset, offset].
    """
    onset_column, apex_column, offset_column = columns
    onset = parse_frame_number(row[onset_column], onset_column)
    offset = parse_frame_number(row[offset_column], offset_column)
    if onset > offset:
        raise ValueError(f"{onset_column} {onset} is after {offset_column} {offset}")
    if apex_column is None:
        return onset, (onset + offset) // 2, offset
    apex_text = cell_text(row[apex_column])
    if apex_text in unknown_apex:
        apex = (onset + offset) // 2
        log.info("%s: %s is %s, using the midpoint %d", where, apex_column,
                 "empty" if apex_text is None else repr(apex_text), apex)
    else:
        apex = parse_frame_number(row[apex_column], apex_column)
    if not onset <= apex <= offset:
        raise ValueError(f"{apex_column} {apex} is outside [{onset}, {offset}]")
    return onset, apex, offset


def clip_images(root: Path, folder: Path, item: str) -> dict[int, Path]:
    """Frame number → image path of a clip folder's numbered images.

    Raises:
        ValueError: the folder is missing, empty or outside `root`, an image links
            outside `root`, or two files give one frame number.
    """
    resolve_inside(root, folder, f"clip folder {item}")
    if not folder.is_dir():
        raise ValueError(f"clip folder {item} does not exist")
    images = numbered_images(folder, root, item)
    if not images:
        raise ValueError(f"clip folder {item} holds no numbered images")
    return images


def pick_frames(images: dict[int, Path], item: str, numbers: list[int]) -> tuple[tuple[int, Path], ...]:
    """(frame number, image path) for each of `numbers`; ValueError naming those not on disk."""
    missing = sorted({n for n in numbers if n not in images})
    if missing:
        raise ValueError(f"frame(s) {missing} missing from {item} "
                         f"(has {min(images)}..{max(images)}, {len(images)} images)")
    return tuple((n, images[n]) for n in numbers)


def sampled_frames(root: Path, folder: Path, item: str, numbers: list[int]) -> tuple[tuple[int, Path], ...]:
    """(frame number, image path) for each of `numbers` among the folder's numbered images.

    Raises:
        ValueError: the folder is missing, empty or outside `root`, a frame is not on
            disk, links outside `root`, or has two files.
    """
    return pick_frames(clip_images(root, folder, item), item, numbers)


def micro_clip(root: Path, item: str, subject: str, label: str | None, interval: tuple[int, int, int], folder: Path,
               fps: float, frames_per_clip: int, action_units: str | None) -> RawClip:
    """A micro clip whose frames are sampled onset→apex→offset from a folder of numbered images."""
    onset, apex, offset = interval
    frames = sampled_frames(root, folder, item, micro_frame_numbers(onset, apex, offset, frames_per_clip))
    return RawClip(item=item, subject=subject, label=label, onset=onset, apex=apex, offset=offset, fps=fps,
                   action_units=action_units, frames=frames)


def interval_frame_numbers(kind: str, interval: tuple[int, int, int], count: int) -> list[int]:
    """The frames a long video's interval gives: a micro interval sampled onset→apex→offset
    as a micro clip is; a macro interval `count` frames spread evenly from onset to offset
    (a pre-training window, steps a fraction of the expression apart whatever the frame rate).

    Raises:
        ValueError: a macro interval shorter than `count` frames.
    """
    onset, apex, offset = interval
    if kind == "micro":
        return micro_frame_numbers(onset, apex, offset, count)
    if offset - onset + 1 < count:
        raise ValueError(f"macro interval {onset}-{offset} is shorter than {count} frames")
    return [round(onset + (offset - onset) * k / (count - 1)) for k in range(count)]


def middle_window(numbers: list[int], count: int, stride: int) -> list[int]:
    """`count` of the sorted frame `numbers` on disk, `stride` positions apart, in their middle
    (a macro set's pre-training window; the stride shrinks for short runs); [] if too few."""
    span = (count - 1) * stride + 1
    windows = macro_windows(len(numbers), count, stride, 1, onset=max(0, (len(numbers) - span) // 2))
    return [numbers[k] for k in windows[0]] if windows else []


EXPRESSION_TYPES = ("micro", "macro")


def expression_type(value, column: str) -> str:
    """`micro` or `macro` from a long-video sheet's type cell (`micro-expression`, `Macro`,
    `Micro - 1/2`); ValueError for anything else."""
    text = (cell_text(value) or "").lower()
    kinds = [kind for kind in EXPRESSION_TYPES if kind in text]
    if len(kinds) != 1:
        raise ValueError(f"{column} {value!r} is neither a micro- nor a macro-expression")
    return kinds[0]


# --------------------------------------------------------------------------- coding sheets
@dataclass(frozen=True)
class CodingSheet:
    """How a micro-expression data set's coding sheet names things: one row per clip."""

    dataset: str  # the published data set, as the corrections table names it
    what: str  # the sheet in messages, e.g. "SAMM FACS-codes sheet"
    pattern: str  # glob in the data set root that finds the sheet when `annotation` is unset
    subject: str
    filename: str
    frames: tuple[str, str | None, str]  # onset, apex (None: the sheet has none, use the midpoint), offset columns
    emotion: str | None  # None: the sheet codes no emotion (clips stay unlabelled) or `one_hot` does
    action_units: str | None
    unknown_apex: frozenset[str | None] = frozenset()  # apex cells meaning "use the midpoint"
    one_hot: tuple[str, ...] = ()  # class columns, one holding 1 per row: the label is its name in lower case

    @property
    def required(self) -> tuple[str, ...]:
        columns = (self.subject, self.filename, *self.frames, self.emotion, *self.one_hot)
        return tuple(c for c in columns if c is not None)

    def label(self, row: pd.Series, allowed: frozenset[str], native: frozenset[str]) -> str | None:
        """The row's class (None when the sheet codes none); ValueError if unknown or unclear."""
        if self.one_hot:
            marked = [c for c in self.one_hot if cell_text(row[c]) not in {None, "0", "0.0"}]
            if len(marked) != 1:
                raise ValueError(f"expected one of the class columns {list(self.one_hot)} marked, found "
                                 f"{marked or 'none'}")
            return sheet_label(marked[0], "the class columns", allowed, native)
        return None if self.emotion is None else sheet_label(row[self.emotion], self.emotion, allowed, native)

    @property
    def corrected_columns(self) -> dict[str, str | None]:
        """The corrections table's fields → this sheet's columns."""
        onset, apex, offset = self.frames
        return {"onset": onset, "apex": apex, "offset": offset, "emotion": self.emotion,
                "action_units": self.action_units}


# (row, interval) -> (clip item, subject, folder of numbered images); ValueError if unusable.
Locate = Callable[[pd.Series, tuple[int, int, int]], tuple[str, str, Path]]


def in_subject_folders(root: Path, subject_folder: Callable[[object], str]) -> Locate:
    """The `Locate` of layouts that keep each clip at `root/<subject folder>/<Filename>/`
    (CASME II, SAMM); `subject_folder` turns the sheet's Subject cell into the folder name."""
    def locate(row: pd.Series, _interval: tuple[int, int, int]) -> tuple[str, str, Path]:
        subject = subject_folder(row["Subject"])
        filename = folder_name(row, "Filename")
        return f"{subject}/{filename}", subject, root / subject / filename
    return locate


def read_coding_sheet(name: str, root: Path, sheet: CodingSheet, locate: Locate, *, annotation: str | None,
                      fps: float, frames_per_clip: int, labels: frozenset[str] | None,
                      native: frozenset[str], corrections: SheetCorrections | None = None) -> AdapterResult:
    """Every usable row of a coding sheet as a micro clip; the others become rejections
    naming the sheet row: unknown emotion, bad or inverted frame numbers, missing folder
    or frames, duplicate clip. Allowed labels: `labels` if given, else `native`. Each row
    is first corrected from `corrections` (keyed by its Subject and Filename cells).

    Raises:
        AnnotationError: no readable sheet, or the sheet lacks a required column.
    """
    path = find_sheet(root, annotation, sheet.pattern, sheet.what)
    table = read_sheet(path, sheet.required, sheet.what)
    allowed = labels or native
    corrections = corrections or SheetCorrections()

    def parse(row: pd.Series) -> RawClip:
        named = f"{cell_text(row[sheet.subject])}/{cell_text(row[sheet.filename])}"
        row, corrected = corrections.apply(row, row[sheet.subject], row[sheet.filename], sheet.corrected_columns,
                                           f"{path.name} {row.name} ({named})")
        label = sheet.label(row, allowed, native)
        interval = expression_interval(row, sheet.frames, named, sheet.unknown_apex)
        item, subject, folder = locate(row, interval)
        action_units = cell_text(row.get(sheet.action_units)) if sheet.action_units else None
        clip = micro_clip(root, item, subject, label, interval, folder, fps, frames_per_clip, action_units)
        return replace(clip, corrections=corrected)

    clips, rejections = clips_from_sheet(name, path, table, sheet.required, parse)
    corrections.warn_unused(path.name)
    return AdapterResult(clips, rejections, allowed if native else None)
