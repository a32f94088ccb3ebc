"""A plain numpy forward pass of the IR, the yardstick every backend's logits are held to.

Written from the canonical layout's definition (bench/layers.py) and nothing else, so a backend
that agrees with it maps flatten order, kernel layout and LSTM gates the way the IR means them.
"""

from __future__ import annotations

import os

import numpy as np
from scipy.special import erf

from bench.layers import (
    LSTM,
    BatchNorm,
    Conv2D,
    Dense,
    Embedding,
    Flatten,
    GlobalAveragePooling2D,
    LayerNorm,
    MaskedMeanPool,
    MaxPool2D,
    MultiHeadSelfAttention,
    PositionEmbedding,
    Residual,
    layer_name,
    padding_mask,
)
from bench.tasks import SGD, CosineEpochs, CropFlip, TaskSpec, cifar_resnet

# The frameworks' CPU threads in every test that trains: one. The tests share CI's two cores
# with each other (two pytest-xdist workers) and with the quick suite, and a framework's thread
# pool slows down when its threads outnumber the free cores (measured: torch's contract probe
# beside two busy processes, 1 thread / 2 threads x0.61 over two alternated pairs). The probes
# started with worker_environment(...threads=THREADS) read it back from OMP_NUM_THREADS.
THREADS = 1


def probe_threads() -> int:
    """A probe process's threads: those its environment was made for (bench.cell's
    worker_environment sets OMP_NUM_THREADS), else THREADS."""
    return int(os.environ.get("OMP_NUM_THREADS") or THREADS)


MASKED_SCORE = -1e9  # added to a padding key's attention score (bench/layers.py)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def conv2d_valid(x: np.ndarray, kernel: np.ndarray, bias, stride: int = 1) -> np.ndarray:
    """x (N, H, W, C), kernel (kh, kw, C, F) -> (N, (H-kh)//s+1, (W-kw)//s+1, F); bias or None."""
    kh, kw, _, _ = kernel.shape
    out_h, out_w = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[3]), np.float64)
    span_h, span_w = (out_h - 1) * stride + 1, (out_w - 1) * stride + 1
    for i in range(kh):
        for j in range(kw):
            window = x[:, i : i + span_h : stride, j : j + span_w : stride, :]
            out += np.einsum("nhwc,cf->nhwf", window, kernel[i, j])
    return out if bias is None else out + bias


def conv2d(x: np.ndarray, layer: Conv2D, kernel: np.ndarray, bias) -> np.ndarray:
    """The IR's Conv2D: its zero padding (bench/layers.py says which pixels), then a valid conv."""
    (top, bottom), (left, right) = layer.padding_amounts(x.shape[1:])
    padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    return conv2d_valid(padded, kernel, bias, layer.strides)


def batch_norm(x: np.ndarray, w: dict, name: str, layer: BatchNorm, train: bool) -> np.ndarray:
    """Training: the batch's mean and biased variance over every axis but the last; else the
    moving statistics (bench/layers.py's BatchNorm)."""
    axes = tuple(range(x.ndim - 1))
    if train:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    else:
        mean, var = w[f"{name}/moving_mean"], w[f"{name}/moving_variance"]
    normalized = (x - mean) / np.sqrt(var + layer.epsilon)
    return normalized * w[f"{name}/gamma"] + w[f"{name}/beta"]


