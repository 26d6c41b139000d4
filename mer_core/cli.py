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

from mer_core.config import ParamsError, load_params

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Micro-expression recognition pipeline stages.")
log = logging.getLogger("mer")

ParamsOption = typer.Option(Path("params.yaml"), "--params", help="The params file to read.")


class StageFailed(RuntimeError):
    """A stage ran to completion but its outcome must stop the pipeline."""


def _known_errors() -> tuple[type[Exception], ...]:
    from mer_core.data.adapters import AnnotationError
    from mer_core.data.anonymize import LeakError, PseudonymKeyError

    return ParamsError, AnnotationError, PseudonymKeyError, LeakError, FileNotFoundError, StageFailed


def stage(fn: Callable) -> Callable:
    """Set up logging, and turn expected failures into a message and a non-zero exit."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        logging.basicConfig(level=os.environ.get("MER_LOG_LEVEL", "INFO"),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
        start = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
        except _known_errors() as exc:
            typer.secho(f"mer {fn.__name__}: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None
        log.info("%s finished in %.1f s", fn.__name__, time.perf_counter() - start)
        return result

    return wrapper


def write_json(path: Path, payload: dict) -> None:
    from mer_core.data.store import write_text_atomically

    write_text_atomically(Path(path), json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


@app.command()
@stage
def synthesize(params: Path = ParamsOption, workers: int = typer.Option(2, help="Render processes.")) -> None:
    """Render the embedded synthetic data set (videos + CASME II layout)."""
    from mer_core.data.synthetic import synthesize as render

    counts = render(load_params(params).synthesize, workers=workers)
    typer.echo(json.dumps(counts, indent=2))


@app.command()
@stage
def ingest(
    params: Path = ParamsOption,
    report: Path = typer.Option(Path("reports/ingest.json")),
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
    from mer_core.data.ingest import folder_source, ingest_folder
    from mer_core.data.ingest import ingest as run_ingest

    if adapter is not None:
        if source is None or output is None:
            raise ParamsError("--adapter needs --source DIR and --output DIR")
        dataset = folder_source(adapter, source, kind)
        settings = load_params(params).ingest if params.exists() else None
        summary, rejected = ingest_folder(dataset, output, settings)
        typer.echo(f"{source}: {summary.clips_listed} item(s) listed → {summary.rows} clip(s) in {output}, "
                   f"{len(rejected)} rejected")
        for r in rejected:
            typer.echo(f"  rejected {r.item}: {r.reason}")
        if summary.rows == 0:
            raise StageFailed(f"nothing could be read from {source}" if summary.clips_listed or rejected
                              else f"found nothing for adapter {adapter} in {source}")
        return

    summaries = run_ingest(load_params(params).ingest)
    payload = {name: {**asdict(s), "frames_per_second": round(s.frames_per_second, 1)} for name, s in summaries.items()}
    write_json(report, payload)
    for name, s in summaries.items():
        typer.echo(f"{name}: {s.clips_listed} clips listed, {s.rows} rows, {s.rejected} rejected, "
                   f"{s.frames_per_second:.0f} frames/s")


@app.command()
@stage
def anonymize(params: Path = ParamsOption) -> None:
    """Pseudonymise subjects, drop paths, mask background, scan for leaks."""
    from mer_core.data import anonymize as anon
    from mer_core.data.ingest import CLIPS_DIR

    p = load_params(params)
    a = p.anonymize
    key = anon.load_key(a.key_env, a.key_file)
    report = anon.anonymize(Path(a.in_dir) / CLIPS_DIR, Path(a.out_dir) / CLIPS_DIR, key,
                            a.mask_outside_face, p.ingest.face_margin, a.workers)
    write_json(a.report, asdict(report))
    typer.echo(f"anonymized {report.rows} rows of {report.subjects} subjects; leak scan: "
               f"{len(report.leak_scan['findings'])} finding(s) in {report.leak_scan['values_scanned']} values")


@app.command()
@stage
def validate(params: Path = ParamsOption) -> None:
    """Run the Great Expectations suite over the processed clip table."""
    from mer_core.data.adapters import allowed_labels
    from mer_core.data.ingest import CLIPS_DIR
    from mer_core.data.validate import validate_clips, write_validation_report

    p = load_params(params)
    v = p.validate_
    labels = {d.name: allowed_labels(d.adapter, d.labels) for d in p.ingest.datasets}
    result = validate_clips(Path(v.in_dir) / CLIPS_DIR, v, {k: set(s) for k, s in labels.items() if s is not None})
    write_validation_report(result, v.report)
    typer.echo(result.summary())
    if not result.success:
        raise StageFailed(f"validation failed; see {v.report}")


def _tracking(p, params_file: Path, stage_name: str):
    """An MLflow session for this stage, opened before the work so a wrong tracking URI
    fails in seconds, not after training. The repo root is the params file's folder."""
    from mer_core.tracking import open_session

    return open_session(p.tracking, Path(params_file).resolve().parent, stage_name, p)


