"""Task specs: what to train, written once for every backend.

A task is data (a frozen dataclass): dataset, model as IR layers (bench/layers.py), loss,
optimizer, batch size, epochs, accuracy target and where that target came from. Variants are
`dataclasses.replace(task, ...)`. `bench list` prints the registry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.data import DATASETS
from bench.layers import (
    LSTM,
    BatchNorm,
    Conv2D,
    Dense,
    Embedding,
    Flatten,
    GlobalAveragePooling2D,
    Layer,
    LayerNorm,
    MaskedMeanPool,
    MaxPool2D,
    MultiHeadSelfAttention,
    PositionEmbedding,
    Residual,
    Shape,
    count_params,
    forward_flops,
)


@dataclass(frozen=True)
class Adam:
    """Adam as torch and optax define it: eps added to sqrt(v_hat), no weight decay."""

    learning_rate: float = 1e-3
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8  # torch and optax default (Keras' is 1e-7; the spec fixes it for all)


@dataclass(frozen=True)
class SGD:
    """SGD with momentum as torch.optim.SGD defines it (dampening 0), the same in every backend.

    Weight decay is coupled L2, added to the gradient before the momentum, as torch.optim.SGD
    and kuangliu/pytorch-cifar's recipe apply it, to every trainable parameter:
      g = grad + weight_decay * p;  buf = momentum * buf + g  (buf = g at the first step)
      p -= learning_rate * (g + momentum * buf if nesterov else buf)
    optax.sgd's trace is this; Keras' SGD keeps velocity = -learning_rate * buf (equal at a
    constant learning rate) and decays weights decoupled, so the Keras backend adds the decay
    to the gradient itself. The learning rate is this constant, or each epoch's value of the
    task's `schedule` (CosineEpochs), set by every backend at the epoch's start.
    """

    learning_rate: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0


Optimizer = Adam | SGD


@dataclass(frozen=True)
class CosineEpochs:
    """Cosine annealing stepped once an epoch, as torch.optim.lr_scheduler.CosineAnnealingLR
    (eta_min 0) with `scheduler.step()` after each epoch (kuangliu/pytorch-cifar's main.py):
    epoch e (0-based) trains at base * (1 + cos(pi * e / epochs)) / 2, constant within it.
    Past `epochs` it keeps rising again, as torch's does. Every backend sets the rate at the
    epoch's start (bench/recipe.py computes it; the backends never compute a schedule)."""

    epochs: int

    def learning_rate(self, base: float, epoch: int) -> float:
        return base * (1.0 + math.cos(math.pi * epoch / self.epochs)) / 2.0


@dataclass(frozen=True)
class CropFlip:
    """Random-crop and horizontal-flip augmentation of the training images, as torchvision's
    RandomCrop(size, padding=padding) (zero padding) then RandomHorizontalFlip(0.5): each sample
    of each epoch shifted by (dy, dx) in [-padding, padding] with zeros filled in, and mirrored
    with probability 1/2. Made on the host in numpy from (seed, epoch), so every backend trains
    on the same pixels (bench/recipe.py); the test split is never augmented."""

    padding: int = 4


@dataclass(frozen=True)
class TaskSpec:
    name: str
    dataset: str  # a key of bench.data.DATASETS
    layers: tuple[Layer, ...]
    batch_size: int
    epochs: int
    target_accuracy: float | None  # test accuracy that counts as "trained"
    target_source: str  # where the target comes from (a measurement here, or a reference)
    optimizer: Optimizer = Adam()
    loss: str = "softmax_cross_entropy"  # mean over the batch, from integer labels and logits
    seed: int = 0
    description: str = ""
    schedule: CosineEpochs | None = None  # None: the optimizer's constant learning rate
    augmentation: CropFlip | None = None  # None: the training images as they are

    @property
    def input_shape(self) -> Shape:
        return DATASETS[self.dataset].input_shape

    @property
    def num_classes(self) -> int:
        return DATASETS[self.dataset].num_classes

    @property
    def param_count(self) -> int:
        return count_params(self.layers, self.input_shape)

    @property
    def flops_per_sample(self) -> int:
        """Forward FLOPs per sample; a training step costs about 3x this (forward + backward)."""
        return forward_flops(self.layers, self.input_shape)


SMALL_CNN = (
    Conv2D(32, 3),
    MaxPool2D(2),
    Flatten(),
    Dense(64, activation="relu"),
    Dense(10),
)

CIFAR_CNN = (
    Conv2D(32, 3),
    MaxPool2D(2),
    Conv2D(64, 3),
    MaxPool2D(2),
    Conv2D(64, 3),
    Flatten(),
    Dense(64, activation="relu"),
    Dense(10),
)


# AlgoPerf's MNIST workload model (mlcommons/algorithmic-efficiency, commit 2c90454 of
# 2025-09-05, algoperf/workloads/mnist/mnist_jax/workload.py and mnist_pytorch/workload.py):
# flatten, Dense 128 with bias, sigmoid, Dense 10.
MNIST_MLP_LAYERS = (Flatten(), Dense(128, activation="sigmoid"), Dense(10))


def basic_block(filters: int, stride: int, project: bool) -> Residual:
    """ResNet's BasicBlock (He et al., 2016, as kuangliu/pytorch-cifar writes it): 3x3 conv
    (stride `stride`) - BN - relu - 3x3 conv - BN, plus the shortcut (a 1x1 conv of that stride
    and BN where the shape changes, else the identity), then relu. Convolutions have no bias."""

    def conv(size: int, stride: int, padding: str) -> Conv2D:
        return Conv2D(filters, size, padding, activation=None, strides=stride, use_bias=False)

    body = (conv(3, stride, "same"), BatchNorm(activation="relu"), conv(3, 1, "same"), BatchNorm())
    shortcut = (conv(1, stride, "valid"), BatchNorm()) if project else ()
    return Residual(body, shortcut, activation="relu")


def cifar_resnet(
    widths: tuple[int, ...] = (64, 128, 256, 512),
    blocks: tuple[int, ...] = (2, 2, 2, 2),
    num_classes: int = 10,
) -> tuple[Layer, ...]:
    """The CIFAR ResNet (kuangliu/pytorch-cifar's ResNet18 by default): a 3x3 stem conv
    (no bias) - BN - relu, no max-pool, stages of BasicBlocks whose first block strides by 2
    from the second stage on, global average pool, Dense. BatchNorm: torch's defaults
    (momentum 0.1 in torch's convention, 0.9 in the IR's; epsilon 1e-5)."""
    stem = (
        Conv2D(widths[0], 3, "same", activation=None, use_bias=False),
        BatchNorm(activation="relu"),
    )
    layers: list[Layer] = list(stem)
    channels = widths[0]
    for stage, (width, count) in enumerate(zip(widths, blocks)):
        for block in range(count):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(basic_block(width, stride, project=stride != 1 or channels != width))
            channels = width
    return (*layers, GlobalAveragePooling2D(), Dense(num_classes))


def text_classifier(vocab_size: int = 20000) -> tuple[Layer, ...]:
    return (Embedding(vocab_size, 128), LSTM(128), Dense(2))


def transformer_classifier(
    vocab_size: int = 20000, width: int = 128, heads: int = 4, mlp: int = 512, blocks: int = 2
) -> tuple[Layer, ...]:
    """Token + learned position embeddings, `blocks` pre-LayerNorm encoder blocks
    (x + attention(LN(x)), then x + MLP(LN(x)) with an exact-GELU hidden layer), a final
    LayerNorm (the pre-LN design's, as in GPT-2 and ViT), the mean over the non-padding tokens,
    Dense 2. No dropout (a rate-0 dropout is no layer at all)."""
    attention = Residual((LayerNorm(), MultiHeadSelfAttention(heads)))
    feed_forward = Residual((LayerNorm(), Dense(mlp, activation="gelu"), Dense(width)))
    encoder = (attention, feed_forward) * blocks
    head = (LayerNorm(), MaskedMeanPool(), Dense(2))
    return (Embedding(vocab_size, width), PositionEmbedding(), *encoder, *head)


MNIST_CNN = TaskSpec(
    name="mnist_cnn",
    dataset="mnist",
    layers=SMALL_CNN,
    batch_size=64,
    epochs=5,
    target_accuracy=0.98,
    target_source=(
        "issue #2 (seed model); measured 2026-11-24, torch fp32 CPU seed 0: 0.9737 after "
        "epoch 1, 0.9816 after epoch 3, 0.9842 final"
    ),
    description="MNIST, Conv32-Pool-Dense64-Dense10 (347,146 parameters)",
)

MNIST_MLP = TaskSpec(
    name="mnist_mlp",
    dataset="mnist",
    layers=MNIST_MLP_LAYERS,
    batch_size=64,
    epochs=10,
    target_accuracy=0.97,
    target_source=(
        "AlgoPerf's MNIST workload (mlcommons/algorithmic-efficiency, commit 2c90454, "
        "algoperf/workloads/mnist/workload.py: validation and test target 0.97; step_hint is "
        "10 epochs at batch size 64; model Dense 128-sigmoid-Dense 10); measured 2026-12-01, "
        "torch fp32 CPU (AMD EPYC, 1 thread), seeds 0-4: final 0.9745, 0.9731, 0.9744, "
        "0.9746, 0.9749 (mean 0.9743), every seed at 0.97 by epoch 7 or 8"
    ),
    description="MNIST, Flatten-Dense128(sigmoid)-Dense10 (101,770 parameters), AlgoPerf's MLP",
)

FASHION_MNIST_CNN = TaskSpec(
    name="fashion_mnist_cnn",
    dataset="fashion_mnist",
    layers=SMALL_CNN,
    batch_size=64,
    epochs=5,
    target_accuracy=0.89,
    target_source=(
        "measured 2026-11-24, torch fp32 CPU seed 0: 0.8894 after epoch 2, 0.8977 after "
        "epoch 3, 0.9041 final; target set a point below the final accuracy"
    ),
    description="Fashion-MNIST, the MNIST CNN",
)

CIFAR10_CNN = TaskSpec(
    name="cifar10_cnn",
    dataset="cifar10",
    layers=CIFAR_CNN,
    batch_size=32,
    epochs=10,
    target_accuracy=0.68,
    target_source=(
        "reference, not measured here (no CIFAR-10 offline): the TensorFlow CNN tutorial's "
        "identical model reaches about 0.70 after 10 epochs"
    ),
    description="CIFAR-10, Conv32-Pool-Conv64-Pool-Conv64-Dense64-Dense10",
)

SST2_LSTM = TaskSpec(
    name="sst2_lstm",
    dataset="sst2",
    layers=text_classifier(),
    batch_size=64,
    epochs=3,
    target_accuracy=0.81,
    target_source=(
        "measured 2026-12-01, torch 2.13 fp32 eager CPU (AMD EPYC, 1 thread), seeds 0-4: "
        "final dev accuracy 0.8154, 0.8165, 0.8268, 0.8211, 0.8326 (mean 0.8225, 95% CI "
        "0.8135-0.8314; it overfits after epoch 1, best 0.8303-0.8394); target a little below "
        "the lowest final accuracy"
    ),
    description="SST-2 (dev split as test), Embedding(20000,128)-LSTM(128)-Dense(2), 64 tokens",
)

IMDB_LSTM = TaskSpec(
    name="imdb_lstm",
    dataset="imdb",
    layers=text_classifier(),
    batch_size=64,
    epochs=3,
    target_accuracy=0.83,
    target_source=(
        "measured 2026-12-01, torch 2.13 fp32 eager CPU (AMD EPYC, 1 thread), seeds 0-4: "
        "final test accuracy 0.8618, 0.8506, 0.8476, 0.8404, 0.8595 (mean 0.8520, 95% CI "
        "0.8410-0.8629; best 0.8542-0.8683, seed 3 at 0.8170 after epoch 1); target a point "
        "below the lowest final accuracy (it was 0.85, from seed 0 alone)"
    ),
    description="IMDB reviews, Embedding(20000,128)-LSTM(128)-Dense(2), last 200 tokens",
)

TRANSFORMER_DESCRIPTION = (
    "Embedding(20000,128)+positions, 2 pre-LN encoder blocks (4 heads, MLP 512, GELU), "
    "LayerNorm, mean over the tokens, Dense(2)"
)

SST2_TRANSFORMER = TaskSpec(
    name="sst2_transformer",
    dataset="sst2",
    layers=transformer_classifier(),
    batch_size=64,
    epochs=3,
    target_accuracy=0.79,
    target_source=(
        "measured 2026-12-02/03, every backend in its default mode, fp32 CPU (Intel Xeon VM, 1 "
        "thread pinned to one core), seeds 0-2, 3 epochs (docs/MEASUREMENTS.md, 'The SST-2 "
        "transformer'): final dev accuracy 0.7936-0.8188 over the 15 runs (mean 0.8042), best "
        "0.8050-0.8303, every run past 0.80 in epoch 1; target a point below the lowest final "
        "accuracy, as the LSTMs' (it was 0.80, from torch's seed 0 after one epoch)"
    ),
    description=f"SST-2 (dev split as test), {TRANSFORMER_DESCRIPTION}, 64 tokens",
)

IMDB_TRANSFORMER = TaskSpec(
    name="imdb_transformer",
    dataset="imdb",
    layers=transformer_classifier(),
    batch_size=64,
    epochs=3,
    target_accuracy=0.84,
    target_source=(
        "measured 2026-12-03, torch 2.13 fp32 eager CPU (Intel Xeon VM, 1 thread, one core), "
        "seed 0, 3 epochs (results/cpu/2026-12-03-imdb-transformer-torch): test accuracy "
        "0.8665, 0.8640, 0.8558 after epochs 1-3; target a point below the final accuracy, as "
        "the LSTMs' (one seed only: other seeds and backends not measured yet)"
    ),
    description=f"IMDB reviews, {TRANSFORMER_DESCRIPTION}, last 200 tokens",
)

CIFAR10_RESNET18 = TaskSpec(
    name="cifar10_resnet18",
    dataset="cifar10",
    layers=cifar_resnet(),
    batch_size=128,
    epochs=200,
    target_accuracy=0.93,
    target_source=(
        "reference, not measured here (no CIFAR-10 offline; 200 epochs of ResNet-18 are days on "
        "a CPU): kuangliu/pytorch-cifar (github.com/kuangliu/pytorch-cifar, README and main.py), "
        "whose ResNet18 reports 93.02% test accuracy with this recipe: SGD lr 0.1, momentum "
        "0.9, weight decay 5e-4, batch 128, CosineAnnealingLR(T_max=200) stepped per epoch, "
        "200 epochs, RandomCrop(32, padding=4) + RandomHorizontalFlip; target set just below "
        "it. Unlike that script, the inputs are not normalized per channel (every task's "
        "images are [0, 1]; the stem's BatchNorm follows the first convolution)"
    ),
    optimizer=SGD(learning_rate=0.1, momentum=0.9, weight_decay=5e-4),
    schedule=CosineEpochs(epochs=200),
    augmentation=CropFlip(padding=4),
    description=(
        "CIFAR-10, ResNet-18 (3x3 stem, BasicBlocks [2,2,2,2] at 64-512, BatchNorm, global "
        "average pool; 11,173,962 parameters), SGD momentum 0.9 wd 5e-4, lr 0.1 cosine over "
        "200 epochs, crop+flip"
    ),
)

TASKS: dict[str, TaskSpec] = {
    task.name: task
    for task in (
        MNIST_CNN,
        MNIST_MLP,
        FASHION_MNIST_CNN,
        CIFAR10_CNN,
        CIFAR10_RESNET18,
        SST2_LSTM,
        IMDB_LSTM,
        SST2_TRANSFORMER,
        IMDB_TRANSFORMER,
    )
}


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}") from None