def batch_norm_update(layers, weights: dict, x: np.ndarray) -> dict[str, np.ndarray]:
    """The moving statistics after one training step's forward on x: what every backend's
    BatchNorm state must hold after that step (float64)."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    updated: dict[str, np.ndarray] = {}
    chain(layers, w, x.astype(np.float64), train=True, updates=updated)
    return updated


def max_pool(x: np.ndarray, size: int) -> np.ndarray:
    n, h, w, c = x.shape
    h, w = h // size, w // size
    x = x[:, : h * size, : w * size, :].reshape(n, h, size, w, size, c)
    return x.max(axis=(2, 4))


def lstm_last(x: np.ndarray, kernel, recurrent, bias) -> np.ndarray:
    units = recurrent.shape[0]
    hidden = np.zeros((x.shape[0], units))
    cell = np.zeros((x.shape[0], units))
    for t in range(x.shape[1]):
        z = x[:, t] @ kernel + hidden @ recurrent + bias
        i, f, g, o = (z[:, k * units : (k + 1) * units] for k in range(4))
        cell = sigmoid(f) * cell + sigmoid(i) * np.tanh(g)
        hidden = sigmoid(o) * np.tanh(cell)
    return hidden


def layer_norm(x: np.ndarray, gamma, beta, epsilon: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    variance = x.var(axis=-1, keepdims=True)  # biased
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


def self_attention(x: np.ndarray, mask: np.ndarray | None, w: dict, name: str) -> np.ndarray:
    """x (N, T, D), mask (N, T) True at tokens; kernels (D, H, hd), output kernel (H, hd, D)."""
    q, k, v = (
        np.einsum("ntd,dhe->nhte", x, w[f"{name}/{p}_kernel"]) + w[f"{name}/{p}_bias"][:, None]
        for p in ("query", "key", "value")
    )
    scores = np.einsum("nhqe,nhke->nhqk", q, k) / np.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + np.where(mask[:, None, None, :], 0.0, MASKED_SCORE)
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    probabilities = scores / scores.sum(axis=-1, keepdims=True)
    heads = np.einsum("nhqk,nhke->nqhe", probabilities, v)
    return np.einsum("nqhe,hed->nqd", heads, w[f"{name}/output_kernel"]) + w[f"{name}/output_bias"]


def masked_mean(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    weights = np.ones(x.shape[:2]) if mask is None else mask.astype(np.float64)
    return (x * weights[..., None]).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)[:, None]


def forward(
    layers, weights: dict[str, np.ndarray], x: np.ndarray, train: bool = False, use_mask=True
):
    """Logits in float64 for a batch x (images NHWC float, or token ids); `train`: BatchNorm
    normalizes with the batch's statistics, as in a training step; `use_mask=False` ignores the
    padding mask (what a backend that dropped it would compute: tests only)."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    mask = padding_mask(x) if use_mask and x.dtype.kind in "iu" else None
    h = x if x.dtype.kind in "iu" else x.astype(np.float64)
    return chain(layers, w, h, train=train, mask=mask)


def chain(
    layers,
    w,
    h,
    prefix: str = "",
    train: bool = False,
    updates: dict | None = None,
    mask: np.ndarray | None = None,
):
    """Layers in order; a weight is found by its path (`prefix` inside a Residual). With
    `updates`, each BatchNorm's new moving statistics are written there (train only). `mask`
    is the padding mask (None for images, or to ignore it)."""
    for index, layer in enumerate(layers):
        name = prefix + layer_name(index, layer)
        if isinstance(layer, Conv2D):
            h = conv2d(h, layer, w[f"{name}/kernel"], w.get(f"{name}/bias"))
        elif isinstance(layer, MaxPool2D):
            h = max_pool(h, layer.pool_size)
        elif isinstance(layer, Flatten):
            h = h.reshape(h.shape[0], -1)
        elif isinstance(layer, Dense):
            h = h @ w[f"{name}/kernel"] + w[f"{name}/bias"]
        elif isinstance(layer, Embedding):
            h = w[f"{name}/embeddings"][h]
        elif isinstance(layer, LSTM):
            h = lstm_last(h, w[f"{name}/kernel"], w[f"{name}/recurrent_kernel"], w[f"{name}/bias"])
        elif isinstance(layer, PositionEmbedding):
            h = h + w[f"{name}/embeddings"]
        elif isinstance(layer, LayerNorm):
            h = layer_norm(h, w[f"{name}/gamma"], w[f"{name}/beta"], layer.epsilon)
        elif isinstance(layer, MultiHeadSelfAttention):
            h = self_attention(h, mask, w, name)
        elif isinstance(layer, MaskedMeanPool):
            h = masked_mean(h, mask)
        elif isinstance(layer, Residual):
            body = chain(layer.body, w, h, f"{name}/body/", train, updates, mask)
            h = body + chain(layer.shortcut, w, h, f"{name}/shortcut/", train, updates, mask)
        elif isinstance(layer, BatchNorm):
            if updates is not None:
                axes, keep = tuple(range(h.ndim - 1)), layer.momentum
                for stat, value in (("mean", h.mean(axis=axes)), ("variance", h.var(axis=axes))):
                    key = f"{name}/moving_{stat}"
                    updates[key] = keep * w[key] + (1 - keep) * value
            h = batch_norm(h, w, name, layer, train)
        elif isinstance(layer, GlobalAveragePooling2D):
            h = h.mean(axis=(1, 2))
        else:
            raise NotImplementedError(type(layer).__name__)
        h = ACTIVATIONS[getattr(layer, "activation", None)](h)
    return h