def _datasets_of_kind(params, kind: str) -> list[str]:
    names = [d.name for d in params.ingest.datasets if d.kind == kind]
    if not names:
        raise ParamsError(f"ingest.datasets has no {kind} data set")
    return names


@app.command()
@stage
def pretrain(params: Path = ParamsOption) -> None:
    """Self-supervised pre-training (MA2MI, ContraWarping, both) on the macro clips."""
    from mer_core.data.ingest import CLIPS_DIR
    from mer_core.training.pretrain import run_pretraining

    p = load_params(params)
    t = p.pretrain
    dirs = [Path(t.in_dir) / CLIPS_DIR / name for name in _datasets_of_kind(p, "macro")]
    session = _tracking(p, params, "pretrain")
    report = run_pretraining(t, dirs, p.ingest.crop_size)
    write_json(t.report, report)
    from mer_core.tracking import log_pretraining

    log_pretraining(session, p, report, [Path(t.report)])
    for variant, result in report["variants"].items():
        last = result["history"][-1]
        typer.echo(f"{variant}: {result['epochs']} epochs on {result['clips']} clips in {result['seconds']} s "
                   f"({result['clips_per_second']} clips/s, {100 * result['data_wait_fraction']:.1f} % waiting "
                   f"for data), final loss {last['loss']:.3f}")


@app.command()
@stage
def finetune(params: Path = ParamsOption) -> None:
    """MIACNet under leave-one-subject-out for every ablation variant and seed, then the final model."""
    from mer_core.data.store import write_table
    from mer_core.evaluation.report import predictions_table, scores_by_run
    from mer_core.tracking import log_finetuning
    from mer_core.training.finetune import run_finetuning

    p = load_params(params)
    f = p.finetune
    session = _tracking(p, params, "finetune")
    rows, report = run_finetuning(f, _datasets_of_kind(p, "micro"), p.pretrain.encoder)
    write_table(predictions_table(rows, report["classes"]), Path(f.predictions))
    write_json(f.report, report)
    log_finetuning(session, p, report, {k: v for k, v in scores_by_run(rows).items() if k[0] in report["variants"]})
    typer.echo(f"{len(rows)} held-out predictions over {report['subjects']} subjects; final model "
               f"{report['final_model']['path']}")


@app.command()
@stage
def evaluate(params: Path = ParamsOption) -> None:
    """UF1, UAR and accuracy from the LOSO predictions; the ablation table; the confusion plot."""
    import csv
    import io

    from mer_core.data.store import write_text_atomically
    from mer_core.evaluation import report as rep
    from mer_core.evaluation.protocols import composite_label

    p = load_params(params)
    e = p.evaluate
    adapters = {d.name: d.adapter for d in p.ingest.datasets}
    rows = rep.read_predictions(e.predictions)
    metrics = rep.metrics_report(rows, p.finetune.variant, lambda ds, label: composite_label(adapters[ds], label))
    ablation = rep.ablation_report(rows, p.finetune.ablation)
    write_json(e.metrics, metrics)
    write_json(e.ablation, ablation)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["actual", "predicted"])
    writer.writeheader()
    writer.writerows(rep.confusion_rows(rows, p.finetune.variant))
    write_text_atomically(Path(e.plots_dir) / "confusion.csv", buffer.getvalue())
    picture = Path(e.plots_dir) / "confusion.png"
    rep.write_confusion_png(picture, rep.confusion_summary(rows, p.finetune.variant),
                            f"{p.finetune.variant}, LOSO, seed {min(p.finetune.seeds)}")
    from mer_core.tracking import log_evaluation

    log_evaluation(_tracking(p, params, "evaluate"), p, metrics, ablation,
                   [Path(e.metrics), Path(e.ablation), Path(e.plots_dir) / "confusion.csv", picture,
                    Path(p.validate_.report)])
    typer.echo(f"{metrics['variant']}: UF1 {metrics['uf1']:.3f} ± {metrics['uf1_std']:.3f}, "
               f"UAR {metrics['uar']:.3f} ± {metrics['uar_std']:.3f}, accuracy {metrics['accuracy']:.3f}")
    for variant, entry in ablation["variants"].items():
        typer.echo(f"  {variant:12s} UF1 {entry['uf1']:.3f} ± {entry['uf1_std']:.3f}  UAR {entry['uar']:.3f}")
    if ablation["ceiling"]:
        typer.echo(f"  ceiling      UF1 {ablation['ceiling']['uf1']:.3f} (AU oracle)")


