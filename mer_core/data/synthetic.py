"""The embedded default data set: procedural faces moving through FACS-like action units.

No public MER data set may be redistributed, so the default run renders its own and
writes it to disk in the real layouts: macro clips as video files with a CSV manifest
(the generic `videos` adapter), micro clips as a CASME II tree
(`subXX/EPxx_yy/imgN.jpg` + coding sheet). Ingestion then runs the same code as for
real data.

A face is an identity (geometry, skin, hair, texture) plus a time series of action-unit
intensities, one per side of the face, shape (T, n_aus, 2). Rendering is supersampled
2x and drawn with sub-pixel coordinates, so that a micro-expression moving a feature by
half a pixel still changes the image smoothly.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mer_core.config import ExecutorParams, Nuisance, Range, SynthesizeParams
from mer_core.data.store import staged_directory, write_atomically
from mer_core.parallel import open_job_pool

log = logging.getLogger(__name__)

ACTION_UNITS = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45)
AU_INDEX = {au: i for i, au in enumerate(ACTION_UNITS)}
IMAGE_LEFT, IMAGE_RIGHT = 0, 1  # FACS "R" (subject's right) is the image's left

# EMFACS-style prototypes for posed macro expressions.
MACRO_RECIPES: dict[str, list[tuple[int, ...]]] = {
    "happiness": [(6, 12), (6, 12, 25)],
    "sadness": [(1, 4, 15), (1, 4, 15, 17)],
    "surprise": [(1, 2, 5, 26), (1, 2, 5, 25)],
    "fear": [(1, 2, 4, 5, 20, 26), (1, 2, 4, 5, 20, 25)],
    "anger": [(4, 5, 7, 23), (4, 7, 17, 23)],
    "disgust": [(9, 15, 17), (9, 10, 25)],
    "contempt": [(12, 14)],  # always unilateral, see _sample_sides
}

# CASME II-like micro classes: often a single or unilateral AU. `others` shares AU4 and
# AU7 with disgust, as the real sheet does, so even a perfect AU reader is not perfect.
MICRO_RECIPES: dict[str, list[tuple[int, ...]]] = {
    "happiness": [(12,), (6, 12), (12,)],
    "disgust": [(9,), (4, 9), (10,), (4, 10), (4, 7)],
    "repression": [(14,), (15,), (17,), (15, 17), (14, 17)],
    "surprise": [(1, 2), (1, 2, 5), (5,)],
    "others": [(4,), (7,), (4, 7), (1,), (2,), (20,)],
}
MICRO_CLASS_WEIGHTS = {"others": 0.3, "disgust": 0.24, "happiness": 0.17, "repression": 0.15, "surprise": 0.14}


# --------------------------------------------------------------------------- identity
@dataclass(frozen=True)
class Identity:
    """Everything that makes one synthetic person look like themself; units of the face half-width."""

    center: tuple[float, float]  # face centre as a fraction of the image
    half_width: float  # fraction of the image size
    aspect: float  # half-height / half-width
    skin: tuple[float, float, float]  # BGR
    hair: tuple[float, float, float]
    background: tuple[float, float, float]
    lip: tuple[float, float, float]
    eye_separation: float
    eye_height: float
    eye_size: float
    brow_gap: float
    brow_thickness: float
    brow_arch: float
    nose_length: float
    mouth_width: float
    mouth_height: float
    lip_thickness: float
    light_angle: float
    texture_seed: int


def sample_identity(rng: np.random.Generator) -> Identity:
    tone = rng.uniform(0.35, 1.0)
    skin = (60 + 120 * tone * rng.uniform(0.8, 1.0), 80 + 120 * tone, 110 + 120 * tone * rng.uniform(0.95, 1.05))
    hair_level = rng.uniform(15, 90)
    return Identity(
        center=(rng.uniform(0.44, 0.56), rng.uniform(0.48, 0.56)),
        half_width=rng.uniform(0.25, 0.31),
        aspect=rng.uniform(1.22, 1.42),
        skin=tuple(min(250.0, c) for c in skin),
        hair=(hair_level * rng.uniform(0.6, 1.0), hair_level * rng.uniform(0.7, 1.0), hair_level),
        background=tuple(rng.uniform(40, 200, size=3)),
        lip=(skin[0] * 0.55, skin[1] * 0.55, min(250.0, skin[2] * 0.95)),
        eye_separation=rng.uniform(0.36, 0.46),
        eye_height=rng.uniform(0.1, 0.2),
        eye_size=rng.uniform(0.17, 0.22),
        brow_gap=rng.uniform(0.17, 0.25),
        brow_thickness=rng.uniform(0.045, 0.075),
        brow_arch=rng.uniform(0.02, 0.07),
        nose_length=rng.uniform(0.3, 0.42),
        mouth_width=rng.uniform(0.28, 0.38),
        # Eye line to mouth about 1 inter-ocular distance, as on real faces: with the mouth
        # 0.1 higher (the first renderer), dlib's 68 points sat 0.09 eye distances below the lips.
        mouth_height=rng.uniform(0.62, 0.72),
        lip_thickness=rng.uniform(0.045, 0.075),
        light_angle=rng.uniform(-0.8, 0.8),
        texture_seed=int(rng.integers(2**31)),
    )


class FaceRenderer:
    """Renders one identity under per-frame action-unit intensities.

    The static part (background, hair, face shading, texture, eye sockets) is drawn once;
    each frame copies it and draws the moving features on top.
    """

    SUPERSAMPLE = 2

    def __init__(self, identity: Identity, size: int):
        self.id = identity
        self.size = size
        self.canvas = size * self.SUPERSAMPLE
        self.cx = identity.center[0] * self.canvas
        self.cy = identity.center[1] * self.canvas
        self.a = identity.half_width * self.canvas  # face half-width in canvas pixels
        self.b = self.a * identity.aspect
        self.base = self._render_static()

    # -- geometry helpers (canvas pixels; u, v in face half-widths from the centre)
    def _pt(self, u: float, v: float) -> tuple[float, float]:
        return self.cx + u * self.a, self.cy + v * self.a

    @staticmethod
    def _fixed(points) -> np.ndarray:
        """Sub-pixel coordinates for OpenCV drawing with shift=4 (1/16 px)."""
        return np.round(np.asarray(points, dtype=np.float64) * 16).astype(np.int32)

    def _poly(self, img, points, color, thickness=-1):
        pts = self._fixed(points).reshape(-1, 1, 2)
        if thickness < 0:
            cv2.fillPoly(img, [pts], color, cv2.LINE_AA, shift=4)
        else:
            cv2.polylines(img, [pts], False, color, max(1, int(round(thickness))), cv2.LINE_AA, shift=4)

    def _ellipse(self, img, center, axes, color, angle=0.0, thickness=-1):
        c = tuple(int(x) for x in self._fixed(center))
        ax = tuple(max(1, int(x)) for x in self._fixed(axes))
        cv2.ellipse(img, c, ax, angle, 0, 360, color, thickness, cv2.LINE_AA, shift=4)

    def _render_static(self) -> np.ndarray:
        n, idn = self.canvas, self.id
        rng = np.random.default_rng(idn.texture_seed)
        img = np.empty((n, n, 3), np.float32)
        img[:] = idn.background
        ramp = np.linspace(-0.15, 0.15, n, dtype=np.float32)
        img *= (1 + ramp[:, None, None] * rng.uniform(-1, 1))
        # Hair behind the head, neck below it.
        self._ellipse(img, self._pt(0, -0.35), (self.a * 1.18, self.b * 1.02), idn.hair)
        neck = [self._pt(-0.45, 0.8), self._pt(0.45, 0.8), self._pt(0.55, 2.2), self._pt(-0.55, 2.2)]
        self._poly(img, neck, tuple(c * 0.8 for c in idn.skin))
        face_mask = np.zeros((n, n), np.float32)
        self._ellipse(face_mask, (self.cx, self.cy), (self.a, self.b), 1.0)
        # Side-lit shading with a rounded falloff towards the jaw and temples.
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
        du, dv = (xx - self.cx) / self.a, (yy - self.cy) / self.b
        shade = 1.0 - 0.22 * (du**2 + 0.6 * dv**2) + 0.12 * idn.light_angle * du
        texture = cv2.GaussianBlur(rng.normal(0, 1, (n, n)).astype(np.float32), (0, 0), n / 40) * 40
        face = np.asarray(idn.skin, np.float32) * shade[..., None] + texture[..., None]
        img = img * (1 - face_mask[..., None]) + face * face_mask[..., None]
        # Hairline fringe over the forehead.
        self._ellipse(img, self._pt(0, -1.2), (self.a * 0.95, self.a * 0.42), idn.hair)
        # Eye sockets darker, nose bridge and cheekbones lit: the luminance pattern Haar features look for.
        socket = np.zeros((n, n), np.float32)
        for side in (-1, 1):
            self._ellipse(socket, self._pt(side * idn.eye_separation, -idn.eye_height - 0.02),
                          (self.a * idn.eye_size * 1.6, self.a * idn.eye_size * 1.0), 1.0)
        highlight = np.zeros((n, n), np.float32)
        self._ellipse(highlight, self._pt(0, -idn.eye_height + 0.15), (self.a * 0.09, self.a * idn.nose_length * 0.9), 1.0)
        for side in (-1, 1):
            self._ellipse(highlight, self._pt(side * 0.5, 0.22), (self.a * 0.2, self.a * 0.12), 0.6)
        socket = cv2.GaussianBlur(socket, (0, 0), self.a * 0.06)
        highlight = cv2.GaussianBlur(highlight, (0, 0), self.a * 0.08)
        img *= (1 - 0.28 * socket[..., None]) * (1 + 0.12 * highlight[..., None])
        return img

    # -- per-frame features
    def render(self, au: np.ndarray) -> np.ndarray:
        """One frame (S, S, 3) uint8 for AU intensities `au` of shape (n_aus, 2)."""
        img = self.base.copy()
        self._draw_brows(img, au)
        self._draw_eyes(img, au)
        self._draw_nose(img, au)
        self._draw_mouth(img, au)
        img = cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return np.clip(img, 0, 255).astype(np.uint8)

    def landmarks(self, au: np.ndarray) -> np.ndarray:
        """Where the drawn features are, in the iBUG 300-W 68-point order that dlib's shape
        predictor uses: (68, 2) float (x, y) pixels of the rendered frame (before nuisances).

        Brows, eyes, nose base and tip, and lips are the renderer's own geometry; the jaw
        (0-16) and the nose bridge (27-29), which it draws no line for, are NaN.
        """
        points = np.full((68, 2), np.nan)
        for side, sign, brow in ((IMAGE_LEFT, -1, range(21, 16, -1)), (IMAGE_RIGHT, 1, range(22, 27))):
            points[list(brow)] = self._brow(au, side, sign)  # inner to outer
        thirds = (-1, -1 / 3, 1 / 3, 1)
        for side, sign, upper_ids, lower_ids in ((IMAGE_LEFT, -1, (36, 37, 38, 39), (36, 41, 40, 39)),
                                                 (IMAGE_RIGHT, 1, (42, 43, 44, 45), (42, 47, 46, 45))):
            upper, lower = self._lids(au, side, sign, thirds)
            points[list(upper_ids)] = upper
            points[list(lower_ids[1:3])] = lower[1:3]
        idn = self.id
        tip_v = -idn.eye_height + idn.nose_length + 0.1 - self._nose_lift(au)
        points[30] = self._pt(0, tip_v - 0.06)
        points[31:36] = [self._pt(u, tip_v + dv) for u, dv in
                         ((-0.145, 0.0), (-0.09, 0.03), (0.0, 0.03), (0.09, 0.03), (0.145, 0.0))]
        sixths = np.linspace(0, 1, 7)
        upper_outer, _, _, lower_outer = self._lips(au, sixths)
        points[48:55] = upper_outer
        points[55:60] = lower_outer[5:0:-1]
        quarters = np.linspace(0, 1, 5)
        _, upper_inner, lower_inner, _ = self._lips(au, quarters)
        points[60:65] = upper_inner
        points[65:68] = lower_inner[3:0:-1]
        return (points - 0.5) / self.SUPERSAMPLE  # canvas pixel centres → output pixel centres

    def _darken(self, img, points, strength, width):
        """Draw a crease (wrinkle, fold) whose darkness follows an AU intensity."""
        if strength <= 0.01:
            return
        color = tuple(c * (1 - 0.35 * min(1.0, strength)) for c in self.id.skin)
        self._poly(img, points, color, thickness=width)

    def _brow(self, au, side: int, sign: int) -> list[tuple[float, float]]:
        """Five points along one brow's centre line, inner to outer (canvas pixels)."""
        idn = self.id
        au1, au2, au4, au9 = (au[AU_INDEX[k], side] for k in (1, 2, 4, 9))
        x_eye = sign * idn.eye_separation
        y0 = -idn.eye_height - idn.brow_gap
        pts = []
        for t in np.linspace(0, 1, 5):  # inner (t=0) to outer (t=1)
            u = x_eye + sign * (t - 0.45) * idn.eye_size * 2.6
            v = y0 - idn.brow_arch * math.sin(math.pi * t)
            v -= 0.10 * au1 * (1 - t) + 0.10 * au2 * t
            v += 0.07 * au4 + 0.03 * au9 * (1 - t)
            u -= sign * 0.05 * au4 * (1 - t)
            pts.append(self._pt(u, v))
        return pts

    def _draw_brows(self, img, au):
        idn = self.id
        for side, sign in ((IMAGE_LEFT, -1), (IMAGE_RIGHT, 1)):
            y0 = -idn.eye_height - idn.brow_gap
            self._poly(img, self._brow(au, side, sign), tuple(c * 0.8 for c in idn.hair),
                       thickness=idn.brow_thickness * self.a)
            # Vertical glabella lines of the brow lowerer.
            self._darken(img, [self._pt(sign * 0.07, y0 + 0.02), self._pt(sign * 0.06, y0 + 0.14)],
                         au[AU_INDEX[4], side], self.a * 0.02)

    def _lids(self, au, side: int, sign: int, ts) -> tuple[list, list]:
        """Upper and lower lid edges of one eye at `ts` in [-1, 1] (image left to right), canvas pixels."""
        idn = self.id
        au5, au6, au7, au45 = (au[AU_INDEX[k], side] for k in (5, 6, 7, 45))
        cu, cv = sign * idn.eye_separation, -idn.eye_height
        hw = idn.eye_size
        open_up = max(0.005, (0.42 * hw + 0.22 * hw * au5 - 0.1 * hw * au7) * (1 - au45))
        open_low = max(0.004, (0.3 * hw - 0.12 * hw * au6 - 0.14 * hw * au7) * (1 - 0.7 * au45))
        upper = [self._pt(cu + t * hw, cv - open_up * (1 - t * t)) for t in ts]
        lower = [self._pt(cu + t * hw, cv + open_low * (1 - t * t)) for t in ts]
        return upper, lower

    def _draw_eyes(self, img, au):
        idn = self.id
        for side, sign in ((IMAGE_LEFT, -1), (IMAGE_RIGHT, 1)):
            au6 = au[AU_INDEX[6], side]
            cu, cv = sign * idn.eye_separation, -idn.eye_height
            hw = idn.eye_size
            upper, lower = self._lids(au, side, sign, np.linspace(-1, 1, 13))
            lower = lower[::-1]
            eye_mask = np.zeros(img.shape[:2], np.uint8)
            self._poly(eye_mask, upper + lower, 1)
            sclera = np.zeros_like(img)
            sclera[:] = (205, 210, 215)
            self._ellipse(sclera, self._pt(cu, cv), (hw * 0.48 * self.a, hw * 0.48 * self.a), (45, 40, 35))
            self._ellipse(sclera, self._pt(cu, cv), (hw * 0.2 * self.a, hw * 0.2 * self.a), (10, 10, 10))
            inside = eye_mask.astype(bool)
            img[inside] = sclera[inside]
            self._poly(img, upper, tuple(c * 0.3 for c in idn.hair), thickness=self.a * 0.035)
            # Crow's feet of the cheek raiser at the outer corner.
            for dv in (-0.04, 0.0, 0.04):
                outer = cu + sign * hw * 1.15
                self._darken(img, [self._pt(outer, cv + dv), self._pt(outer + sign * 0.08, cv + 1.6 * dv)], au6, self.a * 0.015)

    @staticmethod
    def _nose_lift(au) -> float:
        return 0.04 * au[AU_INDEX[9]].mean() + 0.02 * au[AU_INDEX[10]].mean()

    def _draw_nose(self, img, au):
        idn = self.id
        tip_v = -idn.eye_height + idn.nose_length + 0.1
        au9 = au[AU_INDEX[9]].mean()
        lift = self._nose_lift(au)
        for sign in (-1, 1):
            self._ellipse(img, self._pt(sign * 0.09, tip_v - lift), (self.a * 0.055, self.a * 0.03),
                          tuple(c * 0.45 for c in idn.skin))
        self._ellipse(img, self._pt(0, tip_v - 0.06 - lift), (self.a * 0.1, self.a * 0.07),
                      tuple(min(255, c * 1.07) for c in idn.skin))
        for dv in (0.0, 0.05, 0.1):  # wrinkles across the bridge
            v = -idn.eye_height + 0.02 + dv
            self._darken(img, [self._pt(-0.07, v), self._pt(0, v - 0.015), self._pt(0.07, v)], au9, self.a * 0.018)

    def _mouth_points(self, au):
        """Corners, lip contours and opening of the mouth for these AU intensities."""
        idn = self.id
        mv, mw = idn.mouth_height, idn.mouth_width
        corners = []
        for side, sign in ((IMAGE_LEFT, -1), (IMAGE_RIGHT, 1)):
            g = {k: au[AU_INDEX[k], side] for k in (12, 14, 15, 20, 23)}
            du = 0.06 * g[12] - 0.03 * g[14] + 0.07 * g[20] - 0.02 * g[23]
            dv = -0.07 * g[12] + 0.07 * g[15] + 0.01 * g[20] - 0.01 * g[14]
            corners.append((sign * (mw + du), mv + dv))
        mean = au.mean(axis=1)
        thick = idn.lip_thickness * (1 - 0.4 * mean[AU_INDEX[23]])
        upper_raise = 0.06 * mean[AU_INDEX[10]] + 0.03 * mean[AU_INDEX[9]]
        opening = 0.04 * mean[AU_INDEX[25]] + 0.12 * mean[AU_INDEX[26]]
        chin_push = 0.03 * mean[AU_INDEX[17]]
        return corners, thick, upper_raise, opening, chin_push

    def _lips(self, au, ts) -> tuple[list, list, list, list]:
        """Upper outer, upper inner, lower inner and lower outer lip edges at `ts` in [0, 1]
        (image left corner to right corner), canvas pixels."""
        (lc, rc), thick, upper_raise, opening, chin_push = self._mouth_points(au)
        mv = self.id.mouth_height
        gap_top = mv - opening * 0.3
        gap_bottom = mv + opening * 0.7 - chin_push

        def curve(v_mid, bow=0.0):
            out = []
            for t in ts:
                u = lc[0] + (rc[0] - lc[0]) * t
                v_edge = lc[1] + (rc[1] - lc[1]) * t
                bump = math.sin(math.pi * t)
                out.append(self._pt(u, v_edge + (v_mid - v_edge) * bump - bow * abs(math.sin(2 * math.pi * t))))
            return out

        return (curve(gap_top - thick - upper_raise, bow=0.012), curve(gap_top), curve(gap_bottom),
                curve(gap_bottom + thick * 1.3))

    def _draw_mouth(self, img, au):
        idn = self.id
        (lc, rc), thick, _, opening, chin_push = self._mouth_points(au)
        gap_bottom = idn.mouth_height + opening * 0.7 - chin_push
        upper_outer, upper_inner, lower_inner, lower_outer = self._lips(au, np.linspace(0, 1, 9))
        if opening > 0.005:
            self._poly(img, upper_inner + lower_inner[::-1], (25, 20, 30))
        self._poly(img, upper_outer + upper_inner[::-1], idn.lip)
        self._poly(img, lower_inner + lower_outer[::-1], tuple(min(255, c * 1.08) for c in idn.lip))
        self._poly(img, upper_inner, tuple(c * 0.5 for c in idn.lip), thickness=self.a * 0.012)
        mean = au.mean(axis=1)
        # Nasolabial folds deepen with smiles and the upper lip raiser.
        for side, sign, corner in ((IMAGE_LEFT, -1, lc), (IMAGE_RIGHT, 1, rc)):
            fold = au[AU_INDEX[12], side] + au[AU_INDEX[10], side] + 0.5 * au[AU_INDEX[6], side]
            wing = self._pt(sign * 0.16, idn.mouth_height - 0.22)
            mid = self._pt(sign * (abs(corner[0]) + 0.03), corner[1] - 0.1)
            end = self._pt(sign * (abs(corner[0]) + 0.05), corner[1] + 0.04)
            self._darken(img, [wing, mid, end], fold * 0.8, self.a * 0.02)
            dimple = self._pt(sign * (abs(corner[0]) + 0.035), corner[1])
            self._darken(img, [dimple, (dimple[0], dimple[1] + 0.04 * self.a)], au[AU_INDEX[14], side], self.a * 0.025)
        # Chin boss of the chin raiser; the jaw drop lowers the chin shadow.
        chin_v = gap_bottom + thick * 1.3 + 0.14 + 0.08 * mean[AU_INDEX[26]]
        self._darken(img, [self._pt(-0.12, chin_v), self._pt(0, chin_v + 0.02), self._pt(0.12, chin_v)],
                     mean[AU_INDEX[17]] * 1.3, self.a * 0.03)


