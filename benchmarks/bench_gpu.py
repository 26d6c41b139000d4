"""GPU figures for the `gpu` profile: pre-training clips/s, model FLOP utilisation, peak
GPU memory, data wait, and a short CUDA fine-tuning run (`make gpu-check`).

Builds a macro set with the project's own generator (scaled by --macro-subjects), ingests
and anonymizes it with the gpu profile's sizes (ViT-S/16 at 112 px, 16-frame windows,
Parquet row groups streamed by DataLoader workers into pinned memory), then pre-trains
each variant for --epochs with bf16 autocast, compiled and (with --eager-too) eager, and
fine-tunes MIACNet under LOSO on the micro clips (one seed). Prints one line per run:

    python benchmarks/bench_gpu.py --macro-subjects 48 --epochs 4 --eager-too --json out.json

Throughput is read from the epochs after the first (which carries torch.compile's
warm-up); "data wait" is the share of those epochs spent waiting for the next batch.
MFU is the training FLOPs per clip (counted by torch's FlopCounterMode over one eager
forward and backward: matmuls and convolutions) times clips/s, over the GPU's dense bf16
peak (a table of common cards, or --peak-tflops).
Sized to fit a 15-minute GPU lease: data in about a minute on 16 cores, the whole check in
under 8 minutes on an H100 (measure it again when the profile changes).
Without CUDA it says so and exits 0; --allow-cpu runs it anyway (with --encoder and
--crop-size small, as a smoke test of this script).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
import yaml
from bench_data import build_data, redirect_paths

from mer_core.config import Params, apply_profile


def _params(args: argparse.Namespace, root: Path) -> Params:
    raw = yaml.safe_load(args.params.read_text())
    raw["profile"] = args.profile
    raw = apply_profile(raw, args.params)
    raw["synthesize"]["macro"].update(subjects=args.macro_subjects, clips_per_subject=args.clips_per_subject)
    if args.crop_size:
        raw["ingest"]["crop_size"] = args.crop_size
    if args.encoder:
        raw["pretrain"]["encoder"] = args.encoder
    return Params.model_validate(redirect_paths(raw, root))


def _build_data(params: Params, workers: int) -> dict:
    timings, _, summaries, _ = build_data(params, workers)
    return {**{f"{stage}_s": round(seconds, 1) for stage, seconds in timings.items()},
            "clips": {name: s.rows for name, s in summaries.items()},
            "frames_decoded": sum(s.frames_decoded for s in summaries.values())}


def _steady_state(history: list[dict], clips: int) -> dict:
    """Throughput and data wait over the epochs after the first (all of them if only one)."""
    later = history[1:] or history
    seconds = sum(e["seconds"] for e in later)
    return {"clips_per_second": round(clips * len(later) / seconds, 1),
            "data_wait_fraction": round(sum(e["data_wait_s"] for e in later) / seconds, 4),
            "first_epoch_s": history[0]["seconds"], "epoch_s": round(seconds / len(later), 2)}


# Dense bf16 tensor-core peaks (no sparsity), TFLOP/s, from the vendors' data sheets; the
# first name contained in torch.cuda.get_device_name() wins, so longer names come first.
BF16_PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.4, "H200": 989.4, "GH200": 989.4,
                    "B200": 2250.0, "A100": 312.0, "A10G": 70.0, "A10": 125.0, "L40S": 362.0, "L4": 121.0}


def bf16_peak_tflops(device_name: str) -> float | None:
    return next((peak for name, peak in BF16_PEAK_TFLOPS.items() if name in device_name), None)


def training_flops_per_clip(params: Params, variant: str, batch_size: int = 8) -> float:
    """FLOPs of one training step (forward and backward, eager) per clip, on a real batch."""
    from torch.utils.data import DataLoader
    from torch.utils.flop_counter import FlopCounterMode

    from mer_core.data.store import CLIPS_DIR
    from mer_core.data.training_sets import MacroClipStream, MacroFramePairs
    from mer_core.models.encoders import reads_motion
    from mer_core.training import engine
    from mer_core.training.pretrain import Pretrainer

    settings = params.pretrain
    macro = [params.paths.processed / CLIPS_DIR / d.name for d in params.ingest.datasets if d.kind == "macro"]
    flow = params.features.flow if reads_motion(settings.action_input) else None
    scale = None if settings.micro_scale is None else (settings.micro_scale.low, settings.micro_scale.high)
    pairs = MacroFramePairs(MacroClipStream(macro, seed=0), settings.max_step, flow, 0, scale,
                            settings.micro_noise, flow_target=settings.target == "flow")
    batch = next(iter(DataLoader(pairs, batch_size=batch_size)))
    device = engine.select_device(settings.device)
    model = Pretrainer(variant, settings, params.ingest.crop_size).to(device)
    generator = engine.seed_everything(0)
    with FlopCounterMode(display=False) as counter:
        with engine.autocast(device):
            loss = model({k: v.to(device) for k, v in batch.items()}, generator)["loss"]
        loss.backward()
    return counter.get_total_flops() / len(next(iter(batch.values())))


def _pretrain(params: Params, variant: str, compile_: bool, epochs: int, work: Path) -> tuple[dict, dict]:
    from mer_core.data.store import CLIPS_DIR
    from mer_core.training.pretrain import pretrain_variant

    macro = [params.paths.processed / CLIPS_DIR / d.name for d in params.ingest.datasets if d.kind == "macro"]
    settings = params.pretrain.model_copy(update={
        "epochs": epochs, "compile": compile_, "warmup_epochs": min(params.pretrain.warmup_epochs, epochs - 1)})
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    state, result = pretrain_variant(settings, variant, macro, params.ingest.crop_size, "bench",
                                     work / f"ck-{variant}-{'compiled' if compile_ else 'eager'}", params.features.flow)
    figures = {"variant": variant, "compiled": compile_, "encoder": settings.encoder, "clips": result.clips,
               "batch_size": settings.batch_size, "loader_workers": settings.loader_workers, "epochs": epochs,
               "peak_gpu_memory_mib": result.peak_gpu_memory_mib, "final_loss": result.history[-1]["loss"],
               **_steady_state(result.history, result.clips)}
    return state, figures


def _finetune(params: Params, variant: str, state: dict, work: Path) -> dict:
    from mer_core.data.motion import write_motion_features
    from mer_core.data.store import CLIPS_DIR
    from mer_core.evaluation.report import ablation_report
    from mer_core.training.checkpoint import save_encoder
    from mer_core.training.finetune import FinetuneFiles, model_inputs, run_finetuning

    save_encoder(work / "encoders" / f"{variant}.pt", state, params.pretrain.encoder, variant,
                 params.pretrain.action_input)
    learned = f"{variant}_e2e"
    settings = params.finetune.model_copy(update={"variant": learned, "ablation": [learned], "seeds": [0]})
    clips = params.paths.processed / CLIPS_DIR
    files = FinetuneFiles(clips, work / "features", work / "encoders", work / "ck-finetune", work / "final.pt")
    micro = [d.name for d in params.ingest.datasets if d.kind == "micro"]
    inputs = model_inputs(params)
    if inputs.reads_motion:
        write_motion_features(clips, files.features, micro, inputs.flow, inputs.magnification)
    started = time.perf_counter()
    rows, report = run_finetuning(settings, files, micro, inputs)
    seconds = time.perf_counter() - started
    scores = ablation_report(rows, [learned])["variants"][learned]
    return {"variant": learned, "device": report["device"], "clips": report["clips"], "subjects": report["subjects"],
            "loso_s": report["seconds"][f"{learned}/seed0"], "final_model_s": report["final_model"]["seconds"],
            "total_s": round(seconds, 1), "uf1": scores["uf1"], "uar": scores["uar"]}


def _add_utilisation(figures: dict, flops_per_clip: float, peak_tflops: float | None) -> None:
    achieved = flops_per_clip * figures["clips_per_second"] / 1e12
    figures["train_gflops_per_clip"] = round(flops_per_clip / 1e9, 2)
    figures["achieved_tflops"] = round(achieved, 2)
    figures["mfu"] = None if peak_tflops is None else round(achieved / peak_tflops, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--profile", default="gpu")
    parser.add_argument("--macro-subjects", type=int, default=48)
    parser.add_argument("--clips-per-subject", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--variants", nargs="+", default=["ma2mi", "both"])
    parser.add_argument("--eager-too", action="store_true", help="also time the first variant without compile")
    parser.add_argument("--no-finetune", action="store_true")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="synthesize/ingest processes")
    parser.add_argument("--encoder", help="override the profile's encoder (smoke tests)")
    parser.add_argument("--crop-size", type=int, help="override the profile's crop size (smoke tests)")
    parser.add_argument("--allow-cpu", action="store_true")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, if the table lacks it")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("no CUDA device: nothing to measure (pass --allow-cpu for a smoke run)")
        return
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    results: dict = {"device": device, "torch": torch.__version__, "pretrain": [], "finetune": None}
    with tempfile.TemporaryDirectory(prefix="mer-bench-gpu-") as tmp:
        root = Path(tmp)
        params = _params(args, root)
        results["data"] = _build_data(params, args.workers)
        print(f"device {device}, torch {torch.__version__}; data {results['data']}", flush=True)
        runs = [(v, True) for v in args.variants] + ([(args.variants[0], False)] if args.eager_too else [])
        peak = args.peak_tflops or bf16_peak_tflops(device)
        results["bf16_peak_tflops"] = peak
        states, flops = {}, {}
        for variant, compile_ in runs:
            state, figures = _pretrain(params, variant, compile_, args.epochs, root)
            states.setdefault(variant, state)
            if variant not in flops:
                flops[variant] = training_flops_per_clip(params, variant)
            _add_utilisation(figures, flops[variant], peak)
            results["pretrain"].append(figures)
            mfu = "n/a (unknown peak)" if figures["mfu"] is None else f"{figures['mfu']:.1%}"
            print(f"pretrain {variant:12s} {'compiled' if compile_ else 'eager':8s} {figures['clips_per_second']:9.1f} "
                  f"clips/s  epoch {figures['epoch_s']:6.2f} s (first {figures['first_epoch_s']:.1f} s)  data wait "
                  f"{figures['data_wait_fraction']:.1%}  {figures['achieved_tflops']} TFLOP/s, MFU {mfu}  "
                  f"peak GPU {figures['peak_gpu_memory_mib']} MiB  loss {figures['final_loss']:.4f}", flush=True)
        if not args.no_finetune:
            variant = args.variants[0]
            results["finetune"] = _finetune(params, variant, states[variant], root)
            f = results["finetune"]
            print(f"finetune {variant} on {f['device']}: LOSO {f['subjects']} folds, {f['clips']} clips in "
                  f"{f['loso_s']} s, final model {f['final_model_s']} s; UF1 {f['uf1']:.3f} UAR {f['uar']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
