"""Typed `params.yaml`: one pydantic model per stage section, loaded once at the edge.

Every model forbids unknown keys, so a typo in `params.yaml` is an error that names
the key and its section instead of a silently ignored setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mer_core import MerError


class ParamsError(MerError, ValueError):
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
    workers: int = Field(2, ge=1)  # render processes; the output does not depend on them
    image_size: int = Field(192, ge=96, le=1024)
    micro: MicroSynthesis = MicroSynthesis()
    macro: MacroSynthesis = MacroSynthesis()
    nuisance: Nuisance = Nuisance()


AdapterName = Literal["casme2", "samm", "smic", "casme3", "mmew", "ckplus", "videos", "4dme", "casme3_c",
                      "casme_sq", "samm_long", "dfew", "affwild2", "casme"]
# Protocols a data set may be read under, `<adapter>_<classes>` (mer_core/data/labels.py LABEL_MAPPINGS).
LabelMapping = Literal["casme3_4class", "casme3_3class", "casme2_3class"]
# Long videos hold micro and macro intervals: their data sets are of kind `long`, and feed
# fine-tuning (micro clips) and pre-training (macro clips) both.
LONG_VIDEO_ADAPTERS = frozenset({"casme_sq", "samm_long"})


class DatasetSource(_Section):
    """One raw data set to ingest, read through a named adapter."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    adapter: AdapterName
    root: Path
    kind: Literal["macro", "micro", "long"]
    annotation: str | None = None  # file name inside root; the adapter's default if None
    fps: float | None = Field(None, gt=0)  # frame rate of image sequences; the adapter's default if None
    labels: list[str] | None = None  # allowed native labels; the adapter's own set if None
    # Read the labels under another protocol's classes (mer_core/data/labels.py LABEL_MAPPINGS),
    # e.g. casme3_4class; None: the native classes.
    label_mapping: LabelMapping | None = None

    @model_validator(mode="after")
    def _long_videos(self) -> "DatasetSource":
        if (self.kind == "long") != (self.adapter in LONG_VIDEO_ADAPTERS):
            raise ValueError(f"kind 'long' is for the long-video adapters {sorted(LONG_VIDEO_ADAPTERS)} and only "
                             f"them (adapter {self.adapter!r}, kind {self.kind!r})")
        return self

    @model_validator(mode="after")
    def _mapping_of_this_adapter(self) -> "DatasetSource":
        if self.label_mapping is not None and self.label_mapping.rsplit("_", 1)[0] != self.adapter:
            raise ValueError(f"label_mapping {self.label_mapping!r} is not one for adapter {self.adapter!r} "
                             f"(mappings are named <adapter>_<classes>)")
        return self


class IngestParams(_Section):
    datasets: list[DatasetSource] = Field(min_length=1)
    crop_size: int = Field(64, ge=16, le=512)
    frames_per_clip: int = Field(8, ge=2, le=64)
    # Macro windows: consecutive frames `window_stride` apart, several per video.
    window_stride: int = Field(2, ge=1)
    windows_per_video: int = Field(4, ge=1)
    face_margin: float = Field(0.15, ge=0, le=1)
    # The smallest face looked for (pixels wide). dlib's HOG detector scans an 80-px window,
    # so frames are scaled by 80 / min_face_px to detect (48: 1.67x up); raise it for
    # large faces in large frames to detect faster.
    min_face_px: int = Field(48, ge=16)
    # The face front end (mer_core/data/faces.py): which detector finds the face on the
    # onset (and checks it on every frame), which dlib shape predictor gives its landmarks
    # (dlib68: iBUG 300-W, non-commercial use only; dlib5: no such limit, no regions), and
    # how frames are aligned: `landmarks` (eye centres levelled at a fixed distance, every
    # frame mapped onto the onset by its own landmarks), `onset` (the onset's eye alignment
    # for every frame: head motion is left to `stabilize`) or `box` (the onset's detector
    # box levelled by the eye line: the earlier front end, with `face_detector: haar`).
    face_detector: Literal["hog", "haar"] = "hog"
    landmark_model: Literal["dlib68", "dlib5"] = "dlib68"
    alignment: Literal["landmarks", "onset", "box"] = "onset"
    # Register every frame of a clip to its first (sub-pixel translation inside the face)
    # after alignment: what is left of head jitter is as large as a micro-expression.
    stabilize: bool = True
    rows_per_shard: int = Field(512, ge=1)
    row_group_size: int = Field(64, ge=1)
    workers: int = Field(2, ge=1)
    # The official MEGC 2019 list (dataset, subject, filename, class; no header) as the
    # authority on `label3` for the data sets it lists; None: the label mapping decides.
    composite_list: Path | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> "IngestParams":
        names = [d.name for d in self.datasets]
        if len(names) != len(set(names)):
            raise ValueError(f"dataset names must be unique, got {names}")
        return self


