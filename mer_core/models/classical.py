"""The classical baselines a reviewer asks for, as features plus a linear classifier.

- **LBP-TOP + linear SVM** (Zhao & Pietikäinen, TPAMI 2007), the MEGC 2019 official
  baseline: local binary patterns on the three orthogonal planes (XY, XT, YT) of a
  clip's grey volume, uniform patterns with 8 neighbours at radius 1 in space and time
  (59 bins), a histogram per plane and spatial block, concatenated; a linear SVM.
- **Optical flow + optical strain + logistic regression**: the onset→apex flow (u, v)
  and strain (mer_core/data/motion.py), averaged over a spatial grid of blocks.
- **Pixel difference + logistic regression**: the grey apex − onset, less its mean (a
  brightness change is not motion), averaged over a grid of blocks: what the learned
  models' action branch reads, with a linear model on top.

All are trained and scored under the same leave-one-subject-out folds as the learned
models (`mer_core/training/finetune.py` runs them); features are standardised on the
training subjects of each fold, and classes balanced, as the learned models' loss is.
Grids and regularisation were chosen on the tuning benchmark (params.yaml `tuning`):
LBP-TOP 8 × 8 blocks, C 0.01; flow 16 × 16, C 0.1; difference 16 × 16, C 0.3.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# --------------------------------------------------------------------------- LBP-TOP
# Neighbour offsets (row, column) of an 8-neighbourhood at radius 1, counter-clockwise
# from the right: the square neighbourhood LBP(8, 1) on every plane.
_NEIGHBOURS = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))


def _uniform_table() -> np.ndarray:
    """256 8-bit codes → 59 bins: one per uniform pattern (≤ 2 bit transitions), one for the rest."""
    table = np.full(256, 58, np.int64)
    uniform = [c for c in range(256) if bin(c ^ ((c >> 1) | ((c & 1) << 7))).count("1") <= 2]
    for index, code in enumerate(uniform):
        table[code] = index
    return table


UNIFORM_BINS = 59
_UNIFORM = _uniform_table()


def lbp_codes(plane_stack: np.ndarray) -> np.ndarray:
    """Uniform LBP(8, 1) bins of every interior pixel of each 2-D plane: (N, A, B) → (N, A-2, B-2)."""
    x = plane_stack.astype(np.int16)
    centre = x[:, 1:-1, 1:-1]
    code = np.zeros(centre.shape, np.int64)
    for bit, (dr, dc) in enumerate(_NEIGHBOURS):
        neighbour = x[:, 1 + dr: x.shape[1] - 1 + dr, 1 + dc: x.shape[2] - 1 + dc]
        code |= (neighbour >= centre).astype(np.int64) << bit
    return _UNIFORM[code]


def _block_histograms(bins: np.ndarray, grid: int) -> np.ndarray:
    """Normalised 59-bin histograms of `bins` (rows, columns, ...) per spatial block: (grid², 59)."""
    hist = np.zeros((grid, grid, UNIFORM_BINS))
    rows = np.linspace(0, bins.shape[0], grid + 1).astype(int)
    cols = np.linspace(0, bins.shape[1], grid + 1).astype(int)
    for i in range(grid):
        for j in range(grid):
            counts = np.bincount(bins[rows[i]:rows[i + 1], cols[j]:cols[j + 1]].ravel(), minlength=UNIFORM_BINS)
            hist[i, j] = counts / max(counts.sum(), 1)
    return hist.reshape(grid * grid, UNIFORM_BINS)


def lbp_top_features(volume: np.ndarray, grid: int = 4) -> np.ndarray:
    """LBP-TOP of a grey clip (T, H, W) uint8: 3 planes × grid² blocks × 59 bins, flattened.

    XY codes come from every frame, XT codes from every row, YT codes from every column;
    a block gathers the codes whose pixel lies in it (XT and YT blocks span all of time).
    """
    t, h, w = volume.shape
    xy = lbp_codes(volume)  # (T, H-2, W-2)
    xt = lbp_codes(volume.transpose(1, 0, 2))  # (H, T-2, W-2): rows of x-t planes
    yt = lbp_codes(volume.transpose(2, 0, 1))  # (W, T-2, H-2)
    planes = [
        _block_histograms(xy.transpose(1, 2, 0), grid),  # (H-2, W-2, T)
        _block_histograms(xt.transpose(0, 2, 1), grid),  # (H, W-2, T-2)
        _block_histograms(yt.transpose(2, 0, 1), grid),  # (H-2, W, T-2)
    ]
    return np.concatenate(planes).ravel()


# --------------------------------------------------------------------------- flow features
def grid_mean(field: np.ndarray, grid: int) -> np.ndarray:
    """(H, W, C) → the mean of each of grid × grid blocks, (grid² · C,), in float64: a block
    the face mask leaves almost empty has a variance near 1e-90, which the scaler's float32
    division turns into 0 / 0 (NaN features, a crashed fit)."""
    h, w, c = field.shape
    rows, cols = np.linspace(0, h, grid + 1).astype(int), np.linspace(0, w, grid + 1).astype(int)
    return np.stack([field[rows[i]:rows[i + 1], cols[j]:cols[j + 1]].reshape(-1, c).mean(0, dtype=np.float64)
                     for i in range(grid) for j in range(grid)]).ravel()


# --------------------------------------------------------------------------- the baselines
# A clip's features from its frames (T, H, W, 3) uint8, its motion (T-1, H, W, 3) or None,
# and where its apex sits among the frames.
Features = Callable[[np.ndarray, np.ndarray | None, int], np.ndarray]


@dataclass(frozen=True)
class ClassicalBaseline:
    """Features of one clip → a vector, and the linear classifier trained on them."""

    name: str
    features: Features
    classifier: Callable[[int], object]  # seed → an unfitted scikit-learn estimator
    reads_motion: bool = False  # needs the features stage's motion


def _grey(frames: np.ndarray) -> np.ndarray:
    return frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)  # (T, H, W)


def _lbp_top(frames: np.ndarray, motion: np.ndarray | None, apex: int) -> np.ndarray:
    return lbp_top_features(_grey(frames).round().astype(np.uint8), grid=8)


def _onset_apex_flow(frames: np.ndarray, motion: np.ndarray | None, apex: int) -> np.ndarray:
    return grid_mean(motion[max(apex, 1) - 1], grid=16)


def _onset_apex_difference(frames: np.ndarray, motion: np.ndarray | None, apex: int) -> np.ndarray:
    grey = _grey(frames)
    change = grey[apex] - grey[0]
    return grid_mean((change - change.mean())[..., None], grid=16)


def _scaled(estimator):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), estimator)


def _linear_svm(c: float) -> Callable[[int], object]:
    def build(seed: int):
        from sklearn.svm import LinearSVC

        return _scaled(LinearSVC(C=c, class_weight="balanced", max_iter=20000, random_state=seed))
    return build


def _logistic(c: float) -> Callable[[int], object]:
    def build(seed: int):
        from sklearn.linear_model import LogisticRegression

        return _scaled(LogisticRegression(C=c, class_weight="balanced", max_iter=5000, random_state=seed))
    return build


CLASSICAL_BASELINES = {
    "lbp_top_svm": ClassicalBaseline("lbp_top_svm", _lbp_top, _linear_svm(0.01)),
    "flow_strain_lr": ClassicalBaseline("flow_strain_lr", _onset_apex_flow, _logistic(0.1), reads_motion=True),
    "difference_lr": ClassicalBaseline("difference_lr", _onset_apex_difference, _logistic(0.3)),
}


# --------------------------------------------------------------------------- the AU readout
def flow_strain_vector(motion: np.ndarray) -> np.ndarray:
    """`flow_strain_lr`'s features of one onset→apex motion field (H, W, 3)."""
    return _onset_apex_flow(None, motion[None], 1)


