"""A task's per-epoch training recipe, made on the host for every backend alike.

A task may name a learning-rate schedule (`TaskSpec.schedule`, stepped once an epoch) and an
augmentation of its training images (`TaskSpec.augmentation`). Both are computed here, in
numpy and plain Python, from (task, seed, epoch), and handed to the backend at the epoch's
start (`Backend.begin_epoch(permutation, learning_rate=..., x_train=...)`): no framework's
scheduler or augmentation pipeline is involved, so every backend trains at the same rate on
the same pixels. A task with neither gets None for both and its epochs are as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.tasks import CropFlip, TaskSpec

AUGMENT_STREAM = 2_000_003  # keeps the augmentation's random stream apart from the order's


@dataclass(frozen=True)
class EpochRecipe:
    """What begin_epoch gets besides the order: the epoch's learning rate (None: the optimizer's
    constant one, nothing to set) and its training inputs (None: the ones set up)."""

    learning_rate: float | None
    x_train: np.ndarray | None


def epoch_learning_rate(task: TaskSpec, epoch: int) -> float | None:
    """The rate epoch `epoch` (0-based) trains at, or None for a task without a schedule."""
    if task.schedule is None:
        return None
    return task.schedule.learning_rate(task.optimizer.learning_rate, epoch)


def crop_flip(x: np.ndarray, spec: CropFlip, seed: int, epoch: int) -> np.ndarray:
    """torchvision's RandomCrop(H, padding=p) + RandomHorizontalFlip() of images (N, H, W, C):
    sample i is the (H, W) window at offset (top, left) in [0, 2p] of its zero-padded image,
    i.e. shifted by (top - p, left - p), then mirrored left-right when its flip is drawn. The
    draws come from (seed, epoch) alone, so every backend sees the same images.

    Written with numpy slicing rather than torchvision's transforms: those work one PIL image or
    tensor at a time (50,000 calls an epoch) and would make torch a dependency of every
    backend's data; this pads nothing and gathers each of the (2p + 1)^2 shifts' samples once.
    """
    count, height, width = x.shape[:3]
    pad, span = spec.padding, 2 * spec.padding + 1
    rng = np.random.default_rng([seed, AUGMENT_STREAM, epoch])
    tops = rng.integers(0, span, size=count)
    lefts = rng.integers(0, span, size=count)
    flips = rng.random(count) < 0.5
    # A flipped crop is the crop of the mirrored image at the mirrored offset: out[r, c] =
    # x[r + dy, W - 1 - c + dx] = mirrored[r + dy, c - dx]. So each (dy, dx, flip) group is one
    # gather of its samples, mirrored or not, and one slice assignment.
    draws = np.stack([tops - pad, np.where(flips, pad - lefts, lefts - pad), flips], axis=1)
    groups, which = np.unique(draws, axis=0, return_inverse=True)  # each (dy, dx, flip) drawn
    out = np.zeros_like(x)
    for index, (dy, dx, flip) in enumerate(groups.tolist()):
        group = np.flatnonzero(which.ravel() == index)
        source = x[:, :, ::-1] if flip else x
        # out[r, c] = source[r + dy, c + dx] where that lies inside the image, else 0
        rows_out = slice(max(0, -dy), height - max(0, dy))
        cols_out = slice(max(0, -dx), width - max(0, dx))
        rows_in = slice(max(0, dy), height + min(0, dy))
        cols_in = slice(max(0, dx), width + min(0, dx))
        out[group, rows_out, cols_out] = source[group, rows_in, cols_in]
    return out


def epoch_recipe(task: TaskSpec, seed: int, epoch: int, x_train: np.ndarray) -> EpochRecipe:
    """The epoch's learning rate and training inputs for `task` (x_train: the run's training
    images as set up, never modified)."""
    augmented = None
    if task.augmentation is not None:
        if x_train.ndim != 4:
            raise ValueError(f"{task.name}: crop-and-flip augmentation needs images (N, H, W, C)")
        augmented = crop_flip(x_train, task.augmentation, seed, epoch)
    return EpochRecipe(epoch_learning_rate(task, epoch), augmented)
