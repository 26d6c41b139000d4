"""The plots of a run, as DVC reads them (CSV tables, one series a file) and as people read
them (PNG): the shipped variant's confusion matrix for every seed, and the learning curves
of pre-training and fine-tuning.

DVC overlays a file of two revisions (`dvc plots diff main <exp>`) and draws each file of
a plots folder as its own plot, so a curve is a file of `epoch, loss` and a confusion
matrix a file of `actual, predicted`. The PNGs carry everything, for offline readers, the
HTML report and MLflow.
"""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path

from mer_core.evaluation.metrics import confusion_matrix

CONFUSION_DIR, CURVES_DIR = "confusion", "learning_curves"
CONFUSION_PNG, CURVES_PNG = "confusion.png", "learning_curves.png"


def confusion_pairs(rows: list[dict], variant: str) -> dict[int, list[dict]]:
    """Seed → (actual, predicted) pairs of the variant's held-out predictions."""
    seeds: dict[int, list[dict]] = {}
    for row in rows:
        if row["variant"] == variant:
            seeds.setdefault(row["seed"], []).append({"actual": row["label"], "predicted": row["predicted"]})
    if not seeds:
        raise ValueError(f"no predictions for variant {variant!r}")
    return dict(sorted(seeds.items()))


def confusion_summary(pairs: list[dict]) -> dict:
    """{"classes", "matrix"}: counts, rows actual and columns predicted."""
    classes = sorted({p["actual"] for p in pairs} | {p["predicted"] for p in pairs})
    return {"classes": classes,
            "matrix": confusion_matrix([p["actual"] for p in pairs], [p["predicted"] for p in pairs], classes)}


def pretraining_curves(pretrain_report: dict) -> dict[str, list[dict]]:
    """`pretrain_<objective>` → [{"epoch", "loss"}]: the loss of every pre-training epoch."""
    return {f"pretrain_{variant}": [{"epoch": int(h["epoch"]), "loss": float(h["loss"])} for h in result["history"]]
            for variant, result in pretrain_report.get("variants", {}).items() if result.get("history")}


def finetuning_curves(finetune_report: dict) -> dict[str, list[dict]]:
    """`finetune_<variant>` → the mean training loss per epoch over its seeds and LOSO folds
    (learned variants; baselines train no epochs), and `finetune_final_model` → the loss of
    the model trained on every subject."""
    losses: dict[str, list[list[float]]] = {}
    for key, folds in finetune_report.get("folds", {}).items():
        variant = key.split("/")[0]
        losses.setdefault(variant, []).extend(fold["train_loss"] for fold in folds if fold.get("train_loss"))
    curves = {f"finetune_{variant}": _mean_curve(runs) for variant, runs in losses.items() if runs}
    if final := finetune_report.get("final_model", {}).get("train_loss"):
        curves["finetune_final_model"] = [{"epoch": e + 1, "loss": float(v)} for e, v in enumerate(final)]
    return curves


def _mean_curve(runs: list[list[float]]) -> list[dict]:
    epochs = min(len(run) for run in runs)
    return [{"epoch": e + 1, "loss": round(statistics.fmean(run[e] for run in runs), 5)} for e in range(epochs)]


def _csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_tables(directory: Path, tables: dict[str, list[dict]]) -> None:
    """One `<name>.csv` per table, the folder swapped in whole (no stale series survive)."""
    from mer_core.data.store import staged_directory

    with staged_directory(Path(directory)) as staged:
        for name, rows in tables.items():
            if rows:
                (staged / f"{name}.csv").write_text(_csv(rows))


def write_plots(rows: list[dict], variant: str, pretrain_report: dict, finetune_report: dict,
                plots_dir: Path) -> list[Path]:
    """Every plot of a run under `plots_dir`: `confusion/seed<k>.csv` and `confusion.png`
    (the variant, each seed), `learning_curves/*.csv` and `learning_curves.png`. Returns the PNGs."""
    plots_dir = Path(plots_dir)
    pairs = confusion_pairs(rows, variant)
    write_tables(plots_dir / CONFUSION_DIR, {f"seed{seed}": run for seed, run in pairs.items()})
    curves = {**pretraining_curves(pretrain_report), **finetuning_curves(finetune_report)}
    write_tables(plots_dir / CURVES_DIR, curves)
    pictures = [plots_dir / CONFUSION_PNG, plots_dir / CURVES_PNG]
    draw_confusions(pictures[0], {f"{variant}, seed {seed}": confusion_summary(run) for seed, run in pairs.items()})
    draw_learning_curves(pictures[1], curves)
    return pictures


# --- pictures ---------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> None:
    from mer_core.data.store import write_atomically

    plt = _pyplot()
    figure.tight_layout()
    try:
        write_atomically(Path(path), lambda tmp: figure.savefig(tmp, format="png", dpi=90))
    finally:
        plt.close(figure)


def draw_confusions(path: Path, summaries: dict[str, dict]) -> None:
    """One confusion matrix per title, side by side, counts written in the cells."""
    plt = _pyplot()
    size = 1.0 * max(len(s["classes"]) for s in summaries.values()) + 2
    figure, axes = plt.subplots(1, len(summaries), figsize=(size * len(summaries), size), squeeze=False)
    for ax, (title, summary) in zip(axes[0], summaries.items()):
        classes, matrix = summary["classes"], summary["matrix"]
        ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted"), ax.set_ylabel("actual"), ax.set_title(title, fontsize=10)
        top = max(max(row) for row in matrix) or 1
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                ax.text(j, i, str(count), ha="center", va="center", color="white" if count > top / 2 else "black")
    _save(figure, path)


def draw_learning_curves(path: Path, curves: dict[str, list[dict]]) -> None:
    """Pre-training losses on the left, fine-tuning losses on the right, loss per epoch."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, prefix, title in ((axes[0], "pretrain_", "pre-training loss (macro clips)"),
                              (axes[1], "finetune_", "fine-tuning training loss (mean over seeds and folds)")):
        drawn = {name[len(prefix):]: rows for name, rows in curves.items() if name.startswith(prefix) and rows}
        for label, rows in drawn.items():
            ax.plot([r["epoch"] for r in rows], [r["loss"] for r in rows], marker="." if len(rows) < 40 else None,
                    label=label.replace("_", " "))
        ax.set_title(title, fontsize=10), ax.set_xlabel("epoch"), ax.set_ylabel("loss")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no curve in this run", ha="center", va="center", transform=ax.transAxes)
    _save(figure, path)
