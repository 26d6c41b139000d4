"""Face front-end figures (issue 15), on the default profile:

- detection rate on every frame ingest samples from the synthetic set (micro clips' frames,
  macro windows' frames): dlib HOG against the Haar cascade, one face expected;
- landmark error on rendered faces: dlib's 68 points against where the renderer drew brows,
  eyes, nose and lips, divided by the inter-ocular distance, per region;
- eye-centre jitter of the public-domain portrait under head motion, after alignment, in
  crop pixels (landmarks alone, and with ECC stabilisation);
- `mer predict`'s real-time factor on a 640×360 clip (video seconds ÷ wall seconds), as a
  user runs it (a new process, start-up included) and once the models are loaded.

Usage: python benchmarks/bench_faces.py [--params params.yaml] [--faces 120] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests/ holds the portrait and its animation

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
REGIONS = {"brows": range(17, 27), "eyes": range(36, 48), "nose": range(30, 36), "mouth": range(48, 68)}


def sampled_frames(params):
    """Every frame ingest samples from params' data sets, one at a time (BGR)."""
    from mer_core.data.adapters import read_dataset
    from mer_core.data.video import VideoReader, macro_windows, read_image_sequence

    ingest = params.ingest
    for source in ingest.datasets:
        listing = read_dataset(source.adapter, source.name, source.root, annotation=source.annotation, fps=source.fps, frames_per_clip=ingest.frames_per_clip,
                               labels=source.labels)
        for clip in listing.clips:
            if clip.video is None:
                yield from read_image_sequence([path for _, path in clip.frames])
                continue
            with VideoReader(clip.video) as reader:
                frames = dict(reader.frames())
            for window in macro_windows(len(frames), ingest.frames_per_clip, ingest.window_stride,
                                        ingest.windows_per_video, clip.onset, clip.offset):
                yield from (frames[n] for n in window)


def detection_rates(params) -> None:
    from mer_core.data.faces import face_finder

    finders = {name: face_finder(name, params.ingest.landmark_model, params.ingest.min_face_px) for name in ("hog", "haar")}
    found = {name: 0 for name in finders}
    seconds = {name: 0.0 for name in finders}
    total = 0
    for frame in sampled_frames(params):
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        total += 1
        for name, finder in finders.items():
            start = time.perf_counter()
            found[name] += len(finder.detect(grey)) == 1
            seconds[name] += time.perf_counter() - start
    for name in finders:
        print(f"detection {name:4s}  one face on {found[name]} of {total} sampled frames "
              f"({100 * found[name] / total:.1f} %), {1000 * seconds[name] / total:.1f} ms a frame", flush=True)


def landmark_error(faces: int, image_size: int) -> None:
    """Mean landmark error / inter-ocular distance on rendered faces, half neutral, half with random AUs."""
    from mer_core.data.faces import face_finder
    from mer_core.data.synthetic import ACTION_UNITS, FaceRenderer, sample_identity

    finder = face_finder("hog", "dlib68", 48)
    errors, overall, signed, missed = {k: [] for k in REGIONS}, [], [], 0
    for seed in range(faces):
        rng = np.random.default_rng(10_000 + seed)
        renderer = FaceRenderer(sample_identity(rng), image_size)
        au = np.zeros((len(ACTION_UNITS), 2))
        if seed % 2:
            au = rng.uniform(0, 1, au.shape) * (rng.uniform(0, 1, (len(ACTION_UNITS), 1)) < 0.2)
        truth = renderer.landmarks(au)
        try:
            found = finder.find(renderer.render(au), 0).landmarks
        except Exception:  # noqa: BLE001 - a miss is counted, not fatal
            missed += 1
            continue
        distance = np.linalg.norm(truth[42:48].mean(0) - truth[36:42].mean(0))
        error = np.linalg.norm(found - truth, axis=1) / distance
        for region, ids in REGIONS.items():
            errors[region].append(np.mean(error[list(ids)]))
        overall.append(np.nanmean(error))
        signed.append((found - truth) / distance)
    signed = np.stack(signed)  # (faces, 68, 2)
    print(f"landmarks  {faces - missed} of {faces} rendered faces ({image_size} px): mean error / eye distance "
          f"{np.mean(overall):.3f}")
    for region, ids in REGIONS.items():
        dx, dy = signed[:, list(ids)].mean((0, 1))
        print(f"  {region:6s} {np.mean(errors[region]):.3f}  (mean offset x {dx:+.3f}, y {dy:+.3f})")