# --------------------------------------------------------------------------- dynamics
def expression_curve(n_frames: int, onset: float, apex: float, offset: float) -> np.ndarray:
    """(n_frames,) intensity in [0, 1]: raised-cosine rise onset→apex, fall apex→offset."""
    t = np.arange(n_frames, dtype=np.float64)
    rise = 0.5 - 0.5 * np.cos(np.pi * np.clip((t - onset) / max(apex - onset, 1e-6), 0, 1))
    fall = 0.5 + 0.5 * np.cos(np.pi * np.clip((t - apex) / max(offset - apex, 1e-6), 0, 1))
    return np.where(t <= apex, rise, fall)


def _sample_sides(rng: np.random.Generator, unilateral: bool) -> np.ndarray:
    if not unilateral:
        return np.ones(2)
    sides = np.zeros(2)
    sides[rng.integers(2)] = 1.0
    return sides


def action_unit_code(aus: tuple[int, ...], sides: np.ndarray) -> str:
    """FACS code as in the coding sheets: `4+9`, unilateral `R12+R14` (R = image left)."""
    prefix = "" if sides.min() > 0 else ("R" if sides[IMAGE_LEFT] > 0 else "L")
    return "+".join(f"{prefix}{au}" for au in aus)


def add_blinks(au: np.ndarray, rng: np.random.Generator, fps: float, rate_hz: float) -> None:
    """Add bilateral AU45 blinks (a distractor motion) in place; `au` is (T, n_aus, 2)."""
    n = au.shape[0]
    t = rng.exponential(1 / rate_hz) * fps if rate_hz > 0 else n
    while t < n:
        length = rng.uniform(0.1, 0.2) * fps
        curve = expression_curve(n, t, t + length * 0.4, t + length)
        au[:, AU_INDEX[45], :] = np.maximum(au[:, AU_INDEX[45], :], curve[:, None])
        t += length + rng.exponential(1 / rate_hz) * fps


