"""Process pool against Dask: ingest clips/s and LOSO fine-tuning wall time on each.

Builds a synthetic set from the repo's params.yaml (fewer subjects, paths under a temporary
folder), ingests it with the process pool (`ingest.workers` processes) and on a
`LocalCluster` of 1 and then 2 worker processes, checks every output byte-identical, then
runs finetune's LOSO jobs (learned variants from scratch and baselines: no pre-training
needed) with the process pool and on 2 Dask workers, and checks the predictions equal.
Each cluster is started before its clock starts, as a standing cluster would be; the
process pool's spawn and imports are inside its time, as they are in every stage run.
Usage:
    python benchmarks/bench_dask.py [--params params.yaml] [--workers 2] [--micro-subjects 8] [--repeats 1]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def build_sources(params, micro_subjects: int, macro_subjects: int, workers: int):
    """The synthetic set with fewer subjects, rendered under params' paths."""
    from mer_core.data.synthetic import synthesize

    settings = params.synthesize.model_copy(update={
        "micro": params.synthesize.micro.model_copy(update={"subjects": micro_subjects}),
        "macro": params.synthesize.macro.model_copy(update={"subjects": macro_subjects})})
    counts = synthesize(settings, params.paths.synthetic, workers=workers)
    print(f"synthetic set: {counts['micro']['clips']} micro clips, {counts['macro']['clips']} macro videos",
          flush=True)


def timed_ingest(params, out: Path, executor, label: str) -> dict[str, str]:
    """Ingest into `out`; prints clips/s and returns the digest of every file it wrote."""
    from mer_core.data.ingest import ingest

    start = time.perf_counter()
    summaries = ingest(params.ingest, out, executor=executor)
    seconds = time.perf_counter() - start
    clips = sum(s.clips_listed for s in summaries.values())
    frames = sum(s.frames_decoded for s in summaries.values())
    print(f"ingest  {label:<24} {seconds:7.1f} s  {clips / seconds:6.2f} clips/s  ({clips} clips, "
          f"{frames / seconds:.0f} frames/s)", flush=True)
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


def timed_finetuning(params, finetune, root: Path, name: str, executor, label: str) -> list[dict]:
    """LOSO over `finetune`'s variants and seeds (then the final model); prints the wall times."""
    from mer_core.data.store import CLIPS_DIR
    from mer_core.training.finetune import FinetuneFiles, model_inputs, run_finetuning

    files = FinetuneFiles(params.paths.processed / CLIPS_DIR, params.paths.features, params.paths.encoders,
                          root / name / "checkpoints", root / name / "final.pt")
    micro = [d.name for d in params.ingest.datasets if d.kind == "micro"]
    start = time.perf_counter()
    rows, report = run_finetuning(finetune, files, micro, model_inputs(params), executor)
    seconds = time.perf_counter() - start
    loso = seconds - report["final_model"]["seconds"]
    # The runs' own times, summed: against the LOSO wall time × workers, how well they were packed.
    print(f"finetune {label:<23} {seconds:7.1f} s  (LOSO jobs {loso:.1f} s, final model "
          f"{report['final_model']['seconds']:.1f} s; {len(report['seconds'])} (variant, seed) runs of "
          f"{report['subjects']} folds, {sum(report['seconds'].values()):.0f} s of run time summed)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--workers", type=int, default=2, help="processes of the pool; Dask workers of the second run")
    parser.add_argument("--micro-subjects", type=int, default=8)
    parser.add_argument("--macro-subjects", type=int, default=8)
    parser.add_argument("--variants", nargs="+", default=["scratch_e2e", "scratch_probe", "difference_lr",
                                                          "flow_strain_lr"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each, interleaved (a shared machine is noisy)")
    args = parser.parse_args()

    from bench_data import redirect_paths  # beside this file
    from distributed import LocalCluster

    from mer_core.config import ExecutorParams, Params, apply_profile
    from mer_core.data import anonymize as anon
    from mer_core.data.motion import write_motion_features
    from mer_core.data.store import CLIPS_DIR

    print(f"{os.cpu_count()} cores; figures are wall times on this machine as it is (shared or not)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        raw = apply_profile(yaml.safe_load(args.params.read_text()), args.params)
        params = Params.model_validate(redirect_paths(raw, root))
        params = params.model_copy(update={"ingest": params.ingest.model_copy(update={"workers": args.workers})})
        build_sources(params, args.micro_subjects, args.macro_subjects, args.workers)

        outputs = []
        for _ in range(args.repeats):  # interleaved, so that a busy spell hits every executor alike
            outputs.append(timed_ingest(params, root / "ingest_pool", ExecutorParams(),
                                        f"process pool ({args.workers})"))
            for n_workers in sorted({1, args.workers}):
                with LocalCluster(n_workers=n_workers, processes=True, threads_per_worker=1, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
                    on_dask = ExecutorParams(kind="dask", address=cluster.scheduler_address)
                    outputs.append(timed_ingest(params, root / f"ingest_dask{n_workers}", on_dask,
                                                f"Dask, {n_workers} worker(s)"))
        print("ingest outputs byte-identical:", all(files == outputs[0] for files in outputs), flush=True)

        # The rest of the pipeline up to finetune, once, on the process pool's output.
        os.replace(root / "ingest_pool", params.paths.interim)
        key = anon.PseudonymKey(os.urandom(32), "env")
        anon.anonymize(params.paths.interim / CLIPS_DIR, params.paths.processed / CLIPS_DIR, key, True, args.workers)
        micro = [d.name for d in params.ingest.datasets if d.kind == "micro"]
        write_motion_features(params.paths.processed / CLIPS_DIR, params.paths.features, micro, params.features.flow,
                              params.features.magnification)

        finetune = params.finetune.model_copy(update={
            "variant": args.variants[0], "ablation": args.variants, "au_variants": [], "seeds": args.seeds,
            "epochs": args.epochs, "workers": args.workers})
        predictions = []
        for repeat in range(args.repeats):  # each run with its own checkpoints: none reuses another's
            predictions.append(timed_finetuning(params, finetune, root, f"pool{repeat}", ExecutorParams(),
                                                f"process pool ({args.workers})"))
            with LocalCluster(n_workers=args.workers, processes=True, threads_per_worker=1, host="127.0.0.1",
                              dashboard_address=None) as cluster:
                predictions.append(timed_finetuning(params, finetune, root, f"dask{repeat}",
                                                    ExecutorParams(kind="dask", address=cluster.scheduler_address),
                                                    f"Dask, {args.workers} worker(s)"))
        print("LOSO predictions equal:", all(rows == predictions[0] for rows in predictions), flush=True)


if __name__ == "__main__":
    main()
