"""The processed clip table as training data: micro clips in memory, macro clips streamed.

Micro data sets are small (hundreds of clips), so `load_micro_clips` reads every sampled
frame of every labelled clip at once, with its motion from the `features` stage when
asked. Macro pre-training data may not fit in memory, so `MacroClipStream` reads it one
Parquet row group at a time, shuffled, split across DataLoader workers, and
`MacroFramePairs` draws MA2MI's frame pairs (and their flow) from it inside the loader.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from mer_core.data.motion import move_along_flow, optical_flow, pair_motion
from mer_core.data.store import frames_to_numpy, read_clips, shard_paths

_MICRO_COLUMNS = ["clip_id", "dataset", "subject", "kind", "label", "label3", "apex", "frame_indices", "frames",
                  "action_units"]


@dataclass
class MicroClips:
    """Labelled micro clips as tensors; index i of every field is the same clip.

    The frames are the T sampled onset→apex→offset with the apex at `apex_index`, as
    ingest samples them; `motion` (from the `features` stage) is the (u, v, strain) of
    every frame against the onset, or None when not loaded.
    """

    clip_ids: list[str]
    datasets: list[str]
    subjects: list[str]  # dataset-qualified, so subjects stay distinct across data sets
    labels: torch.Tensor  # (N,) int64 index into `classes`
    classes: list[str]
    frames: torch.Tensor  # (N, T, H, W, C) uint8
    apex_index: torch.Tensor  # (N,) int64: where the apex sits among the T frames
    action_units: list[str]
    motion: torch.Tensor | None = None  # (N, T-1, H, W, 3) float16: frame k+1 against frame 0

    def __len__(self) -> int:
        return len(self.clip_ids)

    @property
    def img_size(self) -> int:
        return int(self.frames.shape[2])

    @property
    def onset(self) -> torch.Tensor:
        """(N, H, W, C) uint8: the first sampled frame."""
        return self.frames[:, 0]

    @property
    def apex(self) -> torch.Tensor:
        """(N, H, W, C) uint8: the apex frame."""
        return self.frames[torch.arange(len(self)), self.apex_index]

    def motion_at(self, rows: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float32: the onset→`frame` (u, v, strain) of clips `rows`, one frame index each."""
        if self.motion is None:
            raise ValueError("these clips were loaded without their motion; pass the features folder")
        step = (frame - 1).clamp_min(0)  # a frame on the onset has the least motion there is
        return self.motion[rows, step].float().permute(0, 3, 1, 2)


def apex_position(frame_indices: list[int], apex: int | None) -> int:
    """Where the apex frame sits among a clip's sampled frames (nearest one if not sampled)."""
    if apex is None:
        return len(frame_indices) // 2
    return int(np.argmin([abs(i - apex) for i in frame_indices]))


