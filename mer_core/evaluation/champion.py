"""The registry's champion scored on the current processed micro clips, split by subject:
on subjects it never saw (a generalization estimate) and, labelled in-sample, on those it
trained on (`final.pt` records its training subjects' pseudonyms). Its LOSO figure is the
`uf1` tag it was registered with; this is what it does on data that arrived since.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from mer_core.data.store import frames_to_numpy, shard_paths
from mer_core.evaluation.metrics import summarize

BATCH = 64


def score_micro_clips(predict: Callable[[np.ndarray], np.ndarray], classes: list[str], clips_dir: Path,
                      datasets: list[str], label_column: str,
                      include_subject: Callable[[str], bool] = lambda subject: True) -> dict:
    """UF1, UAR and accuracy of `predict` on the labelled micro clips of the processed
    table (their apex sits at T // 2, as the model expects). Clips whose label the model
    does not know, and clips of subjects (`dataset/pseudonym`) not included, are counted,
    not scored."""
    actual, predicted, unknown, skipped = [], [], 0, 0
    for dataset in datasets:
        for shard in shard_paths(Path(clips_dir) / dataset):
            table = pq.read_table(shard, columns=["kind", "subject", label_column, "frames"])
            labels = table.column(label_column).to_pylist()
            subjects = [f"{dataset}/{s}" for s in table.column("subject").to_pylist()]
            keep = [i for i, (kind, label) in enumerate(zip(table.column("kind").to_pylist(), labels))
                    if kind == "micro" and label is not None]
            skipped += sum(not include_subject(subjects[i]) for i in keep)
            keep = [i for i in keep if include_subject(subjects[i])]
            unknown += sum(labels[i] not in classes for i in keep)
            keep = [i for i in keep if labels[i] in classes]
            if not keep:
                continue
            frames = frames_to_numpy(table.take(keep).column("frames"))
            for start in range(0, len(keep), BATCH):
                probabilities = predict(frames[start:start + BATCH])
                predicted += [classes[int(k)] for k in probabilities.argmax(axis=1)]
            actual += [labels[i] for i in keep]
    counts = {"clips_with_unknown_label": unknown, "clips_of_other_subjects": skipped}
    if not actual:
        return {"clips": 0, **counts}
    return {**{k: round(v, 4) for k, v in summarize(actual, predicted).items()}, "clips": len(actual), **counts}


def unseen_and_in_sample_scores(predict: Callable[[np.ndarray], np.ndarray], classes: list[str],
                                trained_subjects: list[str] | None, clips_dir: Path, datasets: list[str],
                                label_column: str) -> dict:
    """A model's figures on the processed micro clips, split by whether it trained on the
    subject: `unseen` is a generalization estimate, `in_sample` is not and says so.
    Without a record of the training subjects everything is `subjects_unknown`."""
    def score(include: Callable[[str], bool]) -> dict:
        return score_micro_clips(predict, classes, clips_dir, datasets, label_column, include)

    if trained_subjects is None:
        return {"subjects_unknown": score(lambda subject: True)}
    trained = frozenset(trained_subjects)
    return {"unseen": score(lambda subject: subject not in trained),
            "in_sample": score(lambda subject: subject in trained)}


SCOPES = {"unseen": "subjects the champion never saw (a generalization estimate)",
          "in_sample": "subjects it was trained on (in-sample: NOT a generalization estimate)",
          "subjects_unknown": "all subjects (its training subjects are not recorded: may be in-sample)"}


def champion_markdown(result: dict) -> str:
    """The evaluation as the Prefect artifact a person reads: model, data version, one line per scope."""
    lines = ["# Champion evaluation", "", f"- Model: `{result['model']}`",
             f"- Data version: `{result['data_version']}`"]
    if (loso := result.get("loso_uf1_at_registration")) is not None:
        lines.append(f"- Held out, as registered (leave-one-subject-out over its training subjects): UF1 {loso:.3f}")
    for scope, text in SCOPES.items():
        if scope in result:
            s = result[scope]
            figures = (f"UF1 {s['uf1']:.3f}, UAR {s['uar']:.3f}, accuracy {s['accuracy']:.3f}" if s["clips"]
                       else "no clips")
            lines.append(f"- On {text}: {figures} ({s['clips']} clips)")
    return "\n".join(lines) + "\n"
