"""The IR's analytic FLOPs against torch's own counter (torch.utils.flop_counter.FlopCounterMode).

Both count a multiply-add as 2 and matrix products only (matmuls, convolutions, attention's
scaled dot products), so each layer's `flops` and each task's `flops_per_sample` must equal what
the counter sees in one forward pass of the torch build. The counter sees no FLOPs in ATen's LSTM
kernel, so a model with an LSTM is checked by hand in tests/test_spec.py instead.
"""

import pytest

torch = pytest.importorskip("torch")

from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from backends.torch_layers import build_module, torch_layer  # noqa: E402
from bench.layers import (  # noqa: E402
    LSTM,
    Dense,
    LayerNorm,
    MaskedMeanPool,
    MultiHeadSelfAttention,
    PositionEmbedding,
    padding_mask,
)
from bench.tasks import TASKS  # noqa: E402

BATCH = 3


def counted_flops(module, *inputs) -> int:
    """FLOPs of one forward pass, in training mode with gradients on (in evaluation mode
    nn.MultiheadAttention may take a fused fast path) and with scaled_dot_product_attention's
    math kernel: the counter has formulas for the CUDA attention kernels only, and sees the
    math kernel's two batched matmuls."""
    module.train()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops()


def sample_input(shape, integer: bool) -> torch.Tensor:
    if integer:
        tokens = torch.randint(2, 100, (BATCH, *shape))
        tokens[0, : shape[0] // 2] = 0  # some padding
        return tokens
    return torch.randn(BATCH, *shape)


LAYERS = [
    (Dense(24, activation="gelu"), (7, 16)),  # a dense layer over a sequence
    (PositionEmbedding(), (7, 16)),
    (LayerNorm(), (7, 16)),
    (MultiHeadSelfAttention(4), (7, 16)),
    (MultiHeadSelfAttention(2), (5, 12)),
    (MaskedMeanPool(), (7, 16)),
]


@pytest.mark.parametrize(("layer", "shape"), LAYERS, ids=lambda v: str(v))
def test_layer_flops_match_torch_counter(layer, shape):
    module = torch_layer(layer).build(layer, shape)
    x = torch.randn(BATCH, *shape)
    if getattr(module, "takes_padding_mask", False):
        mask = torch.ones(BATCH, shape[0], dtype=torch.bool)
        mask[0, :2] = False
        assert counted_flops(module, x, mask) == BATCH * layer.flops(shape)
    else:
        assert counted_flops(module, x) == BATCH * layer.flops(shape)


def test_attention_flops_by_hand():
    # four (16 x 16) projections per position, then scores and the weighted sum over 7 x 7
    assert MultiHeadSelfAttention(4).flops((7, 16)) == 4 * 2 * 7 * 16 * 16 + 2 * 2 * 7 * 7 * 16


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_flops_match_torch_counter(name):
    task = TASKS[name]
    if any(isinstance(layer, LSTM) for layer in task.layers):
        pytest.skip("FlopCounterMode counts no FLOPs in ATen's LSTM kernel")
    integer = task.input_shape == (task.input_shape[0],)
    x = sample_input(task.input_shape, integer)
    if not integer:  # the torch backend stages images NCHW
        x = x.permute(0, 3, 1, 2).contiguous()
    else:
        assert padding_mask(x).sum() < x.numel()
    assert counted_flops(build_module(task), x) == BATCH * task.flops_per_sample