@dataclass(frozen=True)
class AUReadout:
    """One logistic regression per action unit over `flow_strain_lr`'s features (the
    `au_flow_lr` row), as two arrays: the final model file carries it, so `mer predict`
    gives AU probabilities with no pickled estimator to load. Each AU's standardisation is
    folded into its weights (w / σ, b − Σ w μ / σ): the probabilities are the pipeline's."""

    units: tuple[int, ...]  # the AU numbers, in the order of the rows below
    weights: np.ndarray  # (K, D)
    bias: np.ndarray  # (K,)

    # A unit every training clip shows (or none does) is predicted constant: the logit of 1 − 1e-9.
    CONSTANT_LOGIT = 20.7

    @classmethod
    def fit(cls, features: np.ndarray, targets: np.ndarray, units: tuple[int, ...], seed: int) -> AUReadout:
        """`features` (N, D), `targets` (N, K) in {0, 1}, one column per unit of `units`."""
        weights = np.zeros((targets.shape[1], features.shape[1]), np.float64)
        bias = np.zeros(targets.shape[1], np.float64)
        for k in range(targets.shape[1]):
            seen = targets[:, k]
            if seen.min() == seen.max():
                bias[k] = cls.CONSTANT_LOGIT if seen[0] else -cls.CONSTANT_LOGIT
                continue
            pipeline = CLASSICAL_BASELINES["flow_strain_lr"].classifier(seed).fit(features, seen)
            scaler, model = pipeline[0], pipeline[-1]  # binary: coef_ scores classes_[1], the 1s
            w = model.coef_[0] / scaler.scale_
            weights[k], bias[k] = w, model.intercept_[0] - w @ scaler.mean_
        return cls(tuple(int(u) for u in units), weights, bias)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(N, D) → (N, K)."""
        logits = np.asarray(features, np.float64) @ self.weights.T + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(logits, -60.0, 60.0)))

    def to_state(self) -> dict:
        """Plain tensors and ints, what `torch.load(weights_only=True)` reads back."""
        import torch

        return {"units": list(self.units), "weights": torch.from_numpy(self.weights),
                "bias": torch.from_numpy(self.bias)}

    @classmethod
    def from_state(cls, state: dict) -> AUReadout:
        return cls(tuple(int(u) for u in state["units"]), state["weights"].numpy(), state["bias"].numpy())