def load_micro_clips(clips_dir: Path, datasets: list[str], label_column: str | None = "label",
                     features_dir: Path | None = None) -> MicroClips:
    """Read the labelled micro clips of `datasets` from `clips_dir/<dataset>/`, and with
    `features_dir` their motion from `features_dir/<dataset>/` (matched by clip id).

    Clips without a label under `label_column` (e.g. classes outside the composite
    protocol) are left out; with `label_column` None every micro clip is read (the
    action-unit task), an unlabelled one with label -1.

    Raises:
        ValueError: no labelled micro clip, or a clip without its motion.
    """
    rows: list[dict] = []
    frames, apexes, motions = [], [], []
    for dataset in datasets:
        table = read_clips(Path(clips_dir) / dataset, columns=_MICRO_COLUMNS)
        clip_frames = frames_to_numpy(table.column("frames"))  # (N, T, H, W, C)
        motion = read_motion(Path(features_dir) / dataset) if features_dir is not None else None
        for i, row in enumerate(table.drop_columns(["frames"]).to_pylist()):
            if row["kind"] != "micro" or (label_column is not None and row[label_column] is None):
                continue
            rows.append(row)
            frames.append(clip_frames[i])
            apexes.append(apex_position(row["frame_indices"], row["apex"]))
            if motion is not None:
                if row["clip_id"] not in motion:
                    raise ValueError(f"clip {row['clip_id']} of {dataset} has no motion in {features_dir}; "
                                     "re-run the features stage")
                motions.append(motion[row["clip_id"]])
    if not rows:
        raise ValueError(f"no labelled micro clips under {clips_dir} for data sets {datasets}")
    labels = [r[label_column or "label"] for r in rows]
    classes = sorted({label for label in labels if label is not None})
    return MicroClips(
        clip_ids=[r["clip_id"] for r in rows],
        datasets=[r["dataset"] for r in rows],
        subjects=[f"{r['dataset']}/{r['subject']}" for r in rows],
        labels=torch.tensor([classes.index(label) if label is not None else -1 for label in labels]),
        classes=classes,
        frames=torch.from_numpy(np.stack(frames)),
        apex_index=torch.tensor(apexes),
        action_units=[r["action_units"] or "" for r in rows],
        motion=torch.from_numpy(np.stack(motions)) if motions else None,
    )


def read_motion(directory: Path) -> dict[str, np.ndarray]:
    """clip id → its (T-1, H, W, 3) float16 motion, from the features stage's shards."""
    table = read_clips(directory, columns=["clip_id", "motion"])
    return dict(zip(table.column("clip_id").to_pylist(), frames_to_numpy(table.column("motion"))))