class AnonymizeParams(_Section):
    key_env: str = "MER_PSEUDONYM_KEY"
    key_file: Path = Path("~/.config/mer/pseudonym.key")
    mask_outside_face: bool = True
    workers: int = Field(2, ge=1)  # processes, one shard each at a time


class ValidateParams(_Section):
    data_docs: bool = True  # render GX data docs into paths.data_docs
    min_clips_per_class: int = Field(3, ge=0)
    min_clips_per_subject: int = Field(2, ge=0)
    pixel_mean_range: Range = Range(low=15.0, high=240.0)
    min_pixel_std: float = Field(3.0, ge=0)


PretrainVariant = Literal["ma2mi", "contrastive", "both"]
# A learned variant is `<pre-training>_<protocol>`: `e2e` fine-tunes MIACNet end to end,
# `probe` trains its head over frozen encoders (what pre-training put into them);
# `scratch` starts from random weights. The baselines train under the same folds.
LearnedVariant = Literal["scratch_e2e", "ma2mi_e2e", "contrastive_e2e", "both_e2e",
                         "scratch_probe", "ma2mi_probe", "contrastive_probe", "both_probe"]
BaselineVariant = Literal["lbp_top_svm", "flow_strain_lr", "difference_lr", "flow_cnn"]
# Rows of the action-unit task (mer_core/training/action_units.py), beside the emotion rows.
AUVariant = Literal["au_flow_lr", "au_miacnet"]
PROTOCOLS = ("e2e", "probe")


def learned_variant(variant: str) -> tuple[str, str] | None:
    """(pre-training, protocol) of a learned variant (`ma2mi_e2e` → ("ma2mi", "e2e")); None for a baseline."""
    pretraining, _, protocol = variant.rpartition("_")
    return (pretraining, protocol) if protocol in PROTOCOLS else None

Device = Literal["auto", "cpu", "cuda"]


class FeaturesParams(_Section):
    """The motion of every micro clip (mer_core/data/motion.py), computed once, stored."""

    flow: Literal["dis", "farneback"] = "farneback"  # chosen on the tuning benchmark
    # Eulerian magnification (α) of each frame's change before the flow is estimated;
    # 0 leaves the frames as they are (chosen on the tuning benchmark: α 10 helps DIS's
    # features and hurts Farneback's). MIACNet reads the frames, not this.
    magnification: float = Field(0.0, ge=0, le=50)


class TuningParams(_Section):
    """Where every choice in params.yaml was made: the synthetic benchmark rendered with
    these `synthesize.seed`s (other identities), never the one `make run` reports on.
    `make bench-tuning` runs the ablation there."""

    synthesize_seeds: list[int] = Field([1007, 1008], min_length=1)


