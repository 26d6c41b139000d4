"""`mer <stage>`: one thin command per DVC stage. Each reads its params section, calls
the library and writes its reports; none holds logic of its own."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import wraps
from pathlib import Path

import typer

from mer_core import MerError
from mer_core.config import ExecutorParams, ParamsError, load_params

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Micro-expression recognition pipeline stages.")
log = logging.getLogger("mer")

ParamsOption = typer.Option(Path("params.yaml"), "--params", help="The params file to read.")


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"mer {version('mer-core')}")
        raise typer.Exit()


@app.callback()
def main_options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                              help="Print the version and exit.")) -> None:
    """Micro-expression recognition pipeline stages."""
    # FFmpeg's and OpenCV's own messages ("moov atom not found") would precede mer's
    # one-line error; set before OpenCV first opens a video, and kept for child processes.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")


class StageFailed(MerError, RuntimeError):
    """A stage ran to completion but its outcome must stop the pipeline."""


# Expected failures: a one-line message and exit 1. Anything else is a bug and keeps its traceback.
KNOWN_ERRORS = (MerError, FileNotFoundError)


def stage(fn: Callable) -> Callable:
    """Set up logging, and turn expected failures into a message and a non-zero exit."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        logging.basicConfig(level=os.environ.get("MER_LOG_LEVEL", "INFO"),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
        start = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
        except KNOWN_ERRORS as exc:
            _fail(fn.__name__.replace("_", "-"), str(exc))
        log.info("%s finished in %.1f s", fn.__name__, time.perf_counter() - start)
        return result

    return wrapper


def write_json(path: Path, payload: dict) -> None:
    from mer_core.data.store import write_text_atomically

    write_text_atomically(Path(path), json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def _read_json(path: Path, produced_by: str) -> dict:
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} does not exist; run the {produced_by} stage first")
    return json.loads(Path(path).read_text())


def _clip_dirs(params, kind: str) -> list[Path]:
    """The processed clip folders of every `kind` data set (long videos hold both kinds); a
    params error when there is none."""
    from mer_core.data.store import CLIPS_DIR

    names = [d.name for d in params.ingest.datasets if d.kind in (kind, "long")]
    if not names:
        raise ParamsError(f"ingest.datasets has no {kind} data set")
    return [params.paths.processed / CLIPS_DIR / name for name in names]


def _micro_sources(p, params_file: Path) -> tuple[list[tuple[str, Path]], Path]:
    """(name, root) of every micro data set and the synthetic data's root, both against the
    params file's folder: what `inference.training_note` reads."""
    base = Path(params_file).resolve().parent
    return [(d.name, base / d.root) for d in p.ingest.datasets if d.kind == "micro"], base / p.paths.synthetic


def _tracking(p, params_file: Path, stage_name: str, data_dirs: list[Path]):
    """An MLflow session for this stage, opened before the work so a wrong tracking URI
    fails in seconds, not after training. The repo root is the params file's folder; runs
    are tagged with the version of the data they read and DVC's md5 of the processed data."""
    from mer_core.data.store import data_version
    from mer_core.tracking import open_session

    root = Path(params_file).resolve().parent
    return open_session(p.tracking, root, stage_name, p, data_version(data_dirs),
                        {"dvc.data_md5": _dvc_md5(root, p.paths.processed)})


def _dvc_md5(root: Path, output: Path) -> str:
    """DVC's md5 of a stage output as `dvc.lock` records it ('unlocked' before the first repro)."""
    import yaml

    lock = root / "dvc.lock"
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}) if lock.exists() else {}
    for entry in stages.values():
        for out in entry.get("outs", []):
            if Path(out.get("path", "")) == Path(output) and out.get("md5"):
                return out["md5"]
    return "unlocked"


@app.command()
@stage
def synthesize(params: Path = ParamsOption) -> None:
    """Render the embedded synthetic data set (videos + CASME II layout)."""
    from mer_core.data.synthetic import synthesize as render

    p = load_params(params)
    typer.echo(json.dumps(render(p.synthesize, p.paths.synthetic, workers=p.synthesize.workers), indent=2))


