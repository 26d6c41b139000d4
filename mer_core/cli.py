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
def ingest(params: Path = ParamsOption, report: Path = typer.Option(Path("reports/ingest.json"))) -> None:
    """Decode, detect and crop faces, sample frames: raw layouts → interim Parquet."""
    from mer_core.data.ingest import ingest as run_ingest

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
                            a.mask_outside_face, p.ingest.face_margin)
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
    report = run_pretraining(t, dirs, p.ingest.crop_size)
    write_json(t.report, report)
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
    from mer_core.evaluation.report import predictions_table
    from mer_core.training.finetune import run_finetuning

    p = load_params(params)
    f = p.finetune
    rows, report = run_finetuning(f, _datasets_of_kind(p, "micro"), p.pretrain.encoder)
    write_table(predictions_table(rows, report["classes"]), Path(f.predictions))
    write_json(f.report, report)
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
    typer.echo(f"{metrics['variant']}: UF1 {metrics['uf1']:.3f} ± {metrics['uf1_std']:.3f}, "
               f"UAR {metrics['uar']:.3f} ± {metrics['uar_std']:.3f}, accuracy {metrics['accuracy']:.3f}")
    for variant, entry in ablation["variants"].items():
        typer.echo(f"  {variant:12s} UF1 {entry['uf1']:.3f} ± {entry['uf1_std']:.3f}  UAR {entry['uar']:.3f}")
    if ablation["ceiling"]:
        typer.echo(f"  ceiling      UF1 {ablation['ceiling']['uf1']:.3f} (AU oracle)")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
