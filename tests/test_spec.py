"""The task registry, the IR's shapes, parameter counts and FLOPs, and the initial weights."""

import dataclasses
import math

import numpy as np
import pytest

from bench.data import DATASETS
from bench.init import epoch_permutation, initial_weights
from bench.layers import (
    LSTM,
    Conv2D,
    Dense,
    Embedding,
    Flatten,
    LayerNorm,
    MaskedMeanPool,
    MaxPool2D,
    MultiHeadSelfAttention,
    PositionEmbedding,
    Residual,
    forward_flops,
    param_shapes,
    trace_shapes,
    variable_shapes,
)
from bench.tasks import TASKS, get_task

# Parameter counts worked out by hand from the layer sizes.
EXPECTED_PARAMS = {
    "mnist_cnn": (3 * 3 * 1 * 32 + 32) + (13 * 13 * 32 * 64 + 64) + (64 * 10 + 10),  # 347,146
    "mnist_mlp": (784 * 128 + 128) + (128 * 10 + 10),  # 101,770
    "fashion_mnist_cnn": 347_146,
    "cifar10_cnn": (896) + (3 * 3 * 32 * 64 + 64) + (3 * 3 * 64 * 64 + 64) + (1024 * 64 + 64) + 650,
    "sst2_lstm": 20000 * 128 + (128 * 512 + 128 * 512 + 512) + (128 * 2 + 2),
    "imdb_lstm": 20000 * 128 + (128 * 512 + 128 * 512 + 512) + (128 * 2 + 2),
    # tokens + positions (64 x 128), 2 x [LN (2 x 128), attention (4 x (128 x 128 + 128)),
    # LN, Dense 128 -> 512, Dense 512 -> 128], the final LN, Dense 128 -> 2: 2,965,250
    "sst2_transformer": 20000 * 128
    + 64 * 128
    + 2 * (256 + 4 * (128 * 128 + 128) + 256 + (128 * 512 + 512) + (512 * 128 + 128))
    + 256
    + (128 * 2 + 2),
    # the same with 200 positions: 2,982,658
    "imdb_transformer": 20000 * 128
    + 200 * 128
    + 2 * (256 + 4 * (128 * 128 + 128) + 256 + (128 * 512 + 512) + (512 * 128 + 128))
    + 256
    + (128 * 2 + 2),
    "cifar10_resnet18": 11_173_962,  # kuangliu/pytorch-cifar's ResNet18; worked out below
}


def resnet18_params_by_hand() -> int:
    """Stem, four stages of two BasicBlocks (BN: gamma and beta per channel), the classifier."""

    def conv(size, cin, cout):
        return size * size * cin * cout

    def block(cin, cout):
        body = conv(3, cin, cout) + 2 * cout + conv(3, cout, cout) + 2 * cout
        return body + (conv(1, cin, cout) + 2 * cout if cin != cout else 0)

    total = conv(3, 3, 64) + 2 * 64
    channels = 64
    for width in (64, 128, 256, 512):
        total += block(channels, width) + block(width, width)
        channels = width
    return total + 512 * 10 + 10


def test_registry_holds_the_seed_tasks():
    assert set(TASKS) == set(EXPECTED_PARAMS)
    for name, task in TASKS.items():
        assert task.name == name
        assert task.dataset in DATASETS
        assert task.target_source, f"{name} must say where its target comes from"
        assert dataclasses.is_dataclass(task) and task.__dataclass_params__.frozen


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_parameter_counts(name):
    assert get_task(name).param_count == EXPECTED_PARAMS[name]


def test_resnet18_structure_and_count():
    task = get_task("cifar10_resnet18")
    assert task.param_count == resnet18_params_by_hand() == 11_173_962
    shapes = [out for _, out in trace_shapes(task.layers, task.input_shape)]
    assert shapes[1] == (32, 32, 64) and shapes[-2] == (512,) and shapes[-1] == (10,)
    blocks = [layer for layer in task.layers if isinstance(layer, Residual)]
    assert len(blocks) == 8
    assert [bool(block.shortcut) for block in blocks] == [False, False, True] + [
        False,
        True,
    ] * 2 + [False]
    assert [block.body[0].strides for block in blocks] == [1, 1, 2, 1, 2, 1, 2, 1]
    assert (task.batch_size, task.optimizer.momentum, task.optimizer.weight_decay) == (
        128,
        0.9,
        5e-4,
    )
    # 0.56 GMACs per image, the figure quoted for the CIFAR ResNet-18
    assert 1.10e9 < task.flops_per_sample < 1.12e9