class PretrainParams(_Section):
    """Self-supervised pre-training on the macro clips (MA2MI and/or ContraWarping)."""

    encoder: str = "convnet_micro_64"
    # What the action encoder reads, here and in MIACNet: the grey difference, or beside it
    # the optical flow and strain of the features stage's method (mer_core/models/encoders.py).
    action_input: Literal["difference", "difference_flow"] = "difference_flow"
    # Every variant the ablation needs; "both" trains MA2MI and ContraWarping jointly.
    variants: list[PretrainVariant] = ["ma2mi", "contrastive", "both"]
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_epochs: int = Field(2, ge=0)
    # MA2MI: the step k between the current and the future frame, drawn from [1, max_step].
    max_step: int = Field(3, ge=1)
    # MA2MI: shrink each macro step to this fraction of its motion (plus `micro_noise` grey
    # levels of fresh sensor noise) before the action encoder reads it, and reconstruct the
    # full macro step from it: macro-to-micro. None: the encoder reads the macro step.
    micro_scale: Range | None = Range(low=0.15, high=0.35)
    micro_noise: float = Field(2.0, ge=0)
    # MA2MI: reconstruct the step's grey change, or its optical flow (mer_core/models/ma2mi.py).
    target: Literal["change", "flow"] = "flow"
    contrastive_weight: float = Field(1.0, ge=0)  # weight of ContraWarping in "both"
    temperature: float = Field(0.1, gt=0)
    # ContraWarping views, in units of half the crop side: global shifts (and zoom) and
    # rotation for positives, local warps for negatives. Micro-scale on purpose; see
    # mer_core/models/contrawarp.py.
    view_shift: float = Field(0.02, ge=0, le=0.5)
    view_degrees: float = Field(3.0, ge=0, le=45)
    warp_displacement: float = Field(0.03, gt=0, le=0.5)
    seed: int = 0
    device: Device = "auto"
    compile: bool = True  # torch.compile, on CUDA only
    loader_workers: int = Field(0, ge=0)
    # Above 1, `mer pretrain` starts itself again under `torchrun --nproc_per_node N` (DDP,
    # one process per GPU, or CPU processes over gloo); `batch_size` stays the global batch.
    nproc_per_node: int = Field(1, ge=1)


class FinetuneParams(_Section):
    """MIACNet fine-tuning on the micro clips under leave-one-subject-out."""

    variant: LearnedVariant = "ma2mi_e2e"  # the shipped model
    # Rows of the ablation table, all under the same folds and seeds.
    ablation: list[LearnedVariant | BaselineVariant] = [
        "scratch_e2e", "ma2mi_e2e", "contrastive_e2e", "both_e2e", "scratch_probe", "ma2mi_probe",
        "lbp_top_svm", "flow_strain_lr", "difference_lr", "flow_cnn"]
    seeds: list[int] = Field([0, 1, 2], min_length=1)
    label_column: Literal["label", "label3"] = "label"
    # Folds: `loso` leaves one subject out, `lodo` one data set (train on the others; with
    # several micro data sets and a label column they share, e.g. label3).
    protocol: Literal["loso", "lodo"] = "loso"
    # Label-scarce learning curves: each fold trains every class row on this class-stratified
    # share of its training clips (same held-out clips). The final model and the AU task
    # use every clip.
    train_fraction: float = Field(1.0, gt=0, le=1)
    # The action-unit task under the same folds: its rows, and the AU set they score
    # (mer_core/data/action_units.py: meb12, 4dme, synthetic).
    au_variants: list[AUVariant] = []
    au_set: Literal["meb12", "4dme", "synthetic"] = "meb12"
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    dropout: float = Field(0.3, ge=0, lt=1)
    # MIACNet's facial-position branch (onset appearance and its change), fused with the
    # action branch; off, the model reads the motion alone. Chosen on the tuning benchmark.
    position_branch: bool = False
    # End to end, the pre-trained encoders learn at this fraction of the head's rate (a
    # two-level layer-wise decay): they keep what pre-training put in and adapt to micro.
    encoder_lr_scale: float = Field(0.3, ge=0, le=1)
    frozen_warmup_epochs: int = Field(0, ge=0)  # head only, encoders frozen, for the first epochs
    flip: bool = True  # mirror onset and apex together: a micro-expression's class has no side
    apex_jitter: int = Field(0, ge=0)  # pick the apex up to this many sampled frames early or late
    # How many epochs a fold trains. `fixed`: `epochs`, chosen on the tuning benchmark.
    # `inner_subjects` (for your own data, where there is no tuning benchmark): each fold
    # trains on its training subjects less `inner_fraction` of them, keeps the epoch count
    # with the best UF1 on those, then retrains on all its training subjects for that many;
    # the held-out subject is never looked at. Learned variants only; it doubles their time.
    epoch_selection: Literal["fixed", "inner_subjects"] = "fixed"
    inner_fraction: float = Field(0.25, gt=0, lt=1)
    device: Device = "auto"
    workers: int = Field(2, ge=1)  # processes over (variant, seed) runs on CPU


