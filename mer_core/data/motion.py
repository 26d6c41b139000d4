"""Motion between the frames of a clip: optical flow, optical strain, Eulerian magnification.

Computed once per clip by the `features` stage and stored beside the clip table, so
training never recomputes them (mer_core/data/training_sets.py reads them).

- **Flow**: OpenCV's Farneback (polynomial expansion, 3 levels, 9-px window) on grey
  crops, or DIS (dense inverse search, `medium` preset) as the named alternative. TV-L1
  needs the contrib wheel, which cannot share the environment with the main OpenCV wheel
  (one `cv2/` folder). `benchmarks/bench_motion.py` measures both here: DIS is ~2.5×
  faster and as accurate on a global sub-pixel shift, but on the tuning benchmark's
  micro-expressions (local, sub-pixel, on little texture) its onset→apex features score
  far lower under the flow + strain baseline (UF1 ~0.46 vs ~0.61), so Farneback is the
  default.
- **Strain**: the magnitude of the infinitesimal strain tensor ε = ½(∇w + ∇wᵀ) of the
  flow w = (u, v): |ε| = sqrt(εxx² + εyy² + 2 εxy²), εxx = ∂u/∂x, εyy = ∂v/∂y,
  εxy = ½(∂u/∂y + ∂v/∂x) (Shreve et al., "Macro- and micro-expression spotting in long
  videos using spatio-temporal strain", FG 2011). MEB, STSTNet and MEAN each use a
  variant of it; this is the one used everywhere in mer.
- **Magnification**: linear Eulerian magnification (Wu et al., SIGGRAPH 2012) of each
  frame's change from the onset, band-limited in space: x_t + α·G(x_t − x_0). The onset
  is the reference (the "DC" of a clip that starts neutral), and G, a Gaussian blur,
  keeps sensor noise from being amplified with the motion. Any frame size works (no
  power-of-two pyramid: MEB's magnifier silently skips sides not a multiple of 32).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa

from mer_core.data.store import (
    frames_to_numpy,
    iter_row_groups,
    shard_paths,
    staged_directory,
    write_row_groups,
)

log = logging.getLogger(__name__)

FLOW_METHODS = ("dis", "farneback")


def _grey(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB or (H, W) → (H, W) uint8 grey."""
    return frame if frame.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def optical_flow(earlier: np.ndarray, later: np.ndarray, method: str = "farneback") -> np.ndarray:
    """Dense flow from `earlier` to `later` (uint8 grey or RGB frames of one size): (H, W, 2)
    float32, (u, v) in pixels, such that later(x + w(x)) ≈ earlier(x)."""
    a, b = _grey(earlier), _grey(later)
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        return dis.calc(a, b, None)
    if method == "farneback":
        return cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=3, winsize=9, iterations=5,
                                            poly_n=5, poly_sigma=1.1, flags=0)
    raise ValueError(f"unknown flow method {method!r}; known: {list(FLOW_METHODS)}")


def optical_strain(flow: np.ndarray) -> np.ndarray:
    """|ε| of a flow field (H, W, 2) → (H, W) float32 (see the module docstring)."""
    u, v = flow[..., 0], flow[..., 1]
    du_dy, du_dx = np.gradient(u)
    dv_dy, dv_dx = np.gradient(v)
    shear = 0.5 * (du_dy + dv_dx)
    return np.sqrt(du_dx ** 2 + dv_dy ** 2 + 2 * shear ** 2).astype(np.float32)


def pair_motion(earlier: np.ndarray, later: np.ndarray, method: str = "farneback") -> np.ndarray:
    """The (u, v, strain) from `earlier` to `later` (uint8 grey or RGB frames): (H, W, 3) float32."""
    flow = optical_flow(earlier, later, method)
    return np.concatenate([flow, optical_strain(flow)[..., None]], axis=-1)


def move_along_flow(frame: np.ndarray, flow: np.ndarray, scale: float) -> np.ndarray:
    """`frame` with its content moved `scale` × the flow `flow` (as `optical_flow` gives it
    from this frame to a later one): (H, W, C) uint8 → the same shape. A backward warp,
    frame(y − scale·w(y)), exact for the smooth fields of facial motion up to second order."""
    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(frame, xs - scale * flow[..., 0], ys - scale * flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT)


def clip_motion(frames: np.ndarray, method: str = "farneback") -> np.ndarray:
    """The motion of every frame from the first: (T, H, W, 3) uint8 → (T - 1, H, W, 3)
    float32 of (u, v, strain) per pixel; index k is frame k + 1 against frame 0."""
    onset = _grey(frames[0])
    return np.stack([pair_motion(onset, frames[k], method) for k in range(1, len(frames))])


def onset_motion(frames: np.ndarray, index: int, method: str = "farneback", magnification: float = 0.0
                 ) -> np.ndarray:
    """`clip_motion(magnify(frames, magnification), method)[index - 1]` without the other
    frames (magnification of a frame reads only it and the onset): (H, W, 3) float32."""
    pair = frames[[0, index]]
    if magnification:
        pair = magnify(pair, magnification)
    return pair_motion(pair[0], pair[1], method)


def magnify(frames: np.ndarray, alpha: float, sigma: float = 1.5) -> np.ndarray:
    """Eulerian magnification of a clip's change from its first frame: (T, H, W, C) uint8 →
    the same shape, frame t = x_t + α · G_σ(x_t − x_0), clipped to [0, 255]."""
    clip = frames.astype(np.float32)
    change = clip - clip[:1]  # (T, H, W, C)
    band = np.stack([cv2.GaussianBlur(c, (0, 0), sigma) for c in change]) if sigma > 0 else change
    if band.ndim < clip.ndim:  # GaussianBlur drops a single channel axis
        band = band[..., None]
    return np.clip(clip + alpha * band, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- the features stage
def _motion_group(group: pa.Table, method: str, magnification: float) -> pa.Table:
    """One row group of clips → its motion table: clip_id, dataset, motion float16 (T-1, H, W, 3)."""
    frames = frames_to_numpy(group["frames"])  # (N, T, H, W, 3)
    motion = np.stack([clip_motion(magnify(clip, magnification) if magnification else clip, method)
                       for clip in frames]).astype(np.float16)
    return pa.table({"clip_id": group["clip_id"], "dataset": group["dataset"],
                     "motion": pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(motion))})


def write_motion_features(clips_dir: Path, out_dir: Path, datasets: list[str], method: str = "farneback",
                          magnification: float = 0.0) -> dict:
    """The motion of every clip of `datasets` under `clips_dir/<dataset>/`, one shard per
    input shard under `out_dir/<dataset>/`, the folder swapped in whole when complete.

    Returns:
        {"clips", "seconds", "clips_per_second", "method", "magnification"}.
    """
    started, clips = time.perf_counter(), 0
    with staged_directory(Path(out_dir)) as staged:
        for dataset in datasets:
            for shard in shard_paths(Path(clips_dir) / dataset):
                groups = (_motion_group(g, method, magnification)
                          for g in iter_row_groups([shard], columns=["clip_id", "dataset", "frames"]))
                clips += write_row_groups(groups, staged / dataset / shard.name)
    seconds = time.perf_counter() - started
    log.info("motion of %d clips in %.1f s", clips, seconds)
    return {"clips": clips, "seconds": round(seconds, 1), "clips_per_second": round(clips / max(seconds, 1e-9), 1),
            "method": method, "magnification": magnification}
