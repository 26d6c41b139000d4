"""The validation suite on a tiny processed clip table, and on planted bad rows.

Real Parquet shards in tmp_path, real Great Expectations; each planted fault must fail
the check that names it, and only the checks it should.
"""

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from mer_core.config import ValidateParams
from mer_core.data.store import clip_schema, rows_to_table, write_table
from mer_core.data.validate import (
    ValidationResult,
    frame_statistics,
    validate_clips,
    write_validation_report,
)

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

FRAMES, SIZE = 4, 16
SUBJECTS = ("s-3fa9c2d1e0", "s-0b1c2d3e4f", "s-a1b2c3d4e5")
LABELS = ("happiness", "disgust", "surprise")
ALLOWED = {"casme2": {*LABELS, "fear", "others"}}
PARAMS = dict(min_clips_per_class=3, min_clips_per_subject=3, min_pixel_std=3.0)


def _noise(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(70, 190, (FRAMES, SIZE, SIZE, 3), dtype=np.uint8)  # (T, H, W, C) mid-grey noise


def valid_rows(seed: int = 0) -> list[dict]:
    """12 labelled micro clips (3 subjects x 4, 4 per class) and 4 unlabelled macro clips."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(12):
        rows.append(dict(
            clip_id=f"c-{i:04x}", dataset="casme2", subject=SUBJECTS[i % 3], kind="micro", label=LABELS[i // 4],
            label3={"happiness": "positive", "disgust": "negative", "surprise": "surprise"}[LABELS[i // 4]],
            onset=10, apex=14, offset=20, fps=200.0, action_units="4", frame_indices=[10, 12, 14, 20],
            face_box=[2, 3, 40, 40], face_score=0.9, frames=_noise(rng)))
    for i in range(4):
        rows.append(dict(
            clip_id=f"c-m{i:03x}", dataset="videos", subject=SUBJECTS[i % 2], kind="macro", label=None, label3=None,
            onset=None, apex=None, offset=None, fps=25.0, action_units=None, frame_indices=[0, 2, 4, 6],
            face_box=[0, 0, 50, 50], face_score=0.8, frames=_noise(rng)))
    return rows


def write_clips(tmp_path, rows: list[dict], schema: pa.Schema | None = None):
    clips_dir = tmp_path / "clips"
    schema = schema or clip_schema(FRAMES, SIZE, with_source=False)
    # Two shards of two row groups each: the reader must stream across both.
    write_table(rows_to_table(rows[:8], schema), clips_dir / "part-00000.parquet", row_group_size=4)
    write_table(rows_to_table(rows[8:], schema), clips_dir / "part-00001.parquet", row_group_size=4)
    return clips_dir


def validate(tmp_path, rows, schema=None, data_docs: Path | None = None, **overrides) -> ValidationResult:
    params = ValidateParams(**{**PARAMS, **overrides})
    return validate_clips(write_clips(tmp_path, rows, schema), params, ALLOWED, data_docs)


def failed_descriptions(result: ValidationResult) -> set[str]:
    return {check["description"] for check in result.failed}


def test_a_clean_table_passes_every_check(tmp_path):
    result = validate(tmp_path, valid_rows())
    assert result.success, result.summary()
    assert result.rows == 16
    assert len(result.checks) > 20
    assert result.summary().startswith("validation passed: 0 of")


# ---------------------------------------------------------------- planted faults


def _duplicate_clip_id(rows, schema):
    rows[9]["clip_id"] = rows[1]["clip_id"]  # across shards: uniqueness is over the whole table
    return rows, schema


def _null_subject(rows, schema):
    rows[2]["subject"] = None
    return rows, schema


def _unknown_label(rows, schema):
    rows[3]["label"] = "joy"
    return rows, schema


def _onset_after_apex(rows, schema):
    rows[4]["onset"] = rows[4]["apex"] + 1
    return rows, schema


def _blank_frames(rows, schema):
    rows[5]["frames"] = np.zeros((FRAMES, SIZE, SIZE, 3), np.uint8)
    return rows, schema


def _source_path_column(rows, schema):
    for row in rows:
        row["source_path"] = f"sub01/{row['clip_id']}"
    return rows, clip_schema(FRAMES, SIZE, with_source=True)


def _too_few_in_a_class(rows, schema):
    rows[6]["label"] = "fear"  # an allowed class with a single clip
    return rows, schema


def _onset_of_the_wrong_type(rows, schema):
    index = schema.get_field_index("onset")
    return rows, schema.set(index, pa.field("onset", pa.int64()))


def _frame_indices_short(rows, schema):
    rows[7]["frame_indices"] = [10, 12, 14]
    return rows, schema


def _unannotated_micro_clip(rows, schema):
    rows[8].update(label=None, label3=None, action_units=None)
    rows[0].update(label=None, label3=None)  # an AU-coded clip without an emotion is fine
    return rows, schema


def _label3_missing(rows, schema):
    return rows, schema.remove(schema.get_field_index("label3"))


FAULTS = {
    "duplicate clip_id": (_duplicate_clip_id, {"clip ids are unique"}, "c-0001"),
    "null subject": (_null_subject, {"subject is never null"}, "c-0002"),
    "unknown label": (_unknown_label, {"labels of casme2 are among its native classes",
                                       "every class has at least 3 clips"}, "label=joy"),
    "onset after apex": (_onset_after_apex, {"onset <= apex"}, "c-0004"),
    "blank frames": (_blank_frames, {"clips are neither too dark nor too bright", "clips are not blank or saturated",
                                     "no frame is blank or saturated"}, "c-0005"),
    "source_path column": (_source_path_column, {"processed shards carry no source-path column"},
                           "column_name=source_path"),
    "too few clips in a class": (_too_few_in_a_class, {"every class has at least 3 clips"}, "group=casme2/fear"),
    "wrong column type": (_onset_of_the_wrong_type, {"column types match the processed schema"}, "arrow_type=int64"),
    "frame_indices too short": (_frame_indices_short, {"one frame index per frame"}, "c-0007"),
    "micro clip without label or AUs": (_unannotated_micro_clip,
                                        {"micro clips carry an emotion label or action units"}, "c-0008"),
    "label3 column missing": (_label3_missing, {"every column of the processed schema is present"},
                              "column_name=label3"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_planted_fault_fails_the_check_that_names_it(tmp_path, fault):
    plant, expected, evidence = FAULTS[fault]
    rows, schema = plant(valid_rows(), clip_schema(FRAMES, SIZE, with_source=False))
    result = validate(tmp_path, rows, schema)
    assert not result.success
    assert failed_descriptions(result) == expected
    summary = result.summary()
    assert summary.startswith(f"validation FAILED: {len(expected)} of")
    assert all(description in summary for description in expected)
    assert evidence in summary


def test_too_few_clips_of_a_subject_fail_the_subject_floor(tmp_path):
    result = validate(tmp_path, valid_rows(), min_clips_per_subject=5)
    assert failed_descriptions(result) == {"every subject has at least 5 micro clips"}
    (check,) = result.failed
    assert check["unexpected_count"] == 3 and check["element_count"] == 3
    assert {e["group"] for e in check["examples"]} == set(SUBJECTS)


def test_the_report_is_json_with_the_failures_and_no_pixels(tmp_path):
    rows, schema = _blank_frames(valid_rows(), None)
    result = validate(tmp_path, rows)
    report = tmp_path / "reports" / "validation.json"
    write_validation_report(result, report)
    written = json.loads(report.read_text())
    assert (written["success"], written["rows"], written["failed"]) == (False, 16, 3)
    std = next(c for c in written["checks"] if c["column"] == "pixel_std")
    assert std["examples"] == [{"pixel_std": 0.0, "clip_id": "c-0005"}]
    assert len(report.read_text()) < 50_000  # evidence is ids and statistics, never frames


def test_an_empty_table_fails(tmp_path):
    clips_dir = tmp_path / "clips"
    write_table(clip_schema(FRAMES, SIZE, with_source=False).empty_table(), clips_dir / "part-00000.parquet")
    result = validate_clips(clips_dir, ValidateParams(**PARAMS), ALLOWED)
    assert (result.success, result.rows) == (False, 0)
    assert failed_descriptions(result) == {"the clip table is not empty"}


def test_no_shards_is_an_error_that_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "empty")):
        validate_clips(tmp_path / "empty", ValidateParams(**PARAMS), ALLOWED)


def test_data_docs_build_offline(tmp_path):
    docs = tmp_path / "data_docs"
    result = validate(tmp_path, valid_rows(), data_docs=docs)
    assert result.success
    assert (docs / "index.html").exists()
    assert list(docs.glob("validations/clips/**/*.html"))


def test_frame_statistics_catch_one_blank_frame_in_a_lively_clip():
    clip = np.random.default_rng(1).integers(0, 256, (1, FRAMES, SIZE, SIZE, 3), dtype=np.uint8)  # (N, T, H, W, C)
    clip[0, 2] = 0
    stats = frame_statistics(clip)
    assert stats["n_frames"].tolist() == [FRAMES]
    assert stats["pixel_std"][0] > 50
    assert stats["min_frame_std"][0] == 0
