"""Task specs: what to train, written once for every backend.

A task is data (a frozen dataclass): dataset, model as IR layers (bench/layers.py), loss,
optimizer, batch size, epochs, accuracy target and where that target came from. Variants are
`dataclasses.replace(task, ...)`. `bench list` prints the registry.
"""

from __future__ import annotations

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
    MaxPool2D,
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
    to the gradient itself. The learning rate is constant: no schedule.
    """

    learning_rate: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0


Optimizer = Adam | SGD


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
    target_accuracy=0.80,
    target_source=(
        "measured 2026-11-24, torch fp32 CPU seed 0: dev accuracy 0.8303 after epoch 1, "
        "0.8154 final (it overfits after epoch 1); target below the final accuracy"
    ),
    description="SST-2 (dev split as test), Embedding(20000,128)-LSTM(128)-Dense(2), 64 tokens",
)

IMDB_LSTM = TaskSpec(
    name="imdb_lstm",
    dataset="imdb",
    layers=text_classifier(),
    batch_size=64,
    epochs=3,
    target_accuracy=0.85,
    target_source=(
        "measured 2026-11-24, torch fp32 CPU seed 0: test accuracy 0.8598 after epoch 1, "
        "0.8682 after epoch 2, 0.8618 final; target below the final accuracy"
    ),
    description="IMDB reviews, Embedding(20000,128)-LSTM(128)-Dense(2), last 200 tokens",
)

CIFAR10_RESNET18 = TaskSpec(
    name="cifar10_resnet18",
    dataset="cifar10",
    layers=cifar_resnet(),
    batch_size=128,
    epochs=10,
    target_accuracy=None,
    target_source=(
        "none yet. Recipe: kuangliu/pytorch-cifar (github.com/kuangliu/pytorch-cifar, main.py): "
        "ResNet18, SGD momentum 0.9, weight decay 5e-4, batch 128, lr 0.1, which reports "
        "93.02% test accuracy, but with a cosine learning-rate schedule over 200 epochs and "
        "random-crop + flip augmentation. This spec keeps that model, optimizer and batch "
        "with a constant lr 0.1 (a schedule made identical in every backend is not built yet), "
        "no augmentation and 10 epochs, for which that source gives no accuracy; no real "
        "CIFAR-10 run was made here (only its synthetic twin is on this machine)"
    ),
    optimizer=SGD(learning_rate=0.1, momentum=0.9, weight_decay=5e-4),
    description=(
        "CIFAR-10, ResNet-18 (3x3 stem, BasicBlocks [2,2,2,2] at 64-512, BatchNorm, global "
        "average pool; 11,173,962 parameters), SGD momentum 0.9 wd 5e-4, constant lr 0.1"
    ),
)

TASKS: dict[str, TaskSpec] = {
    task.name: task
    for task in (
        MNIST_CNN,
        FASHION_MNIST_CNN,
        CIFAR10_CNN,
        SST2_LSTM,
        IMDB_LSTM,
        CIFAR10_RESNET18,
    )
}


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}") from None