def _read_json(path: Path, produced_by: str) -> dict:
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} does not exist; run the {produced_by} stage first")
    return json.loads(Path(path).read_text())


@app.command()
@stage
def register(params: Path = ParamsOption) -> None:
    """Log the final model to MLflow, register a version with its model card, apply the promotion gate."""
    from mer_core.evaluation.report import model_card_markdown
    from mer_core.inference import load_final_model
    from mer_core.tracking import Standing, data_version, git_state, register_model

    p = load_params(params)
    root = Path(params).resolve().parent
    metrics = _read_json(p.evaluate.metrics, "evaluate")
    ablation = _read_json(p.evaluate.ablation, "evaluate")
    validation = _read_json(p.validate_.report, "validate")
    _, meta = load_final_model(Path(p.finetune.final_model))
    micro = _datasets_of_kind(p, "micro")
    # Scores are comparable only under the same labels, classes and data sets.
    protocol = f"loso:{meta['label_column']}:{'+'.join(sorted(micro))}:{','.join(meta['classes'])}"
    version = data_version(root)
    card = model_card_markdown(
        model_name=p.register_.model_name, variant=meta["variant"], classes=meta["classes"],
        datasets={d.name: d.adapter for d in p.ingest.datasets}, protocol=protocol, data_version=version,
        git_commit=git_state(root)[0], metrics=metrics, ablation=ablation, validation=validation)
    card_path = Path(p.register_.report).with_name("model_card.md")
    from mer_core.data.store import write_text_atomically

    write_text_atomically(card_path, card)
    session = _tracking(p, params, "register")
    model_config = {"mask_margin": _mask_margin(p),
                    "crop_size": p.ingest.crop_size, "frames_per_clip": p.ingest.frames_per_clip,
                    "face_margin": p.ingest.face_margin, "min_face_px": p.ingest.min_face_px,
                    "stabilize": p.ingest.stabilize}
    outcome = register_model(
        session, p.register_.model_name, Path(p.finetune.final_model), Standing(metrics["uf1"], protocol, version),
        {k: metrics[k] for k in ("uf1", "uar", "accuracy")}, card, p.register_.promotion_margin,
        p.ingest.frames_per_clip, model_config, [card_path, Path(p.evaluate.metrics), Path(p.evaluate.ablation)])
    write_json(p.register_.report, {**asdict(outcome), "protocol": protocol, "data_version": version,
                                   "uf1": metrics["uf1"]})
    typer.echo(f"{outcome.model_name} version {outcome.version} → {outcome.alias}: {outcome.reason}")


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
    """Per-window class probabilities of a video, as JSON."""
    from mer_core import inference
    from mer_core.data.faces import NoFaceError
    from mer_core.data.video import FrameReadError

    logging.basicConfig(level=os.environ.get("MER_LOG_LEVEL", "WARNING"), stream=sys.stderr)
    given = (onset, apex, offset)
    if any(v is not None for v in given) and None in given:
        _fail("predict", "give all of --onset, --apex and --offset, or none")
    if not video.is_file():
        _fail("predict", f"{video}: no such file")
    try:
        predictor = _load_predictor(model, params)
        result = inference.predict_video(video, predictor, window_s=window, stride_s=stride, fps=fps,
                                         given=None if None in given else given)
    except (FrameReadError, NoFaceError, LookupError, ValueError, *_known_errors()) as exc:
        _fail("predict", str(exc))
    text = json.dumps(result.as_json(), indent=2)
    if output:
        write_json(output, result.as_json())
    else:
        typer.echo(text)


def _fail(command: str, message: str) -> None:
    typer.secho(f"mer {command}: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def _mask_margin(p) -> float | None:
    """The face margin to mask clips with at prediction, as `anonymize` masked the training
    clips; None when it did not mask."""
    return p.ingest.face_margin if p.anonymize.mask_outside_face else None


def _load_predictor(model: str, params_file: Path):
    from mer_core import inference
    from mer_core.data.ingest import CropSettings

    if model.endswith(".pt"):
        p = load_params(params_file)
        return inference.predictor_from_file(Path(model), CropSettings.from_params(p.ingest), _mask_margin(p))
    from mer_core.config import TrackingParams
    from mer_core.tracking import load_registered_model

    tracking = load_params(params_file).tracking if Path(params_file).exists() else TrackingParams()
    root = Path(params_file).resolve().parent
    return inference.predictor_from_pyfunc(model, load_registered_model(model, tracking, root))


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