def test_mnist_cnn_is_the_seed_model():
    task = get_task("mnist_cnn")
    assert task.param_count == 347_146
    assert task.layers == (Conv2D(32, 3), MaxPool2D(2), Flatten(), Dense(64, "relu"), Dense(10))
    assert (task.batch_size, task.epochs, task.target_accuracy) == (64, 5, 0.98)
    assert task.optimizer.learning_rate == 1e-3


def test_shapes_through_the_cifar_cnn():
    shapes = param_shapes(get_task("cifar10_cnn").layers, (32, 32, 3))
    assert shapes["0_conv2d/kernel"] == (3, 3, 3, 32)
    assert shapes["2_conv2d/kernel"] == (3, 3, 32, 64)
    assert shapes["4_conv2d/kernel"] == (3, 3, 64, 64)
    assert shapes["6_dense/kernel"] == (4 * 4 * 64, 64)  # 30->15->13->6->4


def test_text_task_shapes():
    task = get_task("sst2_lstm")
    assert task.input_shape == (64,) and get_task("imdb_lstm").input_shape == (200,)
    assert task.layers == (Embedding(20000, 128), LSTM(128), Dense(2))
    assert task.num_classes == 2


def test_flops_per_sample_by_hand():
    conv = 2 * 26 * 26 * 32 * 9
    dense = 2 * (5408 * 64 + 64 * 10)
    assert get_task("mnist_cnn").flops_per_sample == conv + dense
    lstm = 2 * 64 * (128 + 128) * 512
    assert get_task("sst2_lstm").flops_per_sample == lstm + 2 * 128 * 2
    # per block: q, k, v and output projections, scores and the weighted sum over 64 x 64, the
    # MLP's two matmuls; then the head (LayerNorm, pooling and GELU are not counted)
    attention = 4 * 2 * 64 * 128 * 128 + 2 * 2 * 64 * 64 * 128
    mlp = 2 * 2 * 64 * 128 * 512
    assert get_task("sst2_transformer").flops_per_sample == 2 * (attention + mlp) + 2 * 128 * 2


def test_transformer_tasks_are_pre_layernorm_encoders():
    task = get_task("sst2_transformer")
    assert task.layers == get_task("imdb_transformer").layers
    assert task.layers[:2] == (Embedding(20000, 128), PositionEmbedding())
    blocks = task.layers[2:6]
    assert blocks[0] == Residual((LayerNorm(), MultiHeadSelfAttention(4)))
    assert blocks[1] == Residual((LayerNorm(), Dense(512, "gelu"), Dense(128)))
    assert blocks[2:] == blocks[:2]
    assert task.layers[6:] == (LayerNorm(), MaskedMeanPool(), Dense(2))
    assert (task.batch_size, task.optimizer.learning_rate) == (64, 1e-3)  # as the LSTM tasks


def test_unknown_task_names_the_valid_ones():
    with pytest.raises(ValueError, match="valid tasks: mnist_cnn"):
        get_task("resnet")


def test_conv_padding_names_valid_and_same():
    with pytest.raises(ValueError, match="'valid' or 'same'"):
        Conv2D(8, 3, padding="full").output_shape((8, 8, 1))


@pytest.mark.parametrize(
    "size, kernel, stride, pads, out",
    [
        (32, 3, 1, (1, 1), 32),
        (32, 3, 2, (0, 1), 16),  # even input, stride 2: the extra zero goes after
        (31, 3, 2, (1, 1), 16),
        (32, 1, 2, (0, 0), 16),  # a 1x1 projection needs none
        (7, 4, 1, (1, 2), 7),
    ],
)
def test_same_padding_as_tensorflow_pads(size, kernel, stride, pads, out):
    conv = Conv2D(4, kernel, padding="same", strides=stride)
    assert conv.padding_amounts((size, size, 3)) == (pads, pads)
    assert conv.output_shape((size, size, 3)) == (out, out, 4)


def test_strided_valid_conv_and_no_bias():
    conv = Conv2D(4, 3, strides=2, use_bias=False)
    assert conv.output_shape((9, 9, 2)) == (4, 4, 4)
    assert conv.param_shapes((9, 9, 2)) == {"kernel": (3, 3, 2, 4)}
    assert conv.flops((9, 9, 2)) == 2 * 4 * 4 * 4 * 9 * 2


@pytest.mark.parametrize("name", sorted(TASKS))
def test_initial_weights_are_deterministic_and_canonical(name):
    task = get_task(name)
    first = initial_weights(task.layers, task.input_shape, seed=0)
    again = initial_weights(task.layers, task.input_shape, seed=0)
    other = initial_weights(task.layers, task.input_shape, seed=1)
    shapes = variable_shapes(task.layers, task.input_shape)
    assert list(first) == list(shapes)
    for key, value in first.items():
        assert value.shape == shapes[key] and value.dtype == np.float32
        np.testing.assert_array_equal(value, again[key])
    kernels = [k for k in first if k.endswith("kernel")]
    assert all(not np.array_equal(first[k], other[k]) for k in kernels)
    trainable = param_shapes(task.layers, task.input_shape)
    assert sum(first[key].size for key in trainable) == task.param_count


