"""Typed `params.yaml`: one pydantic model per stage section, loaded once at the edge.

Every model forbids unknown keys, so a typo in `params.yaml` is an error that names
the key and its section instead of a silently ignored setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ParamsError(ValueError):
    """`params.yaml` is missing, unparsable, or does not match the typed sections."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Section):
    """A closed interval `[low, high]` drawn from uniformly."""

    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> "Range":
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        return self


class MicroSynthesis(_Section):
    subjects: int = Field(16, ge=2)
    clips_per_subject: int = Field(10, ge=1)
    fps: float = Field(100.0, gt=0)
    duration_s: Range = Range(low=0.2, high=0.45)
    padding_s: Range = Range(low=0.05, high=0.12)
    # Peak AU intensity as a fraction of a full macro expression.
    amplitude: Range = Range(low=0.15, high=0.3)
    unilateral_fraction: float = Field(0.3, ge=0, le=1)
    jpeg_quality: int = Field(92, ge=30, le=100)


class MacroSynthesis(_Section):
    subjects: int = Field(24, ge=1)
    clips_per_subject: int = Field(6, ge=1)
    fps: float = Field(25.0, gt=0)
    duration_s: Range = Range(low=0.5, high=4.0)
    amplitude: Range = Range(low=0.7, high=1.0)
    codec: Literal["MJPG", "FFV1", "XVID", "mp4v"] = "MJPG"


class Nuisance(_Section):
    head_jitter_px: float = Field(0.5, ge=0)
    head_drift_px: float = Field(2.0, ge=0)
    blink_rate_hz: float = Field(0.3, ge=0)
    illumination_drift: float = Field(0.12, ge=0, le=0.9)
    noise_sigma: float = Field(2.0, ge=0)


class SynthesizeParams(_Section):
    seed: int = 7
    out_dir: Path = Path("data/raw/synthetic")
    image_size: int = Field(192, ge=96, le=1024)
    micro: MicroSynthesis = MicroSynthesis()
    macro: MacroSynthesis = MacroSynthesis()
    nuisance: Nuisance = Nuisance()


AdapterName = Literal["casme2", "videos"]


class DatasetSource(_Section):
    """One raw data set to ingest, read through a named adapter."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    adapter: AdapterName
    root: Path
    kind: Literal["macro", "micro"]
    annotation: str | None = None  # file name inside root; the adapter's default if None
    fps: float | None = Field(None, gt=0)  # frame rate of image sequences; the adapter's default if None
    labels: list[str] | None = None  # allowed native labels; the adapter's own set if None


class IngestParams(_Section):
    datasets: list[DatasetSource]
    out_dir: Path = Path("data/interim")
    crop_size: int = Field(64, ge=16, le=512)
    frames_per_clip: int = Field(8, ge=2, le=64)
    # Macro windows: consecutive frames `window_stride` apart, several per video.
    window_stride: int = Field(2, ge=1)
    windows_per_video: int = Field(4, ge=1)
    face_margin: float = Field(0.15, ge=0, le=1)
    min_face_px: int = Field(48, ge=16)
    rows_per_shard: int = Field(512, ge=1)
    row_group_size: int = Field(64, ge=1)
    workers: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _unique_names(self) -> "IngestParams":
        names = [d.name for d in self.datasets]
        if len(names) != len(set(names)):
            raise ValueError(f"dataset names must be unique, got {names}")
        return self


class AnonymizeParams(_Section):
    in_dir: Path = Path("data/interim")
    out_dir: Path = Path("data/processed")
    report: Path = Path("reports/anonymization.json")
    key_env: str = "MER_PSEUDONYM_KEY"
    key_file: Path = Path("~/.config/mer/pseudonym.key")
    mask_outside_face: bool = True


class ValidateParams(_Section):
    in_dir: Path = Path("data/processed")
    report: Path = Path("reports/validation.json")
    data_docs_dir: Path | None = Path("reports/data_docs")
    min_clips_per_class: int = Field(3, ge=0)
    min_clips_per_subject: int = Field(2, ge=0)
    pixel_mean_range: Range = Range(low=15.0, high=240.0)
    min_pixel_std: float = Field(3.0, ge=0)


class Params(_Section):
    synthesize: SynthesizeParams = SynthesizeParams()
    ingest: IngestParams
    anonymize: AnonymizeParams = AnonymizeParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")


def _describe(error: ValidationError, source: Path) -> str:
    lines = [f"{source}: {error.error_count()} problem(s) in params"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<root>"
        if item["type"] == "extra_forbidden":
            lines.append(f"  - unknown key '{key}'")
        else:
            lines.append(f"  - '{key}': {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and validate `params.yaml`.

    Raises:
        ParamsError: the file is missing or malformed, or a key is unknown or mistyped;
            the message names every offending key.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ParamsError(f"{path}: no such params file") from exc
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of stage sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(_describe(exc, path)) from None