@app.command()
@stage
def ingest(
    params: Path = ParamsOption,
    adapter: str | None = typer.Option(None, help="Ingest one folder ad hoc with this adapter (e.g. videos: every "
                                       "video file an unlabelled clip) instead of params' data sets."),
    source: Path | None = typer.Option(None, help="With --adapter: the folder to read."),
    output: Path | None = typer.Option(None, help="With --adapter: where clips/ and rejected.parquet are written."),
    kind: str = typer.Option("macro", help="With --adapter: macro or micro."),
) -> None:
    """Decode, detect and crop faces, sample frames: raw layouts → interim Parquet.

    With --adapter, one folder (--source) instead of params' data sets, into --output;
    it exits 0 when the run completes, even with rejects, and 1 when nothing could be read.
    """
    from mer_core.data import ingest as ingestion

    if adapter is None:
        p = load_params(params)
        summaries = ingestion.ingest(p.ingest, p.paths.interim, executor=p.executor)
        write_json(p.paths.ingest_report, {name: s.as_report() for name, s in summaries.items()})
        typer.echo("\n".join(s.describe(name) for name, s in summaries.items()))
        return
    if source is None or output is None:
        raise ParamsError("--adapter needs --source DIR and --output DIR")
    p = load_params(params) if params.exists() else None
    summary, rejected = ingestion.ingest_folder(ingestion.folder_source(adapter, source, kind), output,
                                                p.ingest if p else None, p.executor if p else ExecutorParams())
    typer.echo(f"{source}: {summary.clips_listed} item(s) listed → {summary.rows} clip(s) in {output}, "
               f"{len(rejected)} rejected")
    typer.echo("".join(f"  rejected {r.item}: {r.reason}\n" for r in rejected), nl=False)
    if summary.rows == 0:
        raise StageFailed(f"nothing could be read from {source}" if summary.clips_listed or rejected
                          else f"found nothing for adapter {adapter} in {source}")


@app.command()
@stage
def anonymize(params: Path = ParamsOption) -> None:
    """Pseudonymise subjects, drop paths, mask background, scan for leaks."""
    from mer_core.data import anonymize as anon
    from mer_core.data.store import CLIPS_DIR

    p = load_params(params)
    a = p.anonymize
    key = anon.load_key(a.key_env, a.key_file, Path(params).resolve().parent)
    report = anon.anonymize(p.paths.interim / CLIPS_DIR, p.paths.processed / CLIPS_DIR, key,
                            a.mask_outside_face, a.workers, p.executor)
    write_json(p.paths.anonymization_report, asdict(report))
    typer.echo(report.describe())


@app.command()
@stage
def validate(params: Path = ParamsOption) -> None:
    """Run the Great Expectations suite over the processed clip table."""
    from mer_core.data.store import CLIPS_DIR
    from mer_core.data.validate import dataset_labels, validate_clips, write_validation_report

    p = load_params(params)
    result = validate_clips(p.paths.processed / CLIPS_DIR, p.validate_, dataset_labels(p.ingest.datasets),
                            p.paths.data_docs)
    write_validation_report(result, p.paths.validation_report)
    typer.echo(result.summary())
    if not result.success:
        raise StageFailed(f"validation failed; see {p.paths.validation_report}")


@app.command()
@stage
def features(params: Path = ParamsOption) -> None:
    """The motion (flow, strain) of every micro clip against its onset, computed once and stored."""
    from mer_core.data.motion import write_motion_features

    p = load_params(params)
    dirs = _clip_dirs(p, "micro")
    report = write_motion_features(dirs[0].parent, p.paths.features, [d.name for d in dirs], p.features.flow,
                                   p.features.magnification)
    write_json(p.paths.features_report, report)
    typer.echo(f"motion of {report['clips']} clips in {report['seconds']} s ({report['clips_per_second']} clips/s)")


@app.command()
@stage
def pretrain(params: Path = ParamsOption) -> None:
    """Self-supervised pre-training (MA2MI, ContraWarping, both) on the macro clips; with
    pretrain.nproc_per_node > 1, in that many DDP processes under torchrun."""
    from mer_core.training import distributed
    from mer_core.training.pretrain import batch_per_rank, check_input_size, describe, run_pretraining

    p = load_params(params)
    check_input_size(p.pretrain, p.ingest.crop_size)
    dirs = _clip_dirs(p, "macro")
    if p.pretrain.nproc_per_node > 1 and not distributed.under_torchrun():
        batch_per_rank(p.pretrain.batch_size, p.pretrain.nproc_per_node)  # a bad batch fails here, not in N processes
        raise typer.Exit(distributed.run_under_torchrun(p.pretrain.nproc_per_node, ["pretrain", "--params", str(params)]))
    ranks = distributed.ranks_from_environment()
    session = _tracking(p, params, "pretrain", dirs) if ranks.is_main else None
    report = run_pretraining(p.pretrain, dirs, p.ingest.crop_size, p.paths.encoders, p.paths.checkpoints / "pretrain",
                             p.features.flow, ranks)
    if ranks.is_main:
        from mer_core.tracking import log_pretraining  # MLflow is loaded by rank 0 alone

        write_json(p.paths.pretrain_report, report)
        log_pretraining(session, p, report, [p.paths.pretrain_report])
        typer.echo(describe(report))