class MacroClipStream(IterableDataset):
    """Macro clips (T, H, W, C) uint8, streamed by Parquet row group in a seeded shuffle.

    Each epoch (`set_epoch`) reshuffles the row groups and the clips inside each. The
    shuffled groups are dealt out like cards: with `world_size` training processes rank r
    reads every world_size-th group from the r-th, and with DataLoader workers worker w
    of a rank every workers-th of those, so no clip is read twice. Each group's clip order
    is seeded by (seed, epoch, group) alone, so the order within a group does not depend
    on which process or worker reads it.
    """

    def __init__(self, clips_dirs: list[Path], seed: int = 0, rank: int = 0, world_size: int = 1):
        self.groups = [(path, g) for d in clips_dirs for path in shard_paths(Path(d))
                       for g in range(pq.ParquetFile(path).num_row_groups)]
        if not self.groups:
            raise ValueError(f"no clip shards under {[str(d) for d in clips_dirs]}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size} processes")
        self.seed, self.rank, self.world_size = seed, rank, world_size
        # In shared memory: persistent DataLoader workers hold copies of this object made
        # when they started, and would otherwise read epoch 0's shuffle every epoch.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        # Macro clips per group, from the `kind` column alone: long videos put micro and
        # macro clips in one table, and the step count of every rank is planned from these.
        self.macro_counts = [_macro_rows(path, g) for path, g in self.groups]
        self.clips = sum(self.macro_counts)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def epoch_groups(self, rank: int, worker: int = 0, workers: int = 1) -> list[int]:
        """Indices into `self.groups` that `worker` of `rank` reads this epoch, in reading order."""
        shuffled = random.Random(self.seed * 1_000_003 + self.epoch).sample(range(len(self.groups)), len(self.groups))
        return shuffled[rank::self.world_size][worker::workers]

    def batches_per_rank(self, batch_size: int, workers: int = 1) -> list[int]:
        """How many batches of `batch_size` each rank's DataLoader with `workers` workers
        (1 for none) yields this epoch: each worker batches its own clips, its last batch partial."""
        return [sum(-(-sum(self.macro_counts[i] for i in self.epoch_groups(rank, w, workers)) // batch_size)
                    for w in range(workers)) for rank in range(self.world_size)]

    def keyed_clips(self):
        """(key, clip) for this process's share of the epoch; the key (group index, row)
        names the clip the same way whichever rank or worker reads it."""
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for index in self.epoch_groups(self.rank, worker, workers):
            path, group = self.groups[index]
            table = pq.ParquetFile(path).read_row_group(group, columns=["kind", "frames"])
            frames = frames_to_numpy(table.column("frames"))
            kinds = table.column("kind").to_pylist()
            rng = random.Random(f"{self.seed}:{self.epoch}:{index}")
            for row in rng.sample(range(len(frames)), len(frames)):
                if kinds[row] == "macro":
                    yield (index, row), torch.from_numpy(frames[row].copy())

    def __iter__(self):
        return (clip for _, clip in self.keyed_clips())


def _macro_rows(path: Path, group: int) -> int:
    kinds = pq.ParquetFile(path).read_row_group(group, columns=["kind"]).column("kind").to_pylist()
    return sum(kind == "macro" for kind in kinds)


class MacroFramePairs(IterableDataset):
    """Pre-training samples from a `MacroClipStream`: per macro clip one frame pair
    (x_t, x_{t+k}), k uniform in [1, max_step], t uniform where it fits, as
    `{"current", "future"}` uint8 (H, W, C), and with a `flow` method their motion
    `"motion"` (3, H, W) float32 (u, v, strain).

    With `micro_scale` (low, high), the macro step is shrunk to a micro-expression's size
    before anything reads it: "future" becomes x_t moved by a fraction s ~ U(low, high) of
    the step's estimated flow, plus fresh sensor noise of `micro_noise` grey levels, and
    the real x_{t+k} is kept as `"target"` — what the subtle movement grows into. With
    `flow_target`, the step's flow x_t → x_{t+k} comes too, `"target_flow"` (2, H, W).

    Drawn here, in the DataLoader's workers when it has them, so only two frames per clip
    travel to the device and the flow is estimated beside training, not inside it. The
    draw is seeded by (seed, epoch, clip): a run resumed at an epoch sees the same pairs,
    with any number of loader workers or training processes, and no two clips share a draw.
    """

    def __init__(self, clips: MacroClipStream, max_step: int, flow: str | None = None, seed: int = 0,
                 micro_scale: tuple[float, float] | None = None, micro_noise: float = 0.0,
                 flow_target: bool = False):
        self.stream, self.max_step, self.flow, self.seed = clips, max_step, flow, seed
        self.micro_scale, self.micro_noise, self.flow_target = micro_scale, micro_noise, flow_target

    @property
    def clips(self) -> int:
        return self.stream.clips

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)

    def _shrunk(self, current: np.ndarray, step_flow: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """x_t moved a micro-scale fraction of its step's flow, with its own sensor noise."""
        moved = move_along_flow(current, step_flow, rng.uniform(*self.micro_scale))
        noisy = moved + rng.normal(0.0, self.micro_noise, moved.shape) if self.micro_noise else moved
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)

    def __iter__(self):
        for (group, row), clip in self.stream.keyed_clips():  # (T, H, W, C) uint8
            rng = np.random.default_rng([self.seed, self.stream.epoch, group, row])
            step = int(rng.integers(1, min(self.max_step, len(clip) - 1) + 1))
            start = int(rng.integers(0, len(clip) - step))
            pair = {"current": clip[start], "future": clip[start + step]}
            step_flow = None
            if self.micro_scale is not None or self.flow_target:
                step_flow = optical_flow(clip[start].numpy(), clip[start + step].numpy(), self.flow or "farneback")
            if self.flow_target:
                pair["target_flow"] = torch.from_numpy(step_flow.transpose(2, 0, 1).copy())
            if self.micro_scale is not None:
                pair["target"] = pair["future"]
                pair["future"] = torch.from_numpy(self._shrunk(clip[start].numpy(), step_flow, rng))
            if self.flow is not None:
                motion = pair_motion(pair["current"].numpy(), pair["future"].numpy(), self.flow)
                pair["motion"] = torch.from_numpy(motion.transpose(2, 0, 1).copy())
            yield pair
