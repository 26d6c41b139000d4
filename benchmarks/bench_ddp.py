"""DDP figures: the loss of N torchrun processes against 1 process with the N-times batch, and how long each takes.

Reads the processed macro clips `make run` wrote (params.yaml's paths), keeps a multiple of
the global batch and rewrites them with one rank batch per Parquet row group, so that step
s of N processes reads exactly the clips step s of one process reads (see
tests/model/test_ddp.py for why the losses can then agree to rounding). Then pre-trains one
variant three ways from scratch: 1 process with 1 thread, 1 process with N threads, and N
processes with 1 thread each under `torchrun --standalone` (gloo on the CPU). Prints the
per-epoch losses side by side, their largest relative difference, and per run the wall time
(process start to exit) and the training time (the epochs alone). Usage:

    python benchmarks/bench_ddp.py [--params params.yaml] [--processed data/processed] [--nproc 2] [--epochs 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def regrouped_clips(params_file: Path, processed: Path | None, out: Path, global_batch: int, nproc: int) -> int:
    """The macro clips of params' first macro data set under `processed` (params' own by
    default), cut to a multiple of `global_batch`, one rank batch per row group, written to
    `out`; returns how many."""
    import pyarrow.compute as pc

    from mer_core.config import load_params
    from mer_core.data.store import CLIPS_DIR, read_clips, write_table

    p = load_params(params_file)
    processed = processed or params_file.resolve().parent / p.paths.processed
    names = [d.name for d in p.ingest.datasets if d.kind in ("macro", "long")]
    table = read_clips(processed / CLIPS_DIR / names[0])
    table = table.filter(pc.equal(table.column("kind"), "macro"))
    kept = len(table) // global_batch * global_batch
    write_table(table.slice(0, kept), out / "part-00000.parquet", global_batch // nproc)
    return kept


def train(settings_json: str, clips: Path, checkpoints: Path, report: Path) -> None:
    """One training process (rank 0 writes `report`): the loss history and the training seconds."""
    import torch

    from mer_core.config import PretrainParams
    from mer_core.training import distributed
    from mer_core.training.pretrain import pretrain_variant

    settings = json.loads(settings_json)
    threads = settings.pop("threads")
    torch.set_num_threads(threads)
    variant = settings.pop("variant")
    params = PretrainParams(**settings)
    ranks = distributed.ranks_from_environment()
    with distributed.process_group(ranks, torch.device("cpu")):
        _, result = pretrain_variant(params, variant, [clips], 64, "bench-ddp", checkpoints, ranks=ranks)
    if ranks.is_main:
        report.write_text(json.dumps({"history": result.history, "train_s": sum(h["seconds"] for h in result.history),
                                      "world_size": result.world_size}))


def timed_run(command: list[str], report: Path) -> dict:
    started = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "MER_LOG_LEVEL": "WARNING"})
    return {**json.loads(report.read_text()), "wall_s": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--processed", type=Path, help="the processed data folder (default: params' paths.processed)")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--variant", default="ma2mi")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--train", nargs=4, metavar=("SETTINGS", "CLIPS", "CHECKPOINTS", "REPORT"),
                        help=argparse.SUPPRESS)  # one training process, as this script starts it
    args = parser.parse_args()
    if args.train:
        train(args.train[0], *map(Path, args.train[1:]))
        return

    pretrain = yaml.safe_load(args.params.read_text())["pretrain"]
    with tempfile.TemporaryDirectory(prefix="mer-bench-ddp-") as tmp:
        root = Path(tmp)
        clips = regrouped_clips(args.params, args.processed, root / "clips", pretrain["batch_size"], args.nproc)
        base = {key: pretrain[key] for key in pretrain if key not in ("variants", "nproc_per_node")}
        base.update(epochs=args.epochs, device="cpu", variant=args.variant)
        print(f"{clips} macro clips, global batch {pretrain['batch_size']}, {args.epochs} epochs of {args.variant}, "
              f"encoder {pretrain['encoder']}", flush=True)
        runs = {}
        for name, nproc, threads in (("1 process, 1 thread", 1, 1), (f"1 process, {args.nproc} threads", 1,
                                     args.nproc), (f"{args.nproc} processes, 1 thread each", args.nproc, 1)):
            folder = root / name.replace(" ", "_").replace(",", "")
            settings = json.dumps({**base, "threads": threads})
            train_args = [str(Path(__file__).resolve()), "--train", settings, str(root / "clips"),
                          str(folder / "checkpoints"), str(folder / "report.json")]
            folder.mkdir()
            launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
                        if nproc > 1 else [sys.executable])
            runs[name] = timed_run([*launcher, *train_args], folder / "report.json")
            print(f"{name}: wall {runs[name]['wall_s']} s, training {runs[name]['train_s']:.1f} s, losses "
                  f"{[h['loss'] for h in runs[name]['history']]}", flush=True)
    one, many = runs["1 process, 1 thread"], runs[f"{args.nproc} processes, 1 thread each"]
    worst = max(abs(a["loss"] - b["loss"]) / abs(b["loss"]) for a, b in zip(many["history"], one["history"]))
    print(f"largest relative difference of an epoch loss, {args.nproc} processes vs 1: {worst:.2e}")
    if args.json:
        args.json.write_text(json.dumps({"clips": clips, "runs": runs, "max_relative_loss_difference": worst},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