ACTIVATIONS = {
    None: lambda h: h,
    "relu": lambda h: np.maximum(h, 0.0),
    "sigmoid": sigmoid,
    "gelu": lambda h: 0.5 * h * (1.0 + erf(h / np.sqrt(2.0))),  # exact GELU
}


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def tiny_dataset(task, train: int = 256, test: int = 128, seed: int = 0):
    """A small random dataset with the task's shapes (class-dependent, so it is learnable).
    Texts are front-padded to random lengths, and each split's first text is all padding (SST-2
    has such texts), so every padding mask is exercised."""
    from bench.data import DATASETS, Dataset

    info = DATASETS[task.dataset]
    rng = np.random.default_rng(seed)

    def split(count: int):
        labels = rng.integers(0, info.num_classes, count).astype(np.int32)
        if info.kind == "text":
            x = rng.integers(2, info.vocab_size, (count, *info.input_shape)).astype(np.int32)
            x[:, -1] = labels + 2  # the last token gives the class away
            lengths = rng.integers(1, info.input_shape[0] + 1, count)
            lengths[0] = 0
            x[np.arange(info.input_shape[0]) < (info.input_shape[0] - lengths)[:, None]] = 0
        else:
            x = rng.random((count, *info.input_shape), dtype=np.float32)
            x[:, :4, :4, :] = labels[:, None, None, None] / info.num_classes
        return x, labels

    x_train, y_train = split(train)
    x_test, y_test = split(test)
    return Dataset(info, x_train, y_train, x_test, y_test, synthetic=True, source="tests")


# Tasks the parity and contract probes run besides bench.tasks.TASKS: small models that cover
# layers no benchmark task uses yet, or a benchmark model at a size the default test run affords.
TEST_TASKS = {
    task.name: task
    for task in (
        TaskSpec(
            name="test_tiny_residual",
            dataset="mnist",
            layers=(
                Conv2D(8, 3),
                Residual(
                    (Conv2D(8, 3), Conv2D(8, 1, activation=None)),
                    shortcut=(Conv2D(8, 3, activation=None),),
                    activation="relu",
                ),
                MaxPool2D(2),
                Residual(
                    (Flatten(), Dense(16)), shortcut=(Flatten(), Dense(16)), activation="relu"
                ),
                Residual((Dense(16, activation="relu"), Dense(16))),  # identity shortcut
                Dense(10),
            ),
            batch_size=16,
            epochs=1,
            target_accuracy=None,
            target_source="none: a test task (residual blocks: projection, flatten, identity)",
            # Nesterov, and a decay large enough that a backend that decoupled it, or left it
            # out, would move the parameters by more than the parity test's tolerance
            optimizer=SGD(learning_rate=0.05, momentum=0.9, nesterov=True, weight_decay=0.05),
        ),
        TaskSpec(
            name="test_tiny_resnet",
            dataset="cifar10",
            layers=cifar_resnet(widths=(4, 8, 8, 16), blocks=(1, 1, 1, 1)),
            batch_size=32,
            epochs=1,
            target_accuracy=None,
            target_source="none: cifar10_resnet18's block types at 1/16 of its widths, one "
            "block per stage (stage 1 with an identity shortcut, stages 2-4 strided with 1x1 "
            "projections)",
            # ResNet-18's optimizer at a rate where five fp32 steps stay well conditioned:
            # measured on torch, a 1e-6 relative change of the initial weights moves the
            # evaluation-mode logits after five steps by 5.7e-4 at lr 0.01, 3.7e-6 at 0.001
            optimizer=SGD(learning_rate=0.001, momentum=0.9, weight_decay=5e-4),
            # ResNet-18's recipe, over 3 epochs: the probe's epochs 1 and 2 train at 3/4 and
            # 1/4 of the rate (a Keras SGD velocity left unscaled at a new rate, or a rate not
            # set, moves the parameters past the tolerances) on crops and flips of the images
            schedule=CosineEpochs(epochs=3),
            augmentation=CropFlip(padding=4),
        ),
    )
}


# Registry tasks too heavy for the default test run's probes on a CPU (ResNet-18: 1.1 GFLOP
# per sample forward, ~10 s per batch-128 step on one core); the heavy tests probe them, at a
# small batch, and TEST_TASKS holds a reduced model of the same layers for the default run.
HEAVY_TASKS = {"cifar10_resnet18"}


def probe_tasks(register: bool = False, heavy: bool = False) -> dict:
    """The tasks a probe runs: the registry's (without HEAVY_TASKS unless `heavy`) and
    TEST_TASKS, each model once: a task whose model, input, batch and optimizer are an earlier
    task's (fashion_mnist_cnn is the MNIST CNN on other images of the same shape) would build
    and compile the same thing again for the same checks. register=True (in a probe's own
    process only, never in pytest's) adds TEST_TASKS to TASKS, so create_backend finds them."""
    from bench.tasks import TASKS

    if register:
        TASKS.update(TEST_TASKS)
    tasks, seen = {}, set()
    for name, task in {**TASKS, **TEST_TASKS}.items():
        model = (task.layers, task.input_shape, task.num_classes, task.batch_size, task.optimizer)
        if (heavy or name not in HEAVY_TASKS) and model not in seen:
            tasks[name] = task
            seen.add(model)
    return tasks