@app.command()
@stage
def finetune(params: Path = ParamsOption) -> None:
    """MIACNet under leave-one-subject-out for every ablation variant and seed, then the final model."""
    from mer_core.data.store import write_table
    from mer_core.evaluation.predictions import predictions_table
    from mer_core.evaluation.report import scores_by_run
    from mer_core.tracking import log_finetuning
    from mer_core.training.finetune import FinetuneFiles, model_inputs, run_finetuning
    from mer_core.training.pretrain import check_input_size

    p = load_params(params)
    check_input_size(p.pretrain, p.ingest.crop_size)
    dirs = _clip_dirs(p, "micro")
    session = _tracking(p, params, "finetune", dirs)
    rows, report = run_finetuning(p.finetune, FinetuneFiles.from_paths(p.paths), [d.name for d in dirs],
                                  model_inputs(p), p.executor)
    write_table(predictions_table(rows, report["classes"]), p.paths.predictions)
    write_json(p.paths.finetune_report, report)
    log_finetuning(session, p, report, {k: v for k, v in scores_by_run(rows).items() if k[0] in report["variants"]})
    typer.echo(f"{len(rows)} held-out predictions over {report['subjects']} subjects; final model "
               f"{report['final_model']['path']}")


@app.command()
@stage
def evaluate(params: Path = ParamsOption) -> None:
    """UF1, UAR and accuracy from the LOSO predictions; the ablation table; the plots
    (confusion matrix of every seed, learning curves of pre-training and fine-tuning)."""
    from mer_core.evaluation import report as rep
    from mer_core.evaluation.plots import write_plots
    from mer_core.evaluation.predictions import read_predictions
    from mer_core.tracking import log_evaluation

    p = load_params(params)
    paths, variant = p.paths, p.finetune.variant
    rows = read_predictions(paths.predictions)
    tuning = {"tuned_on_seeds": p.tuning.synthesize_seeds, "reported_on_seed": p.synthesize.seed}
    metrics, ablation = rep.evaluation_reports(rows, variant, p.finetune.ablation,
                                               {d.name: d.adapter for d in p.ingest.datasets}, tuning,
                                               p.finetune.protocol, p.finetune.au_variants, p.finetune.au_set,
                                               p.finetune.train_fraction)
    write_json(paths.metrics, metrics)
    write_json(paths.ablation, ablation)
    pictures = write_plots(rows, variant, _read_json(paths.pretrain_report, "pretrain"),
                           _read_json(paths.finetune_report, "finetune"), paths.plots)
    log_evaluation(_tracking(p, params, "evaluate", _clip_dirs(p, "micro")), p, metrics, ablation,
                   [paths.metrics, paths.ablation, *pictures, paths.validation_report])
    typer.echo(rep.describe_evaluation(metrics, ablation))


