"""Known errors of the published annotation sheets, corrected from a versioned table.

`corrections.csv` beside this module holds one row per corrected cell, keyed by the
clip rather than by a row number, so that a correction survives a new sheet version
and a reviewer reads what changed and why:

    dataset,subject,filename,field,old,new,source

- `dataset`: the published data set, by its adapter's name (`casme2`, `samm`, `casme3`, ...).
- `subject`, `filename`: as the sheet writes them; compared ignoring case and leading
  zeros (`6` is `006`, `EP02_01f` is `ep2_1f`).
- `field`: `onset`, `apex`, `offset`, `action_units` or `emotion` (each adapter maps
  them onto its sheet's columns).
- `old`: the value the sheet holds. A correction applies only to a row that still
  holds it, so a sheet version that fixed the error, or another expression of the same
  recording (CAS(ME)^3 repeats filenames), is left alone; empty: any value.
- `new`: the value to use; `source`: where the correction comes from.
Lines starting with `#` are comments.

Ingest applies the table to every sheet row before parsing it (a row that a wrong
apex would reject becomes a clip), logs one line per correction applied, left alone or
matching no row, and records what changed in the clip table's `corrections` column.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mer_core import MerError

log = logging.getLogger(__name__)

CORRECTIONS_TABLE = Path(__file__).with_name("corrections.csv")
COLUMNS = ("dataset", "subject", "filename", "field", "old", "new", "source")
FIELDS = frozenset({"onset", "apex", "offset", "action_units", "emotion"})


class CorrectionsError(MerError, ValueError):
    """The corrections table cannot be used (unreadable, wrong columns, unknown field)."""


def clip_key(text: object) -> str:
    """A subject or filename as corrections compare it: case-folded, digit runs without
    leading zeros (`006` → `6`, `EP02_01f` → `ep2_1f`), a float cell's `.0` dropped."""
    value = str(text).strip()
    if re.fullmatch(r"\d+\.0+", value):
        value = value.split(".")[0]
    return re.sub(r"\d+", lambda m: str(int(m.group())), value.casefold())


@dataclass(frozen=True)
class Correction:
    dataset: str
    subject: str
    filename: str
    field: str
    old: str | None
    new: str
    source: str
    line: int  # in the table, for messages

    @property
    def key(self) -> tuple[str, str]:
        return clip_key(self.subject), clip_key(self.filename)

    def describe(self) -> str:
        """What the clip table records: no subject or filename (anonymize scans for them)."""
        return f"{self.field} {self.old if self.old is not None else '?'}→{self.new} ({self.source})"


@dataclass
class SheetCorrections:
    """The corrections of one data set, and which of them a sheet used."""

    entries: list[Correction] = field(default_factory=list)
    used: set[int] = field(default_factory=set)

    def apply(self, row: pd.Series, subject: object, filename: object, columns: Mapping[str, str | None],
              where: str) -> tuple[pd.Series, str | None]:
        """`row` with every correction of (subject, filename) applied, and the text the
        clip table records (None: nothing changed); `columns` maps a field onto its sheet
        column (None: the sheet has no such column).

        Raises:
            ValueError: a correction names a field this sheet does not have.
        """
        key = (clip_key(subject), clip_key(filename))
        applied = []
        for correction in (c for c in self.entries if c.key == key):
            column = columns.get(correction.field)
            if column is None:
                raise ValueError(f"corrections line {correction.line}: this sheet has no {correction.field}")
            self.used.add(correction.line)
            current = _cell(row.get(column))
            if correction.old is not None and clip_key(current) != clip_key(correction.old):
                log.info("%s: correction line %d left alone: %s is %r, not %r", where, correction.line, column,
                         current, correction.old)
                continue
            row = row.copy()
            row[column] = correction.new
            applied.append(correction.describe())
            log.info("%s: corrected %s %r → %r (%s)", where, column, current, correction.new, correction.source)
        return row, "; ".join(applied) or None

    def warn_unused(self, sheet: str) -> None:
        """One warning per correction whose clip no row of `sheet` names."""
        for correction in self.entries:
            if correction.line not in self.used:
                log.warning("%s: correction line %d (%s %s/%s) matches no row", sheet, correction.line,
                            correction.dataset, correction.subject, correction.filename)


def _cell(value) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    return str(value).strip() or None


def _parse(line: int, row: dict[str, str]) -> Correction:
    values = {k: (row.get(k) or "").strip() for k in COLUMNS}
    missing = [k for k in ("dataset", "subject", "filename", "field", "new") if not values[k]]
    if missing:
        raise CorrectionsError(f"corrections line {line}: {', '.join(missing)} missing")
    if values["field"] not in FIELDS:
        raise CorrectionsError(f"corrections line {line}: field {values['field']!r} is not one of {sorted(FIELDS)}")
    return Correction(values["dataset"].lower(), values["subject"], values["filename"], values["field"],
                      values["old"] or None, values["new"], values["source"] or "unattributed", line)


def load_corrections(path: Path | None = CORRECTIONS_TABLE) -> list[Correction]:
    """Every correction of the table at `path` (None: no corrections).

    Raises:
        CorrectionsError: the file cannot be read, lacks a column, or a row is incomplete.
    """
    if path is None:
        return []
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CorrectionsError(f"cannot read corrections table {path}: {exc.strerror or exc}") from None
    numbered = [(k, line) for k, line in enumerate(text.splitlines(), start=1)
                if line.strip() and not line.lstrip().startswith("#")]
    if not numbered:
        raise CorrectionsError(f"{path}: no header line")
    reader = csv.DictReader(io.StringIO("\n".join(line for _, line in numbered)))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise CorrectionsError(f"{path}: missing column(s) {missing}; found {reader.fieldnames}")
    return [_parse(line, row) for (line, _), row in zip(numbered[1:], reader, strict=True)]


def corrections_for(dataset: str, entries: list[Correction]) -> SheetCorrections:
    """The corrections of one published data set (by adapter name)."""
    return SheetCorrections([c for c in entries if c.dataset == dataset])
