"""Which optical flow, on the tuning benchmark: time per frame pair and what its features are worth.

    python benchmarks/bench_motion.py     # make bench-motion

For each flow method (Farneback, DIS) and magnification α, prints the milliseconds per
64-px frame pair and the LOSO UF1 of the flow + strain + logistic-regression baseline
(mer_core/models/classical.py) at several grids, on every tuning data set
(`tuning.synthesize_seeds`, built under --work if missing, as bench_ablation.py does).
`features.flow` and `features.magnification` in params.yaml were chosen from this table;
the reported benchmark is never read.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def _loso_uf1(features: np.ndarray, labels: np.ndarray, subjects: list[str], c: float) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from mer_core.evaluation.metrics import unweighted_f1
    from mer_core.evaluation.protocols import leave_one_subject_out

    predicted = np.empty(len(labels), object)
    for _, train, test in leave_one_subject_out(subjects):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=5000))
        predicted[test] = model.fit(features[train], labels[train]).predict(features[test])
    return unweighted_f1(list(labels), list(predicted))


def main() -> None:
    from bench_ablation import _data_roots

    from mer_core.data.motion import FLOW_METHODS, clip_motion, magnify
    from mer_core.data.store import CLIPS_DIR
    from mer_core.data.training_sets import load_micro_clips
    from mer_core.models.classical import grid_mean

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--work", type=Path, default=Path(".bench/tuning"))
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 10.0])
    parser.add_argument("--grids", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--c", type=float, default=0.1, help="the logistic regression's inverse regularisation")
    args = parser.parse_args()
    args.benchmark, args.set = "tuning", []
    print(f"{'data':<10} {'flow':<10} {'alpha':>5} {'ms/pair':>8} " + " ".join(f"{f'grid {g}':>8}" for g in args.grids))
    for label, params in _data_roots(args, args.params):
        micro = [d.name for d in params.ingest.datasets if d.kind == "micro"]
        clips = load_micro_clips(params.paths.processed / CLIPS_DIR, micro, params.finetune.label_column)
        frames, apex = clips.frames.numpy(), clips.apex_index.numpy()
        labels = np.array([clips.classes[int(k)] for k in clips.labels])
        for method in FLOW_METHODS:
            for alpha in args.alphas:
                started = time.perf_counter()
                motion = [clip_motion(magnify(f, alpha) if alpha else f, method) for f in frames]
                ms = 1000 * (time.perf_counter() - started) / (len(frames) * (frames.shape[1] - 1))
                scores = [_loso_uf1(np.stack([grid_mean(m[max(a, 1) - 1], g) for m, a in zip(motion, apex)]),
                                    labels, clips.subjects, args.c) for g in args.grids]
                print(f"{label:<10} {method:<10} {alpha:>5g} {ms:>8.2f} " + " ".join(f"{s:>8.3f}" for s in scores),
                      flush=True)


if __name__ == "__main__":
    main()