def portrait_jitter(crop_size: int, margin: float) -> None:
    from mer_core.data.faces import CropSettings, face_finder, transform
    from tests.data.test_real_face import PORTRAIT, animated_frames, eye_jitter, head_motion

    portrait = cv2.imread(str(PORTRAIT))
    eyes = np.stack(face_finder("hog", "dlib68", 48).find(portrait, 0).eye_centres("dlib68"))
    height, width = portrait.shape[:2]
    frames = animated_frames(portrait, seconds=4.0)
    for stabilize in (False, True):
        settings = CropSettings(crop_size, 8, 1, 1, margin, 48, stabilize=stabilize)
        jitters = []
        for start in range(0, len(frames) - 16, 12):  # clips of 8 frames, 2 apart (80 ms), over 4 s
            numbers = list(range(start, start + 16, 2))
            truth = [transform(head_motion(n / 25, width, height), eyes) for n in numbers]
            jitters.append(eye_jitter([frames[n] for n in numbers], truth, settings))
        print(f"portrait jitter ({'landmarks + ECC' if stabilize else 'landmarks alone'}): largest eye-centre "
              f"deviation {np.mean(jitters):.2f} px mean, {np.max(jitters):.2f} px worst over {len(jitters)} clips "
              f"at {crop_size} px")


def predict_video_640(path: Path, seconds: float) -> Path:
    """The portrait moving its head inside a 640×360 frame at 25 fps."""
    from mer_core.data.synthetic import write_video
    from tests.data.test_real_face import PORTRAIT, animated_frames

    portrait = cv2.imread(str(PORTRAIT))
    canvas = cv2.resize(cv2.GaussianBlur(portrait, (0, 0), 15), (640, 360))
    canvas[20:340, 160:480] = portrait
    write_video(path, animated_frames(canvas, seconds=seconds), 25.0, "MJPG")
    return path


def untrained_final_model(params, path: Path) -> Path:
    """A final model of the default architecture with random weights: the time is the same."""
    import torch

    from mer_core.models.miacnet import build_miacnet

    classes = ["disgust", "happiness", "others", "repression", "surprise"]
    model = build_miacnet(params.pretrain.encoder, len(classes), img_size=params.ingest.crop_size,
                          position_branch=params.finetune.position_branch, action_input=params.pretrain.action_input)
    torch.save({"encoder": params.pretrain.encoder, "variant": params.finetune.variant, "classes": classes,
                "img_size": params.ingest.crop_size, "label_column": "label", "state_dict": model.state_dict(),
                "position_branch": params.finetune.position_branch, "action_input": params.pretrain.action_input,
                "motion": {"flow": params.features.flow, "magnification": params.features.magnification}}, path)
    return path


def predict_speed(params, params_file: Path, tmp: Path, seconds: float) -> None:
    from mer_core import inference
    from mer_core.data.faces import CropSettings

    video = predict_video_640(tmp / "person_640x360.avi", seconds)
    model = untrained_final_model(params, tmp / "final.pt")
    mer = Path(sys.executable).with_name("mer")
    start, cpu = time.perf_counter(), _children_cpu()
    run = subprocess.run([str(mer), "predict", str(video), "--model", str(model), "--params", str(params_file),
                          "--output", str(tmp / "predict.json")], capture_output=True, text=True, check=False)
    wall, wall_cpu = time.perf_counter() - start, _children_cpu() - cpu
    if run.returncode != 0:
        raise SystemExit(f"mer predict failed: {run.stderr[-2000:]}")
    crop = CropSettings.from_params(params.ingest)
    predictor = inference.predictor_from_file(model, crop, inference.mask_margin(crop.face_margin, True))
    inference.predict_video(video, predictor, given=(0, 4, 8))  # load the face models
    start, cpu = time.perf_counter(), time.process_time()
    result = inference.predict_video(video, predictor)
    steady, steady_cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"mer predict on {seconds:.0f} s of 640×360 video at 25 fps ({len(result.windows)} windows, "
          f"{len(result.rejected)} rejected), load average {os.getloadavg()[0]:.1f}:\n"
          f"  as a new process: {wall:.1f} s wall ({wall_cpu:.1f} s CPU), real-time factor {seconds / wall:.2f}×\n"
          f"  models loaded:    {steady:.1f} s wall ({steady_cpu:.1f} s CPU), real-time factor {seconds / steady:.2f}× "
          f"({seconds / steady_cpu:.2f}× per CPU second)\n"
          f"  start-up ≈ {wall - steady:.1f} s wall, {wall_cpu - steady_cpu:.1f} s CPU (imports, the face models)",
          flush=True)


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--faces", type=int, default=120, help="rendered faces for the landmark error")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the 640×360 clip for mer predict")
    parser.add_argument("--skip-detection", action="store_true", help="leave out the synthetic set's detection rate")
    args = parser.parse_args()

    from bench_data import redirect_paths  # beside this file
    from mer_core.config import Params, apply_profile
    from mer_core.data.synthetic import synthesize

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw = redirect_paths(apply_profile(yaml.safe_load(args.params.read_text()), args.params), tmp)
        params = Params.model_validate(raw)
        params_file = tmp / "params.yaml"
        params_file.write_text(yaml.safe_dump(raw))
        landmark_error(args.faces, params.synthesize.image_size)
        portrait_jitter(params.ingest.crop_size, params.ingest.face_margin)
        predict_speed(params, params_file, tmp, args.seconds)
        if not args.skip_detection:
            synthesize(params.synthesize, params.paths.synthetic, workers=2)
            detection_rates(params)


if __name__ == "__main__":
    main()