def head_motion(n: int, rng: np.random.Generator, fps: float, nuisance: Nuisance) -> np.ndarray:
    """(n, 3) per-frame (dx, dy, angle_deg): slow drift plus AR(1) jitter."""
    direction = rng.normal(size=3) * np.array([1, 1, 0.3])
    drift = np.outer(np.arange(n) / fps, direction * nuisance.head_drift_px)
    jitter = np.zeros((n, 3))
    for k in range(1, n):
        jitter[k] = 0.8 * jitter[k - 1] + rng.normal(size=3) * nuisance.head_jitter_px * np.array([0.6, 0.6, 0.2])
    return drift + jitter


def apply_nuisances(frame: np.ndarray, pose: np.ndarray, gain: float, slope: float,
                    rng: np.random.Generator, noise_sigma: float) -> np.ndarray:
    """Head pose warp, illumination gain and gradient, sensor noise: (S, S, 3) uint8."""
    size = frame.shape[0]
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), float(pose[2]), 1.0)
    matrix[:, 2] += pose[:2]
    warped = cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    ramp = 1 + slope * np.linspace(-1, 1, size, dtype=np.float32)
    out = warped.astype(np.float32) * gain * ramp[None, :, None]
    out += rng.normal(0, noise_sigma, out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class ClipSpec:
    """One expression clip: who, what, and where its events lie (frame numbers from 0)."""

    label: str
    aus: tuple[int, ...]
    sides: np.ndarray
    amplitude: float
    n_frames: int
    onset: int
    apex: int
    offset: int
    seed: int


def render_clip(renderer: FaceRenderer, spec: ClipSpec, fps: float, nuisance: Nuisance) -> list[np.ndarray]:
    """All frames of a clip, nuisances included: list of (S, S, 3) uint8 (BGR)."""
    rng = np.random.default_rng(spec.seed)
    au = np.zeros((spec.n_frames, len(ACTION_UNITS), 2), np.float64)
    curve = expression_curve(spec.n_frames, spec.onset, spec.apex, spec.offset) * spec.amplitude
    for code in spec.aus:
        # Each AU of the expression peaks at its own slightly different strength.
        au[:, AU_INDEX[code], :] = curve[:, None] * spec.sides[None, :] * rng.uniform(0.8, 1.0)
    add_blinks(au, rng, fps, nuisance.blink_rate_hz)
    poses = head_motion(spec.n_frames, rng, fps, nuisance)
    drift = rng.uniform(-1, 1) * nuisance.illumination_drift
    slope0, slope_drift = rng.uniform(-0.1, 0.1), rng.uniform(-1, 1) * nuisance.illumination_drift * 0.5
    frames = []
    for k in range(spec.n_frames):
        phase = k / max(spec.n_frames - 1, 1)
        frame = renderer.render(au[k])
        frames.append(apply_nuisances(frame, poses[k], 1 + drift * (phase - 0.5), slope0 + slope_drift * phase,
                                      rng, nuisance.noise_sigma))
    return frames


# --------------------------------------------------------------------------- data sets
def _uniform(rng: np.random.Generator, r: Range) -> float:
    return float(rng.uniform(r.low, r.high))


def plan_micro_clip(rng: np.random.Generator, params: SynthesizeParams) -> ClipSpec:
    m = params.micro
    classes = list(MICRO_CLASS_WEIGHTS)
    weights = np.array([MICRO_CLASS_WEIGHTS[c] for c in classes])
    label = classes[rng.choice(len(classes), p=weights / weights.sum())]
    recipes = MICRO_RECIPES[label]
    aus = recipes[rng.integers(len(recipes))]
    duration = _uniform(rng, m.duration_s) * m.fps
    pad_before, pad_after = _uniform(rng, m.padding_s) * m.fps, _uniform(rng, m.padding_s) * m.fps
    onset = int(round(pad_before))
    offset = int(round(pad_before + duration))
    apex = int(round(onset + rng.uniform(0.3, 0.6) * (offset - onset)))
    return ClipSpec(label, aus, _sample_sides(rng, rng.random() < m.unilateral_fraction), _uniform(rng, m.amplitude),
                    offset + int(round(pad_after)) + 1, onset, apex, offset, int(rng.integers(2**31)))


def plan_macro_clip(rng: np.random.Generator, params: SynthesizeParams) -> ClipSpec:
    m = params.macro
    label = list(MACRO_RECIPES)[rng.integers(len(MACRO_RECIPES))]
    aus = MACRO_RECIPES[label][rng.integers(len(MACRO_RECIPES[label]))]
    n = max(4, int(round(_uniform(rng, m.duration_s) * m.fps)))
    onset = int(rng.uniform(0.05, 0.3) * n)
    apex = int(onset + rng.uniform(0.25, 0.5) * (n - onset))
    offset = min(n - 1, int(apex + rng.uniform(0.4, 1.0) * (n - apex)))
    return ClipSpec(label, aus, _sample_sides(rng, label == "contempt"), _uniform(rng, m.amplitude),
                    n, onset, max(apex, onset), max(offset, apex), int(rng.integers(2**31)))


MICRO_SHEET_HEADER = ["Subject", "Filename", None, "OnsetFrame", "ApexFrame", "OffsetFrame", None,
                      "Action Units", "Estimated Emotion"]
MICRO_SHEET_NAME = "CASME2-coding-synthetic.xlsx"
MACRO_MANIFEST_NAME = "manifest.csv"


def _write_micro_subject(args) -> list[list]:
    """Render one micro subject's clips as `subXX/EPxx_yy/imgN.jpg`; return its sheet rows."""
    subject_no, seed, params, out_dir = args
    rng = np.random.default_rng(seed)
    renderer = FaceRenderer(sample_identity(rng), params.image_size)
    root = Path(out_dir) / "micro"
    rows = []
    for clip_no in range(params.micro.clips_per_subject):
        spec = plan_micro_clip(rng, params)
        filename = f"EP{clip_no + 1:02d}_{int(rng.integers(1, 20)):02d}"
        first = int(rng.integers(1, 80))  # real sheets number frames from the source video
        folder = root / f"sub{subject_no:02d}" / filename
        folder.mkdir(parents=True, exist_ok=True)
        quality = [cv2.IMWRITE_JPEG_QUALITY, params.micro.jpeg_quality]
        for k, frame in enumerate(render_clip(renderer, spec, params.micro.fps, params.nuisance)):
            final = folder / f"img{first + k}.jpg"
            write_atomically(final, lambda tmp: _imwrite(tmp, frame, quality))
        rows.append([subject_no, filename, None, first + spec.onset, first + spec.apex, first + spec.offset, None,
                     action_unit_code(spec.aus, spec.sides), spec.label])
    return rows


def _imwrite(path: Path, frame: np.ndarray, flags: list[int]) -> None:
    ok, buffer = cv2.imencode(".jpg", frame, flags)
    if not ok:
        raise OSError(f"could not encode a frame for {path}")
    path.write_bytes(buffer.tobytes())


def _write_macro_subject(args) -> list[dict]:
    """Render one macro subject's clips as video files; return its manifest rows."""
    subject_name, seed, params, out_dir = args
    rng = np.random.default_rng(seed)
    renderer = FaceRenderer(sample_identity(rng), params.image_size)
    videos = Path(out_dir) / "macro" / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    rows = []
    for clip_no in range(params.macro.clips_per_subject):
        spec = plan_macro_clip(rng, params)
        final = videos / f"{subject_name}_{clip_no + 1:02d}.avi"
        frames = render_clip(renderer, spec, params.macro.fps, params.nuisance)
        write_atomically(final, lambda tmp: write_video(tmp, frames, params.macro.fps, params.macro.codec))
        rows.append({"path": f"videos/{final.name}", "subject": subject_name, "label": spec.label,
                     "onset": spec.onset, "apex": spec.apex, "offset": spec.offset,
                     "action_units": action_unit_code(spec.aus, spec.sides)})
    return rows


def write_video(path: Path, frames: list[np.ndarray], fps: float, codec: str) -> None:
    """Encode BGR frames into an .avi with OpenCV's writer."""
    height, width = frames[0].shape[:2]
    # The writer picks the container from the suffix, so give it an .avi name.
    target = path.with_suffix(path.suffix + ".avi") if path.suffix != ".avi" else path
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*codec), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot open a {codec} video writer for {path}")
    for frame in frames:
        writer.write(frame)
    writer.release()
    if target != path:
        target.replace(path)