@app.command()
@stage
def register(params: Path = ParamsOption) -> None:
    """Log the final model to MLflow, register a version with its model card, apply the promotion gate."""
    from mer_core.data.faces import CropSettings
    from mer_core.data.store import data_version, write_text_atomically
    from mer_core.evaluation.protocols import protocol_id
    from mer_core.evaluation.report import model_card_markdown
    from mer_core.inference import load_final_model, serving_config, training_note
    from mer_core.tracking import Standing, git_state, loggable_params, register_model, version_card

    p = load_params(params)
    paths, dirs = p.paths, _clip_dirs(p, "micro")
    metrics, ablation = _read_json(paths.metrics, "evaluate"), _read_json(paths.ablation, "evaluate")
    _, meta = load_final_model(paths.final_model)
    protocol = protocol_id(meta["label_column"], [d.name for d in dirs], meta["classes"], p.finetune.protocol,
                           p.finetune.train_fraction)
    version = data_version(dirs)
    card = model_card_markdown(
        model_name=p.register_.model_name, variant=meta["variant"], classes=meta["classes"],
        datasets={d.name: d.adapter for d in p.ingest.datasets}, protocol=protocol, data_version=version,
        git_commit=git_state(Path(params).resolve().parent)[0], metrics=metrics, ablation=ablation,
        validation=_read_json(paths.validation_report, "validate"), model=meta,
        landmark_model=p.ingest.landmark_model)
    write_text_atomically(paths.model_card, card)
    settings = {k: v for section, name in ((p.ingest, "ingest"), (p.features, "features"), (p.pretrain, "pretrain"),
                                           (p.finetune, "finetune")) for k, v in loggable_params(section, name).items()}
    outcome = register_model(
        _tracking(p, params, "register", dirs), p.register_.model_name, paths.final_model,
        Standing(metrics["uf1"], protocol, version), {k: metrics[k] for k in ("uf1", "uar", "accuracy")}, card,
        p.register_.promotion_margin, p.ingest.frames_per_clip,
        serving_config(CropSettings.from_params(p.ingest), p.anonymize.mask_outside_face,
                       training_note(*_micro_sources(p, params))),
        [paths.model_card, paths.metrics, paths.ablation], settings)
    write_text_atomically(paths.model_card, version_card(card, outcome.alias, outcome.reason,
                                                         outcome.previous_champion, list(outcome.changes)))
    write_json(paths.registry_report, {**asdict(outcome), "protocol": protocol, "data_version": version,
                                       "uf1": metrics["uf1"]})
    typer.echo(f"{outcome.model_name} version {outcome.version} → {outcome.alias}: {outcome.reason}")


@app.command()
@stage
def report(params: Path = ParamsOption) -> None:
    """`reports/report.html`: one offline page of the run (metrics, ablation, plots, the
    registry's decision, data and validation), logged to MLflow beside the registered model."""
    from mer_core.data.store import write_text_atomically
    from mer_core.evaluation.html_report import render_report
    from mer_core.evaluation.plots import CONFUSION_PNG, CURVES_PNG
    from mer_core.tracking import log_report

    p = load_params(params)
    paths = p.paths

    def optional(path: Path) -> dict | None:
        return json.loads(Path(path).read_text()) if Path(path).exists() else None

    pictures = {title: (paths.plots / name).read_bytes() for name, title in (
        (CONFUSION_PNG, "Confusion matrices of the shipped variant, one per seed (held-out predictions)"),
        (CURVES_PNG, "Learning curves: pre-training loss and fine-tuning training loss per epoch"))
        if (paths.plots / name).exists()}
    registry = optional(paths.registry_report)
    html = render_report(metrics=_read_json(paths.metrics, "evaluate"), ablation=_read_json(paths.ablation, "evaluate"),
                         registry=registry, pictures=pictures, ingest=optional(paths.ingest_report),
                         anonymization=optional(paths.anonymization_report),
                         features=optional(paths.features_report), validation=optional(paths.validation_report))
    write_text_atomically(paths.report, html)
    where = f"{paths.report}"
    if registry is not None:
        session = _tracking(p, params, "report", _clip_dirs(p, "micro"))
        where += f"; MLflow: {log_report(session, registry['run_id'], paths.report)}"
    typer.echo(f"report: {where}")


@app.command("evaluate-champion")
@stage
def evaluate_champion(
    params: Path = ParamsOption,
    model: str | None = typer.Option(None, help="A registry URI; the registered model's champion by default."),
    output: Path | None = typer.Option(None, help="Write the JSON here as well as printing it."),
) -> None:
    """Score the registry's champion on the current processed micro clips: on subjects it
    never saw and, labelled in-sample, on those it trained on."""
    from mer_core.data.store import data_version
    from mer_core.evaluation.champion import unseen_and_in_sample_scores
    from mer_core.inference import predictor_from_pyfunc
    from mer_core.tracking import load_registered_model, registered_uf1

    p = load_params(params)
    uri, dirs = model or f"models:/{p.register_.model_name}@champion", _clip_dirs(p, "micro")
    root = Path(params).resolve().parent
    pyfunc = load_registered_model(uri, p.tracking, root)
    predictor = predictor_from_pyfunc(uri, pyfunc)
    scores = unseen_and_in_sample_scores(predictor.predict, predictor.classes,
                                         pyfunc.unwrap_python_model().meta.get("subjects"), dirs[0].parent,
                                         [d.name for d in dirs], p.finetune.label_column)
    result = {"model": uri, "data_version": data_version(dirs), "loso_uf1_at_registration":
              registered_uf1(uri, p.tracking, root), **scores}
    if output:
        write_json(output, result)
    typer.echo(json.dumps(result, indent=2))


