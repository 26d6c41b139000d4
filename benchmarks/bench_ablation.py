"""The ablation over seeds, on the tuning benchmark (to choose) or the reported one (to report).

    python benchmarks/bench_ablation.py --benchmark tuning      # make bench-tuning
    python benchmarks/bench_ablation.py --benchmark reported    # make bench-ablation (after make run)

`tuning` renders the synthetic benchmark with every `tuning.synthesize_seeds` (other faces
than `synthesize.seed`'s), ingests and anonymizes it under --work, and runs the whole
learning half there: every choice in params.yaml was made this way. `reported` runs on
`make run`'s processed data and is for reporting only. Both repeat pre-training with
--pretrain-seeds and fine-tuning with `finetune.seeds`, and print UF1 and UAR as mean ± std
over every (data, pre-training seed, fine-tuning seed) run, per variant, with the gain over
training from scratch (also run by run, each pre-trained e2e row against scratch on the same
data and seed) and the stage wall times; --out keeps every run's figure. Finished
pre-training and LOSO runs are checkpointed under --work (LOSO runs one file per
`finetune.train_fraction` too), so a second call with other --set overrides re-runs only
what they change. Scratch and baseline runs do not depend on the pre-training seed: they run
once per fine-tuning seed (or come from `make run`'s checkpoints when those match) and count
under every pre-training seed.

    python benchmarks/bench_ablation.py --benchmark tuning --set finetune.encoder_lr_scale=1.0
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import time
from pathlib import Path

import yaml


def _params(params_file: Path, overrides: list[str], seed: int | None, root: Path | None):
    """params.yaml with its profile and --set overrides applied, paths under `root` (tuning data)."""
    from bench_data import redirect_paths

    from mer_core.config import Params, apply_profile, set_dotted_key

    raw = apply_profile(yaml.safe_load(params_file.read_text()), params_file)
    for item in overrides:
        key, _, value = item.partition("=")
        set_dotted_key(raw, key, yaml.safe_load(value), params_file)
    if seed is not None:
        raw["synthesize"]["seed"] = seed
    return Params.model_validate(redirect_paths(raw, root) if root is not None else raw)


def _data_roots(args, params_file: Path) -> list:
    """(label, params) per benchmark data set, building the tuning sets if they are not there yet."""
    from bench_data import build_data

    base = _params(params_file, args.set, None, None)
    if args.benchmark == "reported":
        return [(f"seed {base.synthesize.seed}", base)]
    roots = []
    for seed in base.tuning.synthesize_seeds:
        params = _params(params_file, args.set, seed, args.work / f"data-seed{seed}")
        if not (params.paths.processed / "clips").is_dir():
            print(f"building the tuning set of synthesize.seed {seed} under {params.paths.processed.parent}", flush=True)
            build_data(params, os.cpu_count() or 1)
        roots.append((f"seed {seed}", params))
    return roots


def _share_runs_without_pretraining(checkpoints: Path, elsewhere: list[Path]) -> None:
    """Scratch and baseline LOSO runs do not depend on the pre-training seed: copy finished
    ones in (from `make run` and the other pre-training seeds). A copy is reused only if its
    fingerprint (settings, data, code) matches, as every LOSO checkpoint is."""
    from mer_core.config import learned_variant

    checkpoints.mkdir(parents=True, exist_ok=True)
    for folder in elsewhere:
        for done in folder.glob("*-seed*.pt") if folder.is_dir() and folder != checkpoints else []:
            learned, target = learned_variant(done.name.rsplit("-seed", 1)[0]), checkpoints / done.name
            if (learned is None or learned[0] == "scratch") and (
                    not target.exists() or target.stat().st_mtime < done.stat().st_mtime):
                shutil.copy2(done, checkpoints / done.name)


def _run(params, work: Path, pretrain_seed: int) -> tuple[list[dict], dict]:
    from mer_core.data.motion import write_motion_features
    from mer_core.data.store import CLIPS_DIR
    from mer_core.training.finetune import FinetuneFiles, model_inputs, run_finetuning
    from mer_core.training.pretrain import run_pretraining

    clips = params.paths.processed / CLIPS_DIR
    macro = [clips / d.name for d in params.ingest.datasets if d.kind == "macro"]
    micro = [d.name for d in params.ingest.datasets if d.kind == "micro"]
    features = work / f"features-{params.features.flow}-{params.features.magnification:g}"
    timings = {}
    started = time.perf_counter()
    if not features.is_dir():
        write_motion_features(clips, features, micro, params.features.flow, params.features.magnification)
    timings["features_s"] = round(time.perf_counter() - started, 1)
    pretrain = params.pretrain.model_copy(update={"seed": pretrain_seed})
    encoders = work / f"pretrain-seed{pretrain_seed}"
    started = time.perf_counter()
    run_pretraining(pretrain, macro, params.ingest.crop_size, encoders / "encoders", encoders / "checkpoints",
                    params.features.flow)
    timings["pretrain_s"] = round(time.perf_counter() - started, 1)
    files = FinetuneFiles(clips, features, encoders / "encoders", encoders / "ck-finetune", encoders / "final.pt")
    _share_runs_without_pretraining(files.checkpoints, [params.paths.checkpoints / "finetune",
                                                        *work.glob("pretrain-seed*/ck-finetune")])
    started = time.perf_counter()
    rows, _ = run_finetuning(params.finetune, files, micro, model_inputs(params))
    timings["finetune_s"] = round(time.perf_counter() - started, 1)
    return rows, timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--benchmark", choices=["tuning", "reported"], default="tuning")
    parser.add_argument("--pretrain-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a dotted params override, as `dvc exp run -S` takes it (repeatable)")
    parser.add_argument("--work", type=Path, default=Path(".bench"), help="data and checkpoints (reused)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level="WARNING")
    os.environ.setdefault("MER_PSEUDONYM_KEY", "ab" * 32)
    from mer_core.config import learned_variant
    from mer_core.evaluation.report import ablation_report

    args.work = args.work.resolve() / args.benchmark
    runs: dict[str, dict[str, list[float]]] = {}
    timings, ceilings, run_order = [], [], []
    for label, params in _data_roots(args, args.params):
        for seed in args.pretrain_seeds:
            rows, seconds = _run(params, args.work / label.replace(" ", "-"), seed)
            timings.append({"data": label, "pretrain_seed": seed, **seconds})
            variants = list(dict.fromkeys([params.finetune.variant, *params.finetune.ablation]))
            table = ablation_report(rows, variants)
            ceilings.append(table["ceiling"]["uf1"])
            run_order += [{"data": label, "pretrain_seed": seed, "finetune_seed": f} for f in params.finetune.seeds]
            for variant in variants:
                for fine_seed in params.finetune.seeds:
                    one = ablation_report([r for r in rows if r["variant"] == variant and r["seed"] == fine_seed],
                                          [variant])["variants"][variant]
                    entry = runs.setdefault(variant, {"uf1": [], "uar": []})
                    entry["uf1"].append(one["uf1"])
                    entry["uar"].append(one["uar"])
            print(f"{label}, pre-training seed {seed}: "
                  + ", ".join(f"{v} {e['uf1']:.3f}" for v, e in table["variants"].items()), flush=True)
    summary = {v: {k: {"mean": round(statistics.fmean(x), 4), "std": round(statistics.pstdev(x), 4), "runs": len(x)}
                   for k, x in m.items()} for v, m in runs.items()}
    scratch = summary.get("scratch_e2e", {}).get("uf1", {}).get("mean")
    print(f"\n{args.benchmark} benchmark; overrides: {args.set or 'none'}")
    print(f"{'variant':18s} {'UF1':>15s} {'UAR':>15s}  runs  gain over scratch_e2e")
    for variant, s in sorted(summary.items(), key=lambda kv: -kv[1]["uf1"]["mean"]):
        gain = f"{s['uf1']['mean'] - scratch:+.3f}" if scratch is not None else ""
        print(f"{variant:18s} {s['uf1']['mean']:.3f} ± {s['uf1']['std']:.3f}   {s['uar']['mean']:.3f} ± "
              f"{s['uar']['std']:.3f}  {s['uf1']['runs']:4d}  {gain}")
    print(f"{'ceiling':18s} {statistics.fmean(ceilings):.3f}   (AU oracle)")
    if scratch is not None:  # paired: the same data, fold subsample and fine-tuning seed
        for variant in (v for v in runs if v != "scratch_e2e" and (learned_variant(v) or ("", ""))[1] == "e2e"):
            gains = [a - b for a, b in zip(runs[variant]["uf1"], runs["scratch_e2e"]["uf1"])]
            print(f"{variant} over scratch_e2e, run by run: {sum(g > 0 for g in gains)}/{len(gains)} ahead, "
                  f"smallest {min(gains):+.3f}, largest {max(gains):+.3f}")
    for t in timings:
        print(f"{t['data']}, pre-training seed {t['pretrain_seed']}: features {t['features_s']} s, pretrain "
              f"{t['pretrain_s']} s, finetune {t['finetune_s']} s")
    out = args.out or Path("reports") / f"bench_{args.benchmark}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": args.benchmark, "overrides": args.set, "summary": summary,
                               "runs": {"order": run_order, **runs}, "ceiling": statistics.fmean(ceilings),
                               "timings": timings}, indent=2) + "\n")


if __name__ == "__main__":
    main()
