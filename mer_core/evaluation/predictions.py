"""Held-out predictions: the table `finetune` writes and `evaluate` reads.

One row per (variant, seed, held-out clip): its fold, true and predicted class, class
probabilities of the last epoch, and the class predicted after every epoch (kept only
for the labelled 'oracle best epoch' figure).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PREDICTION_SCHEMA = pa.schema([
    ("variant", pa.string()),
    ("seed", pa.int32()),
    ("fold", pa.int32()),
    ("clip_id", pa.string()),
    ("dataset", pa.string()),
    ("subject", pa.string()),
    ("label", pa.string()),
    ("predicted", pa.string()),
    ("probabilities", pa.list_(pa.float32())),
    ("predicted_per_epoch", pa.list_(pa.string())),
])


def prediction_row(clips, index: int, fold: int, probabilities: list[float], predicted_per_epoch: list[str],
                   variant: str, seed: int) -> dict:
    """One held-out prediction as `PREDICTION_SCHEMA` stores it: clip `index` of a
    `MicroClips`, its class probabilities (in `clips.classes` order) of the last epoch,
    and the class predicted after every epoch (only for the labelled oracle figure)."""
    return {"variant": variant, "seed": seed, "fold": fold, "clip_id": clips.clip_ids[index],
            "dataset": clips.datasets[index], "subject": clips.subjects[index],
            "label": clips.classes[int(clips.labels[index])],
            "predicted": clips.classes[max(range(len(probabilities)), key=probabilities.__getitem__)],
            "probabilities": probabilities, "predicted_per_epoch": predicted_per_epoch}


def predictions_table(rows: list[dict], classes: list[str]) -> pa.Table:
    """The prediction rows as a table; `probabilities` follow the order in the `classes` metadata."""
    table = pa.Table.from_pylist(rows, schema=PREDICTION_SCHEMA)
    return table.replace_schema_metadata({"classes": ",".join(classes)})


def read_predictions(path: Path) -> list[dict]:
    if not Path(path).exists():
        raise FileNotFoundError(f"no predictions at {path}; run the finetune stage first")
    return pq.read_table(path).to_pylist()