def _write_micro_sheet(path: Path, rows: list[list]) -> None:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "Sheet1"
    sheet.append(MICRO_SHEET_HEADER)
    for row in rows:
        sheet.append(row)
    saved = io.BytesIO()
    book.save(saved)
    write_atomically(path, lambda tmp: tmp.write_bytes(_without_save_time(saved.getvalue())))


_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_FIXED_XML_TIME = b"2000-01-01T00:00:00Z"


def _without_save_time(xlsx: bytes) -> bytes:
    """The workbook with its time stamps fixed. openpyxl writes the current time into
    docProps/core.xml and into every zip entry, so the same seed would give a sheet of
    other bytes each run, and DVC would see new raw data after every `synthesize`."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(xlsx)) as source, zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename == "docProps/core.xml":
                content = re.sub(rb"(<dcterms:(?:created|modified)[^>]*>)[^<]*", rb"\g<1>" + _FIXED_XML_TIME, content)
            target.writestr(zipfile.ZipInfo(item.filename, _FIXED_ZIP_TIME), content, zipfile.ZIP_DEFLATED)
    return out.getvalue()


def _write_manifest(path: Path, rows: list[dict]) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    write_atomically(path, write)


def synthesize(params: SynthesizeParams, out_dir: Path, workers: int = 1) -> dict:
    """Write the synthetic macro (videos + manifest) and micro (CASME II layout) sets under `out_dir`.

    Identities, clips and nuisances all derive from `params.seed`, subject by subject,
    so the output does not depend on `workers`. Macro and micro identities are drawn
    from separate seed streams: no person appears in both.

    Returns:
        Counts of subjects, clips and frames per set.
    """
    micro_seeds = np.random.SeedSequence([params.seed, 1]).spawn(params.micro.subjects)
    macro_seeds = np.random.SeedSequence([params.seed, 2]).spawn(params.macro.subjects)
    # The whole set is rendered beside the old one and swapped in: a killed run leaves the
    # previous set as it was, and a smaller set leaves no stale subjects behind.
    with staged_directory(Path(out_dir)) as out:
        micro_jobs = [(k + 1, s, params, out) for k, s in enumerate(micro_seeds)]
        macro_jobs = [(f"actor{k + 1:03d}", s, params, out) for k, s in enumerate(macro_seeds)]
        with open_job_pool(ExecutorParams(), workers) as pool:
            micro_rows = [row for rows in pool.map(_write_micro_subject, micro_jobs) for row in rows]
            macro_rows = [row for rows in pool.map(_write_macro_subject, macro_jobs) for row in rows]
        _write_micro_sheet(out / "micro" / MICRO_SHEET_NAME, micro_rows)
        _write_manifest(out / "macro" / MACRO_MANIFEST_NAME, macro_rows)
    return {
        "micro": {"subjects": params.micro.subjects, "clips": len(micro_rows),
                  "labels": _count(r[-1] for r in micro_rows)},
        "macro": {"subjects": params.macro.subjects, "clips": len(macro_rows),
                  "labels": _count(r["label"] for r in macro_rows)},
    }


def _count(values) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return dict(sorted(counts.items()))
