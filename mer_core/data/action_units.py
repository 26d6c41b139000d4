"""Action units: the sheets' FACS codes read into AU sets, and the AU set each protocol scores.

The clip table keeps a clip's `action_units` as its sheet wrote them; this module reads
them. A code is tokens joined by `+` (or `,`, `;`, spaces): `AU4+L10`, `R12`, `1+2+5`,
`12C`. In a token, an `AU` prefix, a laterality (`L`, `R`, `B`, `U`: one-sided or both
sides; a one-sided AU is the same AU), and an intensity letter A-E are dropped. Two tags
take an AU out:
- `?` marks an AU the coders were unsure of (`4?`, or a lone `?`): left out;
- `(k)` marks an AU 4DME codes but MEB zeroes "unless asked": left out unless `keep_tagged`.
Tokens that name no AU (`none`, `/`, free text) are ignored.

An AU task scores a fixed AU set, one per protocol (`finetune.au_set`):
- `meb12`: the 12 AUs of MEB's cross-data-set AU task as we take them (1, 2, 4, 5, 6, 7, 9,
  10, 12, 14, 15, 17: the AUs frequent in CASME II, SAMM and CAS(ME)^3; which 12 MEB scores
  is unconfirmed here);
- `4dme`: the 8 AUs MEB scores on 4DME (1, 2, 4, 6, 7, 12, 17, 45);
- `synthetic`: the 13 AUs the synthetic benchmark's micro clips move
  (mer_core/data/synthetic.py MICRO_RECIPES; the test checks they agree).
An AU outside the set is dropped from the targets; a clip without any of them is a negative
for every AU.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

AU_SETS: dict[str, tuple[int, ...]] = {
    "meb12": (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17),
    "4dme": (1, 2, 4, 6, 7, 12, 17, 45),
    "synthetic": (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20),
}
_TOKEN = re.compile(r"^(?:AU)?[LRBU]?(\d+)(?:\.0+)?[A-E]?$", re.IGNORECASE)
_SEPARATORS = re.compile(r"[+,;\s]+")


def parse_action_units(code: str | None, keep_tagged: bool = False) -> frozenset[int]:
    """`AU4+L10` → {4, 10}; `R12+6(k)` → {12}; `4?+7` → {7} (see the module docstring)."""
    aus = set()
    for token in _SEPARATORS.split(code or ""):
        if "?" in token:
            continue
        tagged = token.lower().endswith("(k)")
        if tagged and not keep_tagged:
            continue
        match = _TOKEN.match(token[:-3] if tagged else token)
        if match:
            aus.add(int(match.group(1)))
    return frozenset(aus)


def au_names(au_set: str) -> list[str]:
    """`['AU1', 'AU2', ...]` of a named AU set."""
    return unit_names(AU_SETS[au_set])


def unit_names(units: Sequence[int]) -> list[str]:
    """`['AU1', 'AU2', ...]` of AU numbers."""
    return [f"AU{au}" for au in units]


def au_targets(codes: Sequence[str | None], au_set: str) -> np.ndarray:
    """(N, K) float32 multi-label targets: 1 where a clip's code holds the set's k-th AU."""
    aus = AU_SETS[au_set]
    parsed = [parse_action_units(code) for code in codes]
    return np.array([[float(au in clip) for au in aus] for clip in parsed], np.float32).reshape(len(codes), len(aus))


def au_code(row: Sequence[float], au_set: str) -> str:
    """A target or prediction row (K,) as a canonical code: `1+2` ('' for none)."""
    return "+".join(str(au) for au, on in zip(AU_SETS[au_set], row, strict=True) if on >= 0.5)
