"""Data validation: a Great Expectations suite over the processed clip table.

GX validates pandas frames, so the clip table is summarised first, one row group at a
time: each clip becomes a row of its metadata plus statistics of its frames (frame
count, pixel mean and spread), never the pixels themselves. Three batches are checked:

- `schema`: one row per (shard, column) with its Arrow type, against the processed schema;
- `clips`: one row per clip: ids, subjects, labels, onset <= apex <= offset, frames;
- `counts`: one row per class (data set, label) and per subject: the count floors.

Every expectation carries a description, and every failure lists a few offending
clip ids (or shards, classes, subjects) so the report says what to fix and where.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from mer_core.config import DatasetSource, ValidateParams
from mer_core.data.labels import COMPOSITE_CLASSES, allowed_labels
from mer_core.data.store import (
    SOURCE_COLUMNS,
    clip_schema,
    frames_to_numpy,
    iter_row_groups,
    shard_paths,
    staged_directory,
    write_text_atomically,
)

log = logging.getLogger(__name__)

KINDS = ("macro", "micro")
# Pseudonyms written by `anonymize`: a raw subject id here means anonymisation was skipped.
SUBJECT_PATTERN = r"^s-[0-9a-f]+$"
# Scalar metadata carried into the per-clip frame; list columns become derived counts.
SCALAR_COLUMNS = ("clip_id", "dataset", "subject", "kind", "label", "label3", "onset", "apex", "offset",
                  "fps", "action_units", "face_score")
FRAME_STATISTICS = ("n_frames", "pixel_mean", "pixel_std", "min_frame_std")
NOT_NULL_COLUMNS = ("clip_id", "dataset", "subject", "kind", "fps", "face_score", "n_frames", "n_frame_indices")
EXAMPLES = 5


@dataclass
class ValidationResult:
    """Outcome of the suite: one entry per expectation, in the order they ran.

    Attributes:
        success: every check passed.
        checks: dicts with `batch`, `expectation`, `description`, `column`, `condition`,
            `success`, and the evidence: `unexpected_count`/`element_count`/`examples`
            for row checks, `observed` for table checks, `error` if GX raised.
        rows: clips validated.
    """

    success: bool
    checks: list[dict] = field(default_factory=list)
    rows: int = 0

    @property
    def failed(self) -> list[dict]:
        return [check for check in self.checks if not check["success"]]

    def summary(self) -> str:
        """One headline, then one line per failed check: what, which column, how many, examples."""
        verdict = "passed" if self.success else "FAILED"
        lines = [f"validation {verdict}: {len(self.failed)} of {len(self.checks)} checks failed on {self.rows} clips"]
        lines += [f"  - {_describe_failure(check)}" for check in self.failed]
        return "\n".join(lines)


def _describe_failure(check: dict) -> str:
    where = f" where {check['condition']}" if check.get("condition") else ""
    on = f" on {check['column']}" if check.get("column") else ""
    head = f"{check['description']} [{check['expectation']}{on}{where}]"
    if check.get("error"):
        return f"{head}: GX raised: {check['error']}"
    if check.get("unexpected_count") is not None:
        examples = "; ".join(", ".join(f"{k}={v}" for k, v in example.items()) for example in check["examples"])
        return f"{head}: {check['unexpected_count']} of {check['element_count']} rows, e.g. {examples}"
    return f"{head}: observed {check.get('observed')}"


def dataset_labels(datasets: list[DatasetSource]) -> dict[str, set[str]]:
    """Data set name → the labels it may carry (its mapping's classes, else its native ones), for
    the data sets whose labels are not free-form."""
    labels = {d.name: allowed_labels(d.adapter, d.labels, d.label_mapping) for d in datasets}
    return {name: set(allowed) for name, allowed in labels.items() if allowed is not None}


def validate_clips(clips_dir: Path, params: ValidateParams, allowed_labels: dict[str, set[str]],
                   data_docs: Path | None = None,
                   frame_shape: tuple[int, int, int, int] | None = None) -> ValidationResult:
    """Run the validation suite over the processed clip table under `clips_dir`.

    Args:
        clips_dir: folder of processed Parquet shards.
        params: thresholds.
        data_docs: where to render GX data docs (only when `params.data_docs`).
        allowed_labels: data set name -> native labels it may carry; a data set missing
            here has free-form labels.
        frame_shape: expected (T, H, W, C) of `frames`; the first shard's when None.

    Raises:
        FileNotFoundError: there are no shards under `clips_dir`.
    """
    clips_dir = Path(clips_dir)
    paths = shard_paths(clips_dir)
    if not paths:
        raise FileNotFoundError(f"no Parquet shards to validate under {clips_dir}")
    frame_shape = frame_shape or first_tensor_shape(paths, "frames")
    schema = schema_frame(paths, clips_dir, frame_shape)
    clips = clip_frame(paths)
    counts = count_frame(clips)
    log.info("validating %d clips in %d shards", len(clips), len(paths))

    context = _ephemeral_context()
    checks = []
    for batch, frame, expectations, index_columns in (
        ("schema", schema, schema_expectations(), ["shard", "column_name"]),
        ("clips", clips, clip_expectations(params, allowed_labels, frame_shape), ["clip_id"]),
        ("counts", counts, count_expectations(params), ["grouping", "group"]),
    ):
        checks += run_expectations(context, batch, frame, expectations, index_columns)
    if params.data_docs and data_docs is not None:
        build_data_docs(context, Path(data_docs).resolve())  # GX wants an absolute path
    return ValidationResult(success=all(c["success"] for c in checks), checks=checks, rows=len(clips))


def write_validation_report(result: ValidationResult, path: Path) -> None:
    """Write the result as JSON, atomically; `failed` is the count of failed checks."""
    report = {"success": result.success, "rows": result.rows, "failed": len(result.failed), "checks": result.checks}
    write_text_atomically(Path(path), json.dumps(report, indent=2) + "\n")


# ---------------------------------------------------------------- frames to validate


def first_tensor_shape(paths: list[Path], column: str) -> tuple[int, ...] | None:
    """The shape of `column` ((T, H, W, C) of `frames`, (K, 2) of `landmarks`) in the first
    shard where it is a tensor column, else None."""
    for path in paths:
        schema = pq.read_schema(path)
        if column in schema.names and isinstance(schema.field(column).type, pa.FixedShapeTensorType):
            return tuple(schema.field(column).type.shape)
    return None


def type_name(data_type: pa.DataType) -> str:
    """A canonical name of an Arrow type: list child names (`item`, `element`) left out.

    Parquet round trips rename list children, which makes `str()` of equal types differ.
    """
    if isinstance(data_type, pa.FixedShapeTensorType):
        return f"fixed_shape_tensor<{data_type.value_type}>{list(data_type.shape)}"
    if isinstance(data_type, pa.FixedSizeListType):
        return f"fixed_size_list<{type_name(data_type.value_type)}>[{data_type.list_size}]"
    if isinstance(data_type, (pa.ListType, pa.LargeListType)):
        return f"list<{type_name(data_type.value_type)}>"
    return str(data_type)


def expected_types(frame_shape: tuple[int, int, int, int] | None,
                   landmark_shape: tuple[int, int] | None = (68, 2)) -> dict[str, str]:
    """Column name -> canonical type name of the processed schema; a shape of None (no shard
    has that tensor column) gives a placeholder that no actual type matches."""
    types = {f.name: type_name(f.type) for f in clip_schema(1, 1, with_source=False)}
    types["frames"] = ("fixed_shape_tensor<uint8>[T, H, W, C]" if frame_shape is None
                       else type_name(pa.fixed_shape_tensor(pa.uint8(), frame_shape)))
    types["landmarks"] = ("fixed_shape_tensor<float>[K, 2]" if landmark_shape is None
                          else type_name(pa.fixed_shape_tensor(pa.float32(), landmark_shape)))
    return types


def schema_frame(paths: list[Path], clips_dir: Path, frame_shape: tuple[int, int, int, int] | None) -> pd.DataFrame:
    """One row per (shard, column) in the processed schema or the shard.

    Columns: shard, column_name, arrow_type (null: missing from the shard),
    expected_type (null: not in the processed schema).
    """
    expected = expected_types(frame_shape, first_tensor_shape(paths, "landmarks"))
    rows = []
    for path in paths:
        actual = {f.name: type_name(f.type) for f in pq.read_schema(path)}
        for name in dict.fromkeys([*expected, *actual]):
            rows.append({"shard": str(path.relative_to(clips_dir)), "column_name": name,
                         "arrow_type": actual.get(name), "expected_type": expected.get(name)})
    return pd.DataFrame(rows, columns=["shard", "column_name", "arrow_type", "expected_type"])


def frame_statistics(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per-clip statistics of (N, T, H, W, C) uint8 frames.

    Returns:
        n_frames (T), pixel_mean and pixel_std over each clip, and min_frame_std: the
        spread of the clip's flattest frame, which catches one blank frame in a clip.
    """
    clips, length = frames.shape[:2]
    values = frames.reshape(clips, length, -1).astype(np.float32)  # (N, T, H*W*C)
    frame_mean = values.mean(axis=2)  # (N, T)
    frame_var = values.var(axis=2)
    clip_mean = frame_mean.mean(axis=1)  # (N,)
    # Law of total variance over equal-sized frames: one pass over the pixels, not two.
    clip_var = (frame_var + (frame_mean - clip_mean[:, None]) ** 2).mean(axis=1)
    return {
        "n_frames": np.full(clips, length, np.float64),
        "pixel_mean": clip_mean,
        "pixel_std": np.sqrt(clip_var),
        "min_frame_std": np.sqrt(frame_var).min(axis=1),
    }


def summarize_row_group(table: pa.Table) -> pd.DataFrame:
    """One row per clip: scalar metadata plus frame counts and pixel statistics.

    A column missing from the shard becomes nulls here; the schema batch names it.
    """
    present = [c for c in SCALAR_COLUMNS if c in table.column_names]
    # Nullable Int32 keeps onset/apex/offset integers (and readable in the report) despite nulls.
    frame = table.select(present).to_pandas(types_mapper={pa.int32(): pd.Int32Dtype()}.get)
    frame = frame.reindex(columns=list(SCALAR_COLUMNS))
    if "frame_indices" in table.column_names:
        frame["n_frame_indices"] = pc.list_value_length(table["frame_indices"]).to_numpy(zero_copy_only=False)
    else:
        frame["n_frame_indices"] = np.nan
    frames = table["frames"] if "frames" in table.column_names else None
    if frames is not None and isinstance(frames.type, pa.FixedShapeTensorType) and table.num_rows:
        stats = frame_statistics(frames_to_numpy(frames))
    else:  # unreadable frames: null statistics fail the n_frames not-null check
        stats = {name: np.full(table.num_rows, np.nan) for name in FRAME_STATISTICS}
    for name, values in stats.items():
        frame[name] = values
    counts = ["n_frames", "n_frame_indices"]
    frame[counts] = frame[counts].astype("Int64")  # integers in the report, nulls kept
    return frame


def clip_frame(paths: list[Path]) -> pd.DataFrame:
    """Summarise every clip, one row group at a time so frames never sit in memory together."""
    total = sum(pq.read_metadata(path).num_rows for path in paths)
    parts = []
    with tqdm(total=total, desc="validate", unit="clip", leave=False, disable=None) as progress:
        for table in iter_row_groups(paths):
            parts.append(summarize_row_group(table))
            progress.update(table.num_rows)
    return pd.concat(parts, ignore_index=True) if parts else summarize_row_group(pa.table({}))


def count_frame(clips: pd.DataFrame) -> pd.DataFrame:
    """Clips per class (`dataset/label`, labelled rows) and per subject (micro rows).

    Columns: grouping ("class" or "subject"), group, clips.
    """
    labelled = clips.dropna(subset=["dataset", "label"])
    classes = labelled.groupby(["dataset", "label"]).size()
    subjects = clips[clips["kind"] == "micro"].dropna(subset=["subject"]).groupby("subject").size()
    rows = [{"grouping": "class", "group": f"{d}/{l}", "clips": int(n)} for (d, l), n in classes.items()]
    rows += [{"grouping": "subject", "group": s, "clips": int(n)} for s, n in subjects.items()]
    return pd.DataFrame(rows, columns=["grouping", "group", "clips"])


# ---------------------------------------------------------------- the suite


def _great_expectations():
    """Import GX (a heavy import) with usage statistics off."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    return gx


def schema_expectations() -> list:
    """Expectations on the schema frame: no source paths, required columns, their types."""
    gx = _great_expectations()
    expect = gx.expectations
    return [
        expect.ExpectColumnValuesToNotBeInSet(
            column="column_name", value_set=list(SOURCE_COLUMNS),
            description="processed shards carry no source-path column"),
        expect.ExpectColumnValuesToNotBeNull(
            column="arrow_type", description="every column of the processed schema is present"),
        expect.ExpectColumnPairValuesToBeEqual(
            column_A="arrow_type", column_B="expected_type", ignore_row_if="either_value_is_missing",
            description="column types match the processed schema"),
    ]


def clip_expectations(params: ValidateParams, allowed_labels: dict[str, set[str]],
                      frame_shape: tuple[int, int, int, int] | None) -> list:
    """Expectations on the per-clip frame: ids, labels, timing, frames and pixels."""
    gx = _great_expectations()
    from great_expectations.expectations.row_conditions import Column

    expect = gx.expectations
    micro = Column("kind") == "micro"
    expectations = [expect.ExpectTableRowCountToBeBetween(min_value=1, description="the clip table is not empty")]
    expectations += [expect.ExpectColumnValuesToNotBeNull(column=c, description=f"{c} is never null")
                     for c in NOT_NULL_COLUMNS]
    expectations += [
        expect.ExpectColumnValuesToBeUnique(column="clip_id", description="clip ids are unique"),
        expect.ExpectColumnValuesToMatchRegex(
            column="subject", regex=SUBJECT_PATTERN, description="subjects are pseudonyms (s-<hex>)"),
        expect.ExpectColumnValuesToBeInSet(column="kind", value_set=list(KINDS), description="kind is macro or micro"),
        expect.ExpectColumnValuesToBeInSet(
            column="label3", value_set=list(COMPOSITE_CLASSES), description="composite label is a known class"),
        # A micro clip without an emotion serves the action-unit task (CAS(ME)^3 part C codes no emotion).
        expect.ExpectColumnValuesToNotBeNull(
            column="label", row_condition=micro & Column("action_units").is_null(),
            description="micro clips carry an emotion label or action units"),
    ]
    expectations += [
        expect.ExpectColumnValuesToBeInSet(
            column="label", value_set=sorted(labels), row_condition=Column("dataset") == dataset,
            description=f"labels of {dataset} are among its native classes")
        for dataset, labels in sorted(allowed_labels.items())
    ]
    expectations += [
        expect.ExpectColumnValuesToNotBeNull(column=c, row_condition=micro, description=f"micro clips have an {c}")
        for c in ("onset", "apex", "offset")
    ]
    expectations += [
        expect.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="apex", column_B="onset", or_equal=True, ignore_row_if="either_value_is_missing",
            description="onset <= apex"),
        expect.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="offset", column_B="apex", or_equal=True, ignore_row_if="either_value_is_missing",
            description="apex <= offset"),
        expect.ExpectColumnPairValuesToBeEqual(
            column_A="n_frame_indices", column_B="n_frames", ignore_row_if="either_value_is_missing",
            description="one frame index per frame"),
        expect.ExpectColumnValuesToBeBetween(
            column="fps", min_value=0, strict_min=True, description="frame rate is positive"),
        expect.ExpectColumnValuesToBeBetween(
            column="pixel_mean", min_value=params.pixel_mean_range.low, max_value=params.pixel_mean_range.high,
            description="clips are neither too dark nor too bright"),
        expect.ExpectColumnValuesToBeBetween(
            column="pixel_std", min_value=params.min_pixel_std, description="clips are not blank or saturated"),
        expect.ExpectColumnValuesToBeBetween(
            column="min_frame_std", min_value=params.min_pixel_std, description="no frame is blank or saturated"),
    ]
    if frame_shape is not None:
        expectations.append(expect.ExpectColumnValuesToBeInSet(
            column="n_frames", value_set=[frame_shape[0]], description=f"clips have {frame_shape[0]} frames"))
    return expectations


def count_expectations(params: ValidateParams) -> list:
    """Count floors on the counts frame: clips per class and per subject."""
    gx = _great_expectations()
    from great_expectations.expectations.row_conditions import Column

    expect = gx.expectations
    return [
        expect.ExpectColumnValuesToBeBetween(
            column="clips", min_value=params.min_clips_per_class, row_condition=Column("grouping") == "class",
            description=f"every class has at least {params.min_clips_per_class} clips"),
        expect.ExpectColumnValuesToBeBetween(
            column="clips", min_value=params.min_clips_per_subject, row_condition=Column("grouping") == "subject",
            description=f"every subject has at least {params.min_clips_per_subject} micro clips"),
    ]


def _ephemeral_context():
    """An in-memory GX context with progress bars off (GX shows them by default)."""
    gx = _great_expectations()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def run_expectations(context, batch: str, frame: pd.DataFrame, expectations: list,
                     index_columns: list[str]) -> list[dict]:
    """Validate `frame` against `expectations` as the GX asset `batch`; one check dict each.

    Args:
        index_columns: columns that identify an offending row in the examples.
    """
    gx = _great_expectations()
    definition = (context.data_sources.add_pandas(batch).add_dataframe_asset(batch)
                  .add_batch_definition_whole_dataframe(batch))
    suite = context.suites.add(gx.ExpectationSuite(name=batch, expectations=expectations))
    validation = context.validation_definitions.add(gx.ValidationDefinition(name=batch, data=definition, suite=suite))
    result_format = {"result_format": "SUMMARY", "unexpected_index_column_names": index_columns,
                     "partial_unexpected_count": EXAMPLES}
    outcome = validation.run(batch_parameters={"dataframe": frame}, result_format=result_format)
    return [describe_check(batch, r) for r in outcome.results]


def describe_check(batch: str, result) -> dict:
    """A JSON-ready dict of one GX expectation result: what was checked and the evidence."""
    config = result.expectation_config
    kwargs = config.kwargs
    columns = [kwargs[k] for k in ("column", "column_A", "column_B") if kwargs.get(k)]
    condition = kwargs.get("row_condition")
    check = {
        "batch": batch,
        "expectation": config.type,
        "description": config.description,
        "column": ", ".join(columns) or None,
        "condition": _condition_text(condition),
        "success": bool(result.success),
    }
    detail = result.to_json_dict().get("result") or {}  # numpy values made JSON-safe by GX
    if "unexpected_count" in detail:
        check["unexpected_count"] = detail["unexpected_count"]
        check["element_count"] = detail.get("element_count")
        check["examples"] = detail.get("partial_unexpected_index_list", [])[:EXAMPLES]
    elif "observed_value" in detail:
        check["observed"] = detail["observed_value"]
    error = _exception_message(result.exception_info)
    if error:
        check["error"] = error
        check["success"] = False
    return check


def _condition_text(condition) -> str | None:
    """`kind == micro` from a row condition, which GX keeps in kwargs as a dict."""
    if not condition:
        return None
    from great_expectations.expectations.row_conditions import deserialize_row_condition

    return repr(deserialize_row_condition(condition))


def _exception_message(info) -> str | None:
    """The first exception message in GX's exception_info (flat, or keyed by metric)."""
    if not info:
        return None
    entries = [info] if "raised_exception" in info else list(info.values())
    for entry in entries:
        if isinstance(entry, dict) and entry.get("raised_exception"):
            return str(entry.get("exception_message"))
    return None


def build_data_docs(context, final: Path) -> None:
    """Render GX data docs of this run's results into `final`, swapped in whole.

    The HTML links its styles and scripts from CDNs, so offline it opens unstyled.
    """
    with staged_directory(final) as staged:
        context.add_data_docs_site("mer", {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(staged)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
        context.build_data_docs(site_names=["mer"])
    log.info("data docs in %s", final / "index.html")