class TrackingParams(_Section):
    """Where MLflow runs and the registry live; `MLFLOW_TRACKING_URI` overrides `uri`."""

    # A relative sqlite path resolves against the repo (the params file's folder), not
    # the working directory, so every stage and flow run writes to the same database.
    uri: str = "sqlite:///mlflow.db"
    artifact_dir: Path = Path("mlartifacts")
    experiment: str = "mer"


class RegisterParams(_Section):
    model_name: str = "mer-micro"
    # The new version becomes `champion` only if its UF1 beats the champion's by at least
    # this much, on the same protocol and data version; otherwise `challenger`.
    promotion_margin: float = Field(0.01, ge=0)


class ExecutorParams(_Section):
    """Where the independent jobs of ingest (clips), anonymize (shards) and finetune
    ((variant, seed) LOSO runs) run: `process`, a pool of each stage's `workers` spawned
    processes on this machine; `dask`, the workers of the Dask cluster whose scheduler is
    at `address` (its size, not `workers`, sets how many run at once). Outputs are the same
    either way, so no stage's DVC params and no checkpoint fingerprint include it."""

    kind: Literal["process", "dask"] = "process"
    address: str | None = None  # the Dask scheduler, e.g. tcp://10.0.0.5:8786

    @model_validator(mode="after")
    def _dask_has_a_scheduler(self) -> "ExecutorParams":
        if self.kind == "dask" and not self.address:
            raise ValueError("executor.kind dask needs executor.address, the Dask scheduler's address "
                             "(e.g. tcp://10.0.0.5:8786, as `dask scheduler` prints it)")
        return self


class PathsParams(_Section):
    """Every file and folder the stages read and write, relative to the repo root (the
    params file's folder); dvc.yaml templates the same keys (`${paths.processed}`), so
    each path is written once. Profiles may not change them."""

    synthetic: Path = Path("data/raw/synthetic")  # synthesize: macro/ videos, micro/ CASME II tree
    interim: Path = Path("data/interim")  # ingest: clips/<dataset>/, rejected.parquet
    processed: Path = Path("data/processed")  # anonymize: clips/<dataset>/
    features: Path = Path("data/features")  # features: <dataset>/ motion of every micro clip
    encoders: Path = Path("models/encoders")  # pretrain: <variant>.pt
    checkpoints: Path = Path("models/checkpoints")  # pretrain/ and finetune/ resume points
    final_model: Path = Path("models/final.pt")
    ingest_report: Path = Path("reports/ingest.json")
    anonymization_report: Path = Path("reports/anonymization.json")
    validation_report: Path = Path("reports/validation.json")
    features_report: Path = Path("reports/features.json")
    data_docs: Path = Path("reports/data_docs")
    pretrain_report: Path = Path("reports/pretrain.json")
    finetune_report: Path = Path("reports/finetune.json")
    predictions: Path = Path("reports/predictions.parquet")
    metrics: Path = Path("reports/metrics.json")
    ablation: Path = Path("reports/ablation.json")
    plots: Path = Path("reports/plots")
    registry_report: Path = Path("reports/registry.json")
    model_card: Path = Path("reports/model_card.md")
    report: Path = Path("reports/report.html")  # report: the run on one offline page

    def under(self, root: Path) -> PathsParams:
        """The same layout with every relative path under `root` (tests, benchmarks)."""
        return self.model_copy(update={name: Path(root) / value for name, value in self if not value.is_absolute()})


class Params(_Section):
    paths: PathsParams = PathsParams()
    synthesize: SynthesizeParams = SynthesizeParams()
    tuning: TuningParams = TuningParams()
    ingest: IngestParams
    anonymize: AnonymizeParams = AnonymizeParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    features: FeaturesParams = FeaturesParams()
    pretrain: PretrainParams = PretrainParams()
    finetune: FinetuneParams = FinetuneParams()
    tracking: TrackingParams = TrackingParams()
    executor: ExecutorParams = ExecutorParams()
    register_: RegisterParams = Field(RegisterParams(), alias="register")

    @model_validator(mode="after")
    def _variants_pretrained(self) -> "Params":
        learned = filter(None, map(learned_variant, (self.finetune.variant, *self.finetune.ablation)))
        needed = {pretraining for pretraining, _ in learned} - {"scratch"}
        missing = needed - set(self.pretrain.variants)
        if missing:
            raise ValueError(f"finetune uses encoders {sorted(missing)} that pretrain.variants does not train")
        return self

    @model_validator(mode="after")
    def _datasets_to_leave_out(self) -> "Params":
        micro = [d.name for d in self.ingest.datasets if d.kind in ("micro", "long")]
        if self.finetune.protocol == "lodo" and len(micro) < 2:
            raise ValueError(f"finetune.protocol lodo leaves one data set out, and ingest.datasets has "
                             f"{len(micro)} micro data set(s): {micro}")
        return self


