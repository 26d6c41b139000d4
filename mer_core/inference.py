"""Prediction with a trained MIACNet: aligned clips → class probabilities (and action-unit
probabilities, when the final model carries the AU task's readout), and a whole video →
per-window probabilities (`mer predict`).

A video is aligned exactly as `ingest` aligns training clips (mer_core/data/faces.py:
detect, landmarks tracked frame to frame, alignment on the eye centres, stabilize) and
masked as `anonymize` masks them, so the model sees what it was trained on. The face is
tracked once through the stream and each frame's landmarks serve every window it is in.
Frames are decoded once, in order, and only one window's span is held in memory, so a
long video costs time, not memory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mer_core.data.faces import (
    AlignedClip,
    CropSettings,
    NoFaceError,
    TrackedFrame,
    align_faces,
    align_window,
    canonical_face_mask,
    mask_outside_face,
    track_stream,
)
from mer_core.data.action_units import unit_names
from mer_core.data.motion import onset_motion
from mer_core.data.video import FrameReadError, VideoReader, micro_frame_numbers, read_video_frames
from mer_core.models.classical import AUReadout, flow_strain_vector
from mer_core.models.miacnet import MIACNet, build_miacnet
from mer_core.training.checkpoint import CheckpointError, read_checkpoint

_BATCH = 64
_AU_FEATURES = len(flow_strain_vector(np.zeros((16, 16, 3), np.float32)))  # what the AU readout reads
# The motion settings of a final model that did not record them (it read no flow).
DEFAULT_MOTION = {"flow": "farneback", "magnification": 0.0}
FINAL_MODEL_KEYS = ("encoder", "variant", "classes", "img_size", "label_column", "state_dict")


def load_final_model(path: Path) -> tuple[MIACNet, dict]:
    """The final model `finetune` saved, in eval mode on CPU, and its metadata
    (classes, encoder, variant, img_size, label_column)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist; run `dvc repro finetune` first")
    state = read_checkpoint(path, required=FINAL_MODEL_KEYS)
    try:
        model = build_miacnet(state["encoder"], len(state["classes"]), img_size=int(state["img_size"]),
                              position_branch=bool(state.get("position_branch", True)),
                              action_input=state.get("action_input", "difference"))
        model.load_state_dict(state["state_dict"])
    except (ValueError, RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise CheckpointError(f"{path}: its weights do not fit a {state['encoder']} MIACNet ({first})") from None
    meta = {k: state[k] for k in ("classes", "encoder", "variant", "img_size", "label_column")}
    # How the motion the action branch reads was made (the features stage's settings).
    meta["motion"] = state.get("motion", DEFAULT_MOTION)
    meta["action_input"] = state.get("action_input", "difference")
    meta["subjects"] = state.get("subjects")  # dataset-qualified pseudonyms; None in older files
    meta["action_units"] = _au_readout(path, state.get("action_units"))
    return model.eval(), meta


def _au_readout(path: Path, state: dict | None) -> AUReadout | None:
    """The AU readout a final model carries (None in files without one)."""
    if state is None:
        return None
    try:
        readout = AUReadout.from_state(state)
        ok = readout.weights.shape == (len(readout.units), _AU_FEATURES) and readout.bias.shape == (len(readout.units),)
    except (KeyError, TypeError, AttributeError, ValueError):
        ok = False
    if not ok:
        raise CheckpointError(f"{path}: its action-unit readout is malformed")
    return readout


def _masked(clips: np.ndarray, mask_margin: float | None) -> np.ndarray:
    if clips.ndim != 5 or clips.shape[-1] != 3:
        raise ValueError(f"expected clips of shape (N, T, H, W, 3), got {clips.shape}")
    if mask_margin is None:
        return clips
    return clips * canonical_face_mask(clips.shape[2], mask_margin)[None, None, :, :, None]


def _onset_apex_motion(clips: np.ndarray, motion: dict | None) -> np.ndarray:
    """(N, H, W, 3) onset→apex (u, v, strain) of masked clips, estimated as the features stage did."""
    settings = {**DEFAULT_MOTION, **(motion or {})}
    return np.stack([onset_motion(clip, clips.shape[1] // 2, settings["flow"], settings["magnification"])
                     for clip in clips])


@torch.no_grad()
def class_probabilities(model: MIACNet, clips: np.ndarray, mask_margin: float | None = None,
                        motion: dict | None = None) -> np.ndarray:
    """(N, T, H, W, 3) uint8 RGB aligned clips, apex at T // 2 → (N, K) probabilities.

    `mask_margin` blanks everything outside where alignment puts a face (for clips not
    already masked outside their landmarks, as `anonymize` masks training clips). A model whose action branch reads flow gets the
    onset→apex motion, estimated here as the features stage did (`motion`: the final
    model's `{"flow", "magnification"}`).
    """
    clips = _masked(clips, mask_margin)
    onset = torch.from_numpy(np.ascontiguousarray(clips[:, 0]))
    apex = torch.from_numpy(np.ascontiguousarray(clips[:, clips.shape[1] // 2]))
    flows = None
    if model.reads_motion:
        flows = torch.from_numpy(_onset_apex_motion(clips, motion).transpose(0, 3, 1, 2).copy())
    parts = [torch.softmax(model(onset[i:i + _BATCH], apex[i:i + _BATCH],
                                 None if flows is None else flows[i:i + _BATCH]).float(), dim=-1)
             for i in range(0, len(clips), _BATCH)]
    return torch.cat(parts).numpy().astype(np.float64)


def au_probabilities(readout: AUReadout, clips: np.ndarray, mask_margin: float | None = None,
                     motion: dict | None = None) -> np.ndarray:
    """Aligned clips as `class_probabilities` takes them → (N, U) probabilities of the
    readout's action units, from their onset→apex flow and strain."""
    fields = _onset_apex_motion(_masked(clips, mask_margin), motion)
    return readout.probabilities(np.stack([flow_strain_vector(motion_field) for motion_field in fields]))


@dataclass(frozen=True)
class ClipPredictor:
    """What `predict_video` needs from a model, wherever it was loaded from."""

    name: str
    classes: list[str]
    frames_per_clip: int
    crop: CropSettings
    predict: Callable[[np.ndarray], np.ndarray]  # aligned clips → (N, K) probabilities
    masked: bool = False  # trained on clips masked outside their landmarks: mask windows alike
    trained_on: str = "training data not recorded with this model"  # for the reader of a prediction
    action_units: list[str] | None = None  # `AU<n>` names, when the model gives AU probabilities
    predict_action_units: Callable[[np.ndarray], np.ndarray] | None = None  # aligned clips → (N, U)


def training_note(datasets: list[tuple[str, Path]], synthetic_root: Path) -> str:
    """What a prediction's reader must know of the model's training data (`datasets`: the
    micro data sets' names and roots): a model of the embedded synthetic faces says so."""
    synthetic_root = Path(synthetic_root).resolve()
    if datasets and all(Path(root).resolve().is_relative_to(synthetic_root) for _, root in datasets):
        return ("trained on the embedded synthetic faces only, to show the pipeline works: its classes say "
                "nothing reliable about real faces")
    return f"trained on {', '.join(name for name, _ in datasets)}"


def mask_margin(face_margin: float, masked: bool) -> float | None:
    """The face margin to mask clips with at prediction, as `anonymize` masked the training
    clips (`anonymize.mask_outside_face`); None when it did not mask."""
    return face_margin if masked else None


def serving_config(crop: CropSettings, masked: bool, trained_on: str | None = None) -> dict:
    """What a registered model needs to align and mask a video as its training clips were,
    and what to tell its users (`training_note`): its pyfunc `model_config`, read back by
    `predictor_from_config`."""
    return {"mask_margin": mask_margin(crop.face_margin, masked), "crop_size": crop.crop_size,
            "frames_per_clip": crop.frames_per_clip, "face_margin": crop.face_margin,
            "min_face_px": crop.min_face_px, "stabilize": crop.stabilize, "face_detector": crop.face_detector,
            "landmark_model": crop.landmark_model, "alignment": crop.alignment,
            **({"trained_on": trained_on} if trained_on else {})}


def predictor_from_file(path: Path, crop: CropSettings, mask_margin: float | None,
                        trained_on: str | None = None) -> ClipPredictor:
    """A predictor over a `final.pt` written by `finetune`."""
    model, meta = load_final_model(path)
    if meta["img_size"] != crop.crop_size:
        raise ValueError(f"{path} was trained on {meta['img_size']} px crops, ingest.crop_size is {crop.crop_size}")
    return ClipPredictor(Path(path).name, meta["classes"], crop.frames_per_clip, crop,
                         lambda clips: class_probabilities(model, clips, mask_margin, meta["motion"]),
                         masked=mask_margin is not None, **({"trained_on": trained_on} if trained_on else {}),
                         **au_outputs(meta, mask_margin))


def au_outputs(meta: dict, mask_margin: float | None) -> dict:
    """ClipPredictor's AU fields for a final model's metadata: none when it has no AU readout."""
    readout = meta.get("action_units")
    if readout is None:
        return {}
    return {"action_units": unit_names(readout.units),
            "predict_action_units": lambda clips: au_probabilities(readout, clips, mask_margin, meta["motion"])}


def predictor_from_config(name: str, classes: list[str], config: dict,
                          predict: Callable[[np.ndarray], np.ndarray], **action_units) -> ClipPredictor:
    """A predictor whose alignment settings come from a registered model's `serving_config`."""
    # A model registered before the landmark front end was trained on Haar boxes.
    crop = CropSettings(crop_size=config["crop_size"], frames_per_clip=config["frames_per_clip"], window_stride=1,
                        windows_per_video=1, face_margin=config["face_margin"], min_face_px=config["min_face_px"],
                        stabilize=config["stabilize"], face_detector=config.get("face_detector", "haar"),
                        landmark_model=config.get("landmark_model", "dlib68"),
                        alignment=config.get("alignment", "box"))
    return ClipPredictor(name, classes, crop.frames_per_clip, crop, predict,
                         masked=config.get("mask_margin") is not None,
                         **({"trained_on": config["trained_on"]} if config.get("trained_on") else {}), **action_units)


def predictor_from_pyfunc(uri: str, pyfunc) -> ClipPredictor:
    """A predictor over a registered pyfunc; its alignment settings travel in its model config."""
    classes = [c.name for c in pyfunc.metadata.get_output_schema().inputs]
    config = pyfunc.model_config or {}
    meta = getattr(pyfunc.unwrap_python_model(), "meta", {})  # mer's own model: its AU readout too
    return predictor_from_config(uri, classes, config, lambda clips: pyfunc.predict(clips).to_numpy(np.float64),
                                 **au_outputs(meta, config.get("mask_margin")))


# --- windows over a video ---------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    start: int
    end: int  # inclusive
    numbers: list[int]  # the sampled frame numbers, apex at len // 2


def given_window(onset: int, apex: int, offset: int, frames_per_clip: int) -> Window:
    if not onset <= apex <= offset:
        raise ValueError(f"need onset ≤ apex ≤ offset, got {onset}, {apex}, {offset}")
    return Window(onset, offset, micro_frame_numbers(onset, apex, offset, frames_per_clip))


def sliding_windows(frames: Iterator[tuple[int, np.ndarray]], span: int, stride: int, frames_per_clip: int
                    ) -> Iterator[tuple[Window, list[np.ndarray]]]:
    """Windows of `span` frames every `stride` frames, apex assumed mid-window, from a
    frame stream; holds at most `span` frames. A tail shorter than `span` is not a window."""
    if span < frames_per_clip or stride < 1:
        raise ValueError(f"a window of {span} frames cannot hold {frames_per_clip} samples (stride {stride})")
    buffer: deque[tuple[int, np.ndarray]] = deque(maxlen=span)
    for number, frame in frames:
        buffer.append((number, frame))
        start = number - span + 1
        if start >= 0 and start % stride == 0:
            numbers = micro_frame_numbers(start, start + span // 2, number, frames_per_clip)
            by_number = dict(buffer)
            yield Window(start, number, numbers), [by_number[n] for n in numbers]


@dataclass
class VideoPrediction:
    video: str
    model: str
    fps: float
    classes: list[str]
    windows: list[dict]
    rejected: list[dict]
    trained_on: str = ""
    action_units: list[str] = field(default_factory=list)  # each window's `action_units` keys, if any

    def summary(self) -> dict:
        """The video at a glance: the class most windows predict, the share of windows with
        a face, the mean probabilities, and what the model was trained on."""
        counts = {c: sum(w["predicted"] == c for w in self.windows) for c in self.classes}
        mean = {c: round(float(np.mean([w["probabilities"][c] for w in self.windows])), 4) for c in self.classes}
        seen = len(self.windows) + len(self.rejected)
        dominant = max(self.classes, key=lambda c: (counts[c], mean[c]))
        units = {a: round(float(np.mean([w["action_units"][a] for w in self.windows])), 4) for a in self.action_units}
        return {"dominant_class": dominant, "windows_predicting_it": counts[dominant], "windows": seen,
                "share_of_windows_with_a_face": round(len(self.windows) / seen, 3),
                "mean_probabilities": mean, **({"mean_action_units": units} if units else {}),
                "model_note": self.trained_on}

    def as_json(self) -> dict:
        return {"video": self.video, "model": self.model, "fps": self.fps, "classes": self.classes,
                **({"action_units": self.action_units} if self.action_units else {}),
                "summary": self.summary(), "windows": self.windows, "rejected": self.rejected}

    def as_frame(self):
        """One row per scored window: frames, seconds, the predicted class, one probability
        column per class, and one per action unit (`AU<n>`) when the model gives them."""
        import pandas as pd

        return pd.DataFrame([{k: w[k] for k in ("start_frame", "end_frame", "start_s", "end_s", "predicted")}
                             | w["probabilities"] | w.get("action_units", {}) for w in self.windows])


def predict_video_bytes(data: bytes, predictor: ClipPredictor, name: str = "upload", **options) -> VideoPrediction:
    """`predict_video` of a video held in memory (an upload, a pyfunc input): written to a
    private temporary file for the decoder, removed afterwards."""
    import tempfile

    if not data:
        raise FrameReadError(f"{name}: empty upload")
    with tempfile.TemporaryDirectory(prefix="mer-video-") as folder:
        path = Path(folder) / Path(name).name
        path.write_bytes(data)
        return predict_video(path, predictor, **options)


def predict_video(video: Path, predictor: ClipPredictor, *, window_s: float = 0.4, stride_s: float = 0.1,
                  given: tuple[int, int, int] | None = None, fps: float | None = None) -> VideoPrediction:
    """Per-window class probabilities for one video.

    Windows are aligned as they stream by and scored in batches, so memory holds one
    window span of frames and one batch of crops, however long the video.

    Args:
        given: (onset, apex, offset) frame numbers: one window instead of sliding ones.
        fps: overrides the container's frame rate (needed when it reports none).
    Raises:
        FrameReadError: the file cannot be decoded, or is shorter than one window.
        NoFaceError: no window had a face.
    """
    video = Path(video)
    scorer = _WindowScorer(video.name, predictor)
    with VideoReader(video) as reader:
        rate = fps or reader.fps
        if given is None:
            if rate <= 0:
                raise FrameReadError(f"{video}: the container gives no frame rate; pass --fps")
            span = max(predictor.frames_per_clip, round(window_s * rate))
            stride = max(1, round(stride_s * rate))
            tracked = track_stream(reader.intact_frames(), predictor.crop)
            for window, frames in sliding_windows(tracked, span, stride, predictor.frames_per_clip):
                scorer.add_tracked(window, frames)
    if given is not None:
        window = given_window(*given, predictor.frames_per_clip)
        kept, decoded, _ = read_video_frames(video, window.numbers)
        if set(window.numbers) - kept.keys():
            raise FrameReadError(f"{video.name}: --offset {window.end} is past the end of the video, whose last "
                                 f"frame is {decoded - 1}")
        scorer.add(window, [kept[n] for n in window.numbers])
    return scorer.finish(rate, window_s)


class _WindowScorer:
    """Aligns windows one by one and scores them a batch at a time."""

    def __init__(self, video_name: str, predictor: ClipPredictor):
        self.video_name, self.predictor = video_name, predictor
        self.pending: list[tuple[Window, np.ndarray]] = []
        self.scored: list[tuple[Window, np.ndarray]] = []
        self.rejected: list[dict] = []
        self.seen = 0

    def add(self, window: Window, frames: list[np.ndarray]) -> None:
        """A window of frames: detect, track and align them, then queue it."""
        self.seen += 1
        try:
            self._queue(window, align_window(frames, window.numbers, self.predictor.crop, self.video_name))
        except (FrameReadError, NoFaceError) as exc:
            self._reject(window, str(exc))

    def add_tracked(self, window: Window, frames: list[TrackedFrame]) -> None:
        """A window of a tracked stream: aligned from the stream's landmarks, or rejected
        with the reason of its first frame without a face."""
        self.seen += 1
        lost = next((f.reason for f in frames if f.face is None), None)
        if lost is not None:
            self._reject(window, lost)
            return
        self._queue(window, align_faces([f.frame for f in frames], [f.face for f in frames], self.predictor.crop))

    def _reject(self, window: Window, reason: str) -> None:
        self.rejected.append({"start_frame": window.start, "end_frame": window.end, "reason": reason})

    def _queue(self, window: Window, aligned: AlignedClip) -> None:
        crops = mask_outside_face(aligned.crops, aligned.landmarks) if self.predictor.masked else aligned.crops
        self.pending.append((window, crops))
        if len(self.pending) == _BATCH:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            clips = np.stack([crops for _, crops in self.pending])
            probabilities = self.predictor.predict(clips)
            units = (self.predictor.predict_action_units(clips) if self.predictor.predict_action_units
                     else [None] * len(clips))
            self.scored += [(w, p, u) for (w, _), p, u in zip(self.pending, probabilities, units)]
            self.pending = []

    def finish(self, fps: float, window_s: float) -> VideoPrediction:
        self._flush()
        if self.seen == 0:
            raise FrameReadError(f"{self.video_name}: shorter than one window of {window_s} s")
        if not self.scored:
            raise NoFaceError(f"{self.video_name}: no face found in any of {self.seen} window(s); "
                              "is there a frontal face in the video?")
        classes = self.predictor.classes

        def seconds(frame: int) -> float | None:
            return round(frame / fps, 3) if fps > 0 else None

        rows = [{"start_frame": w.start, "end_frame": w.end, "start_s": seconds(w.start), "end_s": seconds(w.end),
                 "probabilities": {c: round(float(v), 5) for c, v in zip(classes, p)},
                 "predicted": classes[int(np.argmax(p))],
                 **({} if u is None else {"action_units": {a: round(float(v), 5)
                                                           for a, v in zip(self.predictor.action_units, u)}})}
                for w, p, u in self.scored]
        return VideoPrediction(self.video_name, self.predictor.name, fps, classes, rows, self.rejected,
                               self.predictor.trained_on, self.predictor.action_units or [])