@app.command()
def predict(
    video: Path = typer.Argument(..., help="A video file with one face."),
    model: str = typer.Option("models:/mer-micro@champion", help="A registry URI (models:/NAME@ALIAS, runs:/...) "
                              "or a final.pt file written by finetune."),
    onset: int | None = typer.Option(None, help="Onset frame: with --apex and --offset, one window instead of sliding ones."),
    apex: int | None = typer.Option(None, help="Apex frame."),
    offset: int | None = typer.Option(None, help="Offset frame."),
    window: float = typer.Option(0.4, help="Sliding window length in seconds (micro-expressions last < 0.5 s)."),
    stride: float = typer.Option(0.1, help="Seconds between window starts."),
    fps: float | None = typer.Option(None, help="Frame rate, if the container's is missing or wrong."),
    output: Path | None = typer.Option(None, help="Write the JSON here instead of printing it."),
    params: Path = ParamsOption,
) -> None:
    """Per-window class probabilities of a video, as JSON, with a summary (the dominant
    class, the share of windows with a face, what the model was trained on)."""
    from mer_core.data.video import FrameReadError, VideoReader

    logging.basicConfig(level=os.environ.get("MER_LOG_LEVEL", "WARNING"), stream=sys.stderr)
    given = (onset, apex, offset)
    if any(v is not None for v in given) and None in given:
        _fail("predict", "give all of --onset, --apex and --offset, or none")
    for flag, value in (("--window", window), ("--stride", stride), ("--fps", fps)):
        if value is not None and not value > 0:
            _fail("predict", f"{flag} must be a positive number, got {value}")
    if any(v is not None and v < 0 for v in given):
        _fail("predict", f"frame numbers start at 0, got --onset {onset} --apex {apex} --offset {offset}")
    if not video.is_file():
        _fail("predict", f"{video}: no such file")
    try:
        with VideoReader(video):  # a file that is no video fails now, not after the model loaded
            pass
    except FrameReadError as exc:
        _fail("predict", str(exc))
    from mer_core import inference

    try:
        result = inference.predict_video(video, _load_predictor(model, params), window_s=window, stride_s=stride,
                                         fps=fps, given=None if None in given else given)
    except (*KNOWN_ERRORS, LookupError, ValueError) as exc:
        _fail("predict", str(exc))
    if output:
        write_json(output, result.as_json())
    else:
        typer.echo(json.dumps(result.as_json(), indent=2))


@app.command()
def serve(
    model: str = typer.Option("models:/mer-micro@champion", help="A registry URI or a final.pt file, as for predict."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(5000, help="Port to listen on."),
    params: Path = ParamsOption,
) -> None:
    """Serve a model over HTTP: POST a video to /predict for the JSON `mer predict` prints; GET /health."""
    import uvicorn

    from mer_core.serving import create_app

    logging.basicConfig(level=os.environ.get("MER_LOG_LEVEL", "WARNING"), stream=sys.stderr)
    try:
        predictor = _load_predictor(model, params)
    except (*KNOWN_ERRORS, LookupError, ValueError) as exc:
        _fail("serve", str(exc))
    typer.echo(f"mer serve: {predictor.name} on http://{host}:{port} (POST /predict, GET /health)", err=True)
    uvicorn.run(create_app(predictor), host=host, port=port, log_level="warning")


def _fail(command: str, message: str) -> None:
    typer.secho(f"mer {command}: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def _load_predictor(model: str, params_file: Path):
    from mer_core import inference
    from mer_core.config import TrackingParams
    from mer_core.data.faces import CropSettings

    if model.endswith(".pt"):
        p = load_params(params_file)
        return inference.predictor_from_file(Path(model), CropSettings.from_params(p.ingest),
                                             inference.mask_margin(p.ingest.face_margin, p.anonymize.mask_outside_face),
                                             inference.training_note(*_micro_sources(p, params_file)))
    from mer_core.tracking import load_registered_model

    # The model's files copy in well under a second: a progress bar per file is only noise here.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    tracking = load_params(params_file).tracking if Path(params_file).exists() else TrackingParams()
    return inference.predictor_from_pyfunc(model, load_registered_model(model, tracking,
                                                                        Path(params_file).resolve().parent))


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
