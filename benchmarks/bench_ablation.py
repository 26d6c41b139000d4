"""The ablation over seeds: pre-training seeds × fine-tuning seeds, on the processed data.

`make run` pre-trains once (pretrain.seed) and fine-tunes with every finetune.seeds; this
benchmark also repeats pre-training with several seeds, so the spread includes what
pre-training varies. Run it after `make run` (it needs `data/processed`):

    .venv/bin/python benchmarks/bench_ablation.py --pretrain-seeds 0 1 2

It prints UF1 and UAR as mean ± std over every (pre-training seed, fine-tuning seed)
run, the gain over scratch, the AU-oracle ceiling, and the wall time of each stage.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

from mer_core.config import load_params
from mer_core.data.store import CLIPS_DIR
from mer_core.evaluation.report import ablation_report
from mer_core.training.finetune import FinetuneFiles, run_finetuning
from mer_core.training.pretrain import run_pretraining


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--pretrain-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("reports/bench_ablation.json"))
    args = parser.parse_args()
    logging.basicConfig(level="WARNING")
    params = load_params(args.params)
    macro = [params.paths.processed / CLIPS_DIR / d.name for d in params.ingest.datasets if d.kind == "macro"]
    micro = [d.name for d in params.ingest.datasets if d.kind == "micro"]
    runs: dict[str, dict[str, list[float]]] = {}
    timings, ceiling = [], None
    with tempfile.TemporaryDirectory(prefix="mer-bench-") as tmp:
        for seed in args.pretrain_seeds:
            work = Path(tmp) / f"seed{seed}"
            pretrain = params.pretrain.model_copy(update={"seed": seed})
            finetune = params.finetune
            files = FinetuneFiles(params.paths.processed / CLIPS_DIR, work / "encoders", work / "ck-finetune",
                                  work / "final.pt")
            started = time.perf_counter()
            run_pretraining(pretrain, macro, params.ingest.crop_size, work / "encoders", work / "ck-pretrain")
            pretrained = time.perf_counter()
            rows, _ = run_finetuning(finetune, files, micro, pretrain.encoder)
            finished = time.perf_counter()
            timings.append({"pretrain_seed": seed, "pretrain_s": round(pretrained - started, 1),
                            "finetune_s": round(finished - pretrained, 1)})
            table = ablation_report(rows, finetune.ablation)
            ceiling = table["ceiling"]
            for variant in finetune.ablation:
                for fine_seed in finetune.seeds:
                    subset = [r for r in rows if r["variant"] == variant and r["seed"] == fine_seed]
                    one = ablation_report(subset, [variant])["variants"][variant]
                    runs.setdefault(variant, {"uf1": [], "uar": []})
                    runs[variant]["uf1"].append(one["uf1"])
                    runs[variant]["uar"].append(one["uar"])
            print(f"pretrain seed {seed}: " + ", ".join(f"{v} {e['uf1']:.3f}" for v, e in table["variants"].items()),
                  flush=True)
    summary = {v: {k: {"mean": round(statistics.fmean(x), 4), "std": round(statistics.pstdev(x), 4), "runs": len(x)}
                   for k, x in m.items()} for v, m in runs.items()}
    print(f"\n{'variant':12s} {'UF1':>15s} {'UAR':>15s}  runs   gain over scratch (UF1)")
    for variant, s in summary.items():
        gain = s["uf1"]["mean"] - summary["scratch"]["uf1"]["mean"] if "scratch" in summary else float("nan")
        print(f"{variant:12s} {s['uf1']['mean']:.3f} ± {s['uf1']['std']:.3f}   {s['uar']['mean']:.3f} ± "
              f"{s['uar']['std']:.3f}  {s['uf1']['runs']:4d}   {gain:+.3f}")
    if ceiling:
        print(f"{'ceiling':12s} {ceiling['uf1']:.3f}           {ceiling['uar']:.3f}          (AU oracle)")
    for t in timings:
        print(f"pretrain seed {t['pretrain_seed']}: pretrain {t['pretrain_s']} s, finetune {t['finetune_s']} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "ceiling": ceiling, "timings": timings}, indent=2) + "\n")


if __name__ == "__main__":
    main()
