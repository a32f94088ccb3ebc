"""The torch backend maps the IR exactly: layouts, logits against numpy, steps, modes."""

import numpy as np
import pytest
from reference import TEST_TASKS, THREADS, tiny_dataset

torch = pytest.importorskip("torch")

from backends import Unsupported, create_backend  # noqa: E402
from backends.torch_backend import TorchBackend  # noqa: E402
from backends.torch_layers import build_module, from_torch_layout, to_torch_layout  # noqa: E402
from bench.config import RunConfig  # noqa: E402
from bench.init import epoch_permutation, initial_weights  # noqa: E402
from bench.tasks import TASKS, get_task  # noqa: E402


def make_backend(task_name, **overrides):
    task = get_task(task_name)
    config = RunConfig(task=task_name, backend="torch", threads=THREADS, **overrides)
    backend = TorchBackend(config, task)
    weights = initial_weights(task.layers, task.input_shape, seed=0)
    data = tiny_dataset(task)
    backend.setup(weights, data)
    return backend, task, weights, data


@pytest.mark.parametrize("name", sorted(TASKS))
def test_layout_round_trip(name):
    task = get_task(name)
    weights = initial_weights(task.layers, task.input_shape, seed=5)
    back = from_torch_layout(task, to_torch_layout(task, weights))
    assert list(back) == list(weights)
    for key in weights:
        np.testing.assert_array_equal(back[key], weights[key])


FLOP_TASKS = [
    "mnist_cnn",
    "cifar10_cnn",
    "cifar10_resnet18",
    "test_tiny_residual",
    "test_tiny_resnet",
]


@pytest.mark.parametrize("name", FLOP_TASKS)
def test_analytic_flops_match_torchs_flop_counter(name):
    """The IR's forward FLOPs (multiply-add = 2) are what torch.utils.flop_counter counts for
    the torch build: convolutions (strided, padded, without bias), matmuls; it counts no
    BatchNorm, pooling or activation, and neither does the IR."""
    from torch.utils.flop_counter import FlopCounterMode

    task = {**TASKS, **TEST_TASKS}[name]
    model = build_module(task).eval()
    height, width, channels = task.input_shape
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(2, channels, height, width))
    assert counter.get_total_flops() == 2 * task.flops_per_sample


def test_batch_norm_keeps_the_biased_variance_with_the_spec_momentum():
    from backends.torch_layers import SpecBatchNorm

    norm = SpecBatchNorm(3, momentum=0.8, epsilon=1e-5).train()
    x = torch.randn(4, 3, 5, 5, dtype=torch.float32) * 2 + 1
    out = norm(x)
    mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(norm.running_mean, 0.2 * mean)
    torch.testing.assert_close(norm.running_var, 0.8 + 0.2 * var)
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    norm.eval()
    expected = (x - norm.running_mean[:, None, None]) / torch.sqrt(norm.running_var + 1e-5)[
        :, None, None
    ]
    torch.testing.assert_close(norm(x), expected)


def test_bf16_autocast_trains():
    backend, *_ = make_backend("mnist_cnn", precision="bf16")
    backend.begin_epoch(np.arange(256, dtype=np.int32))
    assert np.isfinite(backend.run_steps(0, 2))
    assert backend.model[0].weight.dtype == torch.float32  # master weights stay fp32


def test_unsupported_configurations_say_why():
    with pytest.raises(Unsupported, match="fused"):
        create_backend(RunConfig(task="mnist_cnn", backend="torch", mode="fused"))


def test_the_compiled_mechanism_names_the_tasks_optimizer():
    def mechanism(task: str) -> str:
        return create_backend(RunConfig(task=task, backend="torch", mode="compiled")).mechanism

    assert mechanism("mnist_cnn").endswith("forward+backward+Adam)")
    assert mechanism("cifar10_resnet18").endswith("forward+backward+SGD)")  # momentum, decay


def test_fp32_turns_tf32_off():
    create_backend(RunConfig(task="mnist_cnn", backend="torch"))
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert torch.get_float32_matmul_precision() == "highest"


def test_compiled_mode_matches_eager():
    # the MLP: torch.compile's inductor compiles its few ops in a fraction of the CNN's time on
    # a CPU (test-heavy runs the compiled mode on the transformers and the tiny ResNet)
    eager, task, weights, data = make_backend("mnist_mlp")
    compiled, *_ = make_backend("mnist_mlp", mode="compiled")
    assert compiled.mechanism.startswith("torch.compile")
    permutation = epoch_permutation(0, 0, len(data.y_train))
    losses = []
    for backend in (eager, compiled):
        backend.begin_epoch(permutation)
        losses.append([backend.run_steps(step, 1) for step in range(3)])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)


@pytest.mark.parametrize("name", ["mnist_cnn", "sst2_lstm"])
def test_fused_graph_step_trains_what_the_eager_loop_trains(name):
    """The step the fused mode captures as a CUDA graph (batch row from a device-side counter,
    grads overwritten, counter advanced), run here on cpu without capture: same losses."""
    eager, task, weights, data = make_backend(name)
    graphed, *_ = make_backend(name)
    permutation = epoch_permutation(0, 0, len(data.y_train))
    eager.begin_epoch(permutation)
    expected = [eager.run_steps(step, 1) for step in range(3)]
    graphed.begin_epoch(permutation)
    graphed.static_batches().copy_(graphed.epoch_batches(graphed.permutation))
    graphed.step_counter.fill_(0)
    losses = []
    for _ in range(3):
        graphed.optimizer.zero_grad(set_to_none=True)  # a replay overwrites the grads
        losses.append(graphed.graphed_step().item())
    assert int(graphed.step_counter.item()) == 3
    np.testing.assert_allclose(losses, expected, rtol=1e-6)