def test_initializer_distributions():
    task = get_task("sst2_lstm")
    weights = initial_weights(task.layers, task.input_shape, seed=0)
    table = weights["0_embedding/embeddings"]
    assert table.min() >= -0.05 and table.max() <= 0.05
    kernel = weights["1_lstm/kernel"]  # Glorot: limit sqrt(6 / (128 + 512))
    limit = math.sqrt(6 / (128 + 512))
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.9 * limit
    recurrent = weights["1_lstm/recurrent_kernel"]  # (128, 512) with orthonormal rows
    np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(128), atol=1e-5)
    bias = weights["1_lstm/bias"]
    assert (bias[128:256] == 1).all() and (bias[:128] == 0).all() and (bias[256:] == 0).all()
    assert (weights["2_dense/bias"] == 0).all()


def test_weights_of_a_layer_do_not_depend_on_later_layers():
    task = get_task("mnist_cnn")
    full = initial_weights(task.layers, task.input_shape, seed=3)
    head = initial_weights(task.layers[:1], task.input_shape, seed=3)
    np.testing.assert_array_equal(full["0_conv2d/kernel"], head["0_conv2d/kernel"])


def test_epoch_permutations():
    first = epoch_permutation(0, 0, 1000)
    assert sorted(first) == list(range(1000)) and first.dtype == np.int32
    np.testing.assert_array_equal(first, epoch_permutation(0, 0, 1000))
    assert not np.array_equal(first, epoch_permutation(0, 1, 1000))
    assert not np.array_equal(first, epoch_permutation(1, 0, 1000))


RESIDUAL_NET = (
    Conv2D(4, 3),
    Residual((Conv2D(4, 1), Conv2D(4, 1, activation=None)), activation="relu"),
    Residual((Flatten(), Dense(6)), shortcut=(Flatten(), Dense(6))),
    Dense(3),
)


def test_residual_names_shapes_and_flops():
    shapes = param_shapes(RESIDUAL_NET, (6, 6, 1))
    assert list(shapes) == [
        "0_conv2d/kernel",
        "0_conv2d/bias",
        "1_residual/body/0_conv2d/kernel",
        "1_residual/body/0_conv2d/bias",
        "1_residual/body/1_conv2d/kernel",
        "1_residual/body/1_conv2d/bias",
        "2_residual/body/1_dense/kernel",
        "2_residual/body/1_dense/bias",
        "2_residual/shortcut/1_dense/kernel",
        "2_residual/shortcut/1_dense/bias",
        "3_dense/kernel",
        "3_dense/bias",
    ]
    assert shapes["2_residual/shortcut/1_dense/kernel"] == (4 * 4 * 4, 6)
    assert [out for _, out in trace_shapes(RESIDUAL_NET, (6, 6, 1))] == [
        (4, 4, 4),
        (4, 4, 4),
        (6,),
        (3,),
    ]
    conv1x1 = 2 * 4 * 4 * 4 * 4
    expected = 2 * 4 * 4 * 4 * 9 + 2 * conv1x1 + 2 * (2 * 64 * 6) + 2 * 6 * 3
    assert forward_flops(RESIDUAL_NET, (6, 6, 1)) == expected


def test_residual_branches_must_agree():
    with pytest.raises(ValueError, match="shortcut gives"):
        Residual((Conv2D(4, 3),)).output_shape((6, 6, 4))


def test_nested_weights_are_seeded_by_their_path():
    weights = initial_weights(RESIDUAL_NET, (6, 6, 1), seed=0)
    # the same layer outside the block, or in another branch, draws other numbers
    body, shortcut = (
        weights["2_residual/body/1_dense/kernel"],
        weights["2_residual/shortcut/1_dense/kernel"],
    )
    assert not np.array_equal(body, shortcut)
    kernels = [v.ravel()[:4] for k, v in weights.items() if k.endswith("kernel")]
    assert len({tuple(k) for k in kernels}) == len(kernels)
    # adding a layer inside a block's body keeps the weights before it
    longer = (*RESIDUAL_NET[:2], Residual((Flatten(), Dense(6), Dense(6)), (Flatten(), Dense(6))))
    again = initial_weights(longer, (6, 6, 1), seed=0)
    np.testing.assert_array_equal(again["2_residual/body/1_dense/kernel"], body)
    np.testing.assert_array_equal(again["2_residual/shortcut/1_dense/kernel"], shortcut)