def validation_problems(error: ValidationError) -> list[str]:
    """One line per problem, naming the dotted key: "unknown key 'a.b'" or "'a.b': why (got …)"."""
    problems = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<root>"
        if item["type"] == "extra_forbidden":
            problems.append(f"unknown key '{key}'")
        else:
            problems.append(f"'{key}': {item['msg']} (got {item.get('input')!r})")
    return problems


def _describe(error: ValidationError, source: Path) -> str:
    lines = [f"{source}: {error.error_count()} problem(s) in params"]
    lines += [f"  - {problem}" for problem in validation_problems(error)]
    return "\n".join(lines)


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def apply_profile(raw: dict, source: Path) -> dict:
    """Merge `profiles[profile]` over the stage sections (`profile: default` merges nothing).

    A profile is a set of overrides for another machine (e.g. `gpu`: real pre-training
    sizes); select it in params.yaml or with `dvc exp run -S profile=gpu`.
    """
    raw = dict(raw)
    profile, profiles = raw.pop("profile", "default"), raw.pop("profiles", None) or {}
    if profile == "default":
        return raw
    if profile not in profiles:
        raise ParamsError(f"{source}: profile {profile!r} is not one of profiles: {sorted(profiles) or 'none'}")
    if "paths" in (profiles[profile] or {}):
        raise ParamsError(f"{source}: profiles.{profile} sets paths; a profile changes sizes, never where files go "
                          "(dvc.yaml reads the paths section as it is)")
    return _merge(raw, profiles[profile])


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key repeated in one mapping (PyYAML would keep the
    last value silently; DVC refuses such a params file too)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """One line: what is wrong and where (`duplicate key 'epochs' at line 126, column 3`)."""
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"{getattr(error, 'problem', None) or ' '.join(str(error).split())}{where}"


def read_params_yaml(path: Path) -> object:
    """The parsed params file; a duplicated key is an error (`yaml.YAMLError`)."""
    return yaml.load(Path(path).read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and validate `params.yaml`.

    Raises:
        ParamsError: the file is missing or malformed, or a key is unknown or mistyped;
            the message names every offending key.
    """
    path = Path(path)
    try:
        raw = read_params_yaml(path)
    except FileNotFoundError as exc:
        raise ParamsError(f"{path}: no such params file") from exc
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of stage sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(apply_profile(raw, path))
    except ValidationError as exc:
        raise ParamsError(_describe(exc, path)) from None


def with_overrides(path: Path | str, overrides: dict[str, object]) -> Params:
    """The params of `path` with dotted-key `overrides` applied (as `dvc exp run -S` would),
    validated without writing anything.

    Raises:
        ParamsError: an override names no existing section, or the result is invalid.
    """
    path = Path(path)
    try:
        raw = read_params_yaml(path) if path.exists() else None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: no params to override")
    for key, value in overrides.items():
        set_dotted_key(raw, key, value, path)
    try:
        return Params.model_validate(apply_profile(raw, path))
    except ValidationError as exc:
        raise ParamsError(_describe(exc, path)) from None


def set_dotted_key(document: dict, key: str, value: object, source: Path | str) -> None:
    """Set `a.b.c` in a nested mapping (plain or ruamel's round-trip one), as `dvc exp run -S` would.

    Raises:
        ParamsError: a part before the last is not a section of `source`.
    """
    *parents, leaf = key.split(".")
    node = document
    for part in parents:
        if not isinstance(node.get(part), dict):
            raise ParamsError(f"override '{key}': '{part}' is not a section of {source}")
        node = node[part]
    node[leaf] = value
