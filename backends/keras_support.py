"""What the Keras backend leaves to the framework underneath (TensorflowSupport, JaxSupport,
TorchSupport: flags, device, versions, memory, and how fit gets its device batches), and which
LSTM kernel Keras runs on each (see backends/keras_backend.py's docstring).
"""

from __future__ import annotations

import functools

import keras
import numpy as np
from keras import ops

from backends.base import BackendBase
from bench.layers import LSTM
from bench.tasks import TaskSpec

FRAMEWORK = keras.backend.backend()  # "tensorflow" | "jax" | "torch", from KERAS_BACKEND


def tensor_bytes(tensor) -> int:
    """Bytes of a framework tensor, from its shape and dtype."""
    itemsize = np.dtype(keras.backend.standardize_dtype(tensor.dtype)).itemsize
    return int(np.prod(tuple(tensor.shape))) * itemsize


class TensorflowSupport:
    """What Keras leaves to the framework underneath: flags, device, versions, memory, data."""

    def __init__(self, device: str, precision: str, threads: int) -> None:
        import tensorflow as tf

        self.tf = tf
        self.device = device
        tf.config.experimental.enable_tensor_float_32_execution(precision == "tf32")
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        except RuntimeError:  # the runtime already started (a second backend in one process)
            pass
        if device == "cuda" and not tf.config.list_physical_devices("GPU"):
            detail = f"built with CUDA: {tf.test.is_built_with_cuda()}"
            raise BackendBase.no_gpu(f"TensorFlow {tf.__version__}", detail)
        self.device_scope = "/GPU:0" if device == "cuda" else "/CPU:0"

    def versions(self) -> dict[str, str]:
        versions = {"tensorflow": self.tf.__version__}
        if self.device == "cuda":
            build = self.tf.sysconfig.get_build_info()
            versions.update(
                cuda=str(build.get("cuda_version")), cudnn=str(build.get("cudnn_version"))
            )
        return versions

    def device_name(self) -> str | None:
        if self.device != "cuda":
            return None
        gpu = self.tf.config.list_physical_devices("GPU")[0]
        return self.tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)

    def memory_peak_bytes(self) -> int | None:
        if self.device != "cuda":
            return None
        return int(self.tf.config.experimental.get_memory_info("GPU:0")["peak"])

    def reset_memory_peak(self) -> bool:
        if self.device == "cuda":
            self.tf.config.experimental.reset_memory_stats("GPU:0")
        return True

    def resident(self, array: np.ndarray):
        """One copy on the device (an eager tensor made from numpy lives on the host until an
        op places it; tf.identity under the device scope puts it there once)."""
        with self.tf.device(self.device_scope):
            return self.tf.identity(self.tf.convert_to_tensor(array))

    def replaceable(self, array: np.ndarray):
        """A resident split that `replace` can refill: a variable on the device, since the
        traced train function captures what it gathers from (a tensor would stay the old one)."""
        with self.tf.device(self.device_scope):
            return self.tf.Variable(array, trainable=False)

    def replace(self, resident, array: np.ndarray):
        resident.assign(array)  # in place: the traced function reads the variable
        return resident

    def window_loss(self, model) -> float:
        """The last step's loss, read to the host: the read waits for the step's work (on a
        GPU, for the stream every kernel of the step runs on)."""
        return float(model.last_loss.last.numpy())

    def fit_input(self, model, order: np.ndarray, first_step: int, num_steps: int, batch: int):
        """fit's input: a tf.data of each step's sample indices, batched in order, with no
        tf.data background threads (on a small CPU they compete with the step's);
        GatheringModel.train_step gathers the batch on the device."""
        indices = order[first_step * batch : (first_step + num_steps) * batch]
        options = self.tf.data.Options()
        options.autotune.enabled = False
        options.threading.private_threadpool_size = 1
        dataset = self.tf.data.Dataset.from_tensor_slices(indices).batch(batch)
        return {"x": dataset.with_options(options)}


class JaxSupport:
    """The same for JAX."""

    def __init__(self, device: str, precision: str, threads: int) -> None:
        import jax

        self.jax = jax
        self.device = device
        # fp32 and bf16: fp32 matmuls at full precision; tf32: TF32 tensor cores for them.
        matmul_precision = "tensorfloat32" if precision == "tf32" else "highest"
        jax.config.update("jax_default_matmul_precision", matmul_precision)
        platform = jax.devices()[0].platform
        if device == "cuda" and platform != "gpu":
            raise BackendBase.no_gpu(f"JAX {jax.__version__}", f"it runs on {platform}")
        if device == "cpu" and platform == "gpu":
            raise RuntimeError("device cpu was requested but JAX runs on its GPU")
        self.gathers: dict[int, object] = {}
        self.loss_index: tuple[object, int] | None = None  # (model, index), see last_loss_index

    def versions(self) -> dict[str, str]:
        import jaxlib

        return {"jax": self.jax.__version__, "jaxlib": jaxlib.__version__}

    def device_name(self) -> str | None:
        return self.jax.devices()[0].device_kind if self.device == "cuda" else None

    def memory_peak_bytes(self) -> int | None:
        if self.device != "cuda":
            return None
        stats = self.jax.devices()[0].memory_stats() or {}
        return stats.get("peak_bytes_in_use")

    def reset_memory_peak(self) -> bool:
        return False  # JAX has no reset: its peak counts from the process start

    def resident(self, array: np.ndarray):
        return self.jax.device_put(array, self.jax.devices()[0])

    def replaceable(self, array: np.ndarray):
        return self.resident(array)

    def replace(self, resident, array: np.ndarray):
        """A new array of the same shape (the jitted gather takes it as an argument), the old
        one freed first: never two copies on the device at once."""
        resident.delete()
        return self.resident(array)

    def gather(self, batch: int):
        """One jitted dispatch per step: the step's indices sliced from the permutation and
        its batch taken from the resident arrays, all on the device."""
        if batch not in self.gathers:
            jnp, lax = self.jax.numpy, self.jax.lax

            def take(x, y, order, start):
                index = lax.dynamic_slice_in_dim(order, start, batch)
                return jnp.take(x, index, axis=0), jnp.take(y, index, axis=0)

            self.gathers[batch] = self.jax.jit(take)
        return self.gathers[batch]

    def window_loss(self, model) -> float:
        """The last step's loss with the whole state computed (block_until_ready). Inside fit the
        state lives in fit's own `_jax_state` (Keras puts it back on the variables only when fit
        ends, or when a callback asks: `jax_state_sync`, a copy of every variable, which this
        avoids); after fit, on the variables."""
        state = getattr(model, "_jax_state", None)
        if state and not model._jax_state_synced:
            self.jax.block_until_ready(state)
            metrics = state["metrics_variables"]
            return float(metrics[self.last_loss_index(model)])
        self.jax.block_until_ready([variable.value for variable in model.variables])
        return float(model.last_loss.last.value)

    def last_loss_index(self, model) -> int:
        """Where the last-loss variable sits in fit's metrics state (model.metrics_variables)."""
        if self.loss_index is None or self.loss_index[0] is not model:
            variables = model.metrics_variables
            index = [i for i, v in enumerate(variables) if v is model.last_loss.last]
            assert len(index) == 1, [v.path for v in variables]
            self.loss_index = (model, index[0])
        return self.loss_index[1]

    def fit_input(self, model, order, first_step: int, num_steps: int, batch: int) -> dict:
        gather = self.gather(batch)
        return device_batches(
            lambda x, y, start: gather(x, y, order, start), model, first_step, num_steps, batch
        )


class TorchSupport:
    """The same for torch."""

    def __init__(self, device: str, precision: str, threads: int) -> None:
        import torch

        from backends.torch_backend import configure_torch

        self.torch = torch
        self.device = device
        configure_torch(device, precision, threads)  # the torch backend's own settings

    def versions(self) -> dict[str, str]:
        versions = {"torch": self.torch.__version__}
        if self.device == "cuda":
            versions["cuda"] = str(self.torch.version.cuda)
        return versions

    def device_name(self) -> str | None:
        return self.torch.cuda.get_device_name() if self.device == "cuda" else None

    def memory_peak_bytes(self) -> int | None:
        if self.device != "cuda":
            return None
        return int(self.torch.cuda.max_memory_allocated())

    def reset_memory_peak(self) -> bool:
        if self.device == "cuda":
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
        return True

    def resident(self, array: np.ndarray):
        return ops.convert_to_tensor(array)  # on Keras' device, one copy

    def replaceable(self, array: np.ndarray):
        """Storage of its own (on cpu convert_to_tensor would share the dataset's array,
        which `replace` then overwrote)."""
        return self.resident(np.array(array, copy=True))

    def replace(self, resident, array: np.ndarray):
        """Copied into the split's own storage: never two copies on the device at once."""
        resident.copy_(self.torch.from_numpy(array))
        return resident

    def window_loss(self, model) -> float:
        """The last step's loss as a float, with every queued kernel finished on cuda."""
        if self.device == "cuda":
            self.torch.cuda.synchronize()
        return float(model.last_loss.last.value)

    def fit_input(self, model, order, first_step: int, num_steps: int, batch: int) -> dict:
        def gather(x, y, start: int):  # a slice of the device permutation is a view: no copy
            index = order[start : start + batch]
            return x[index], y[index]

        return device_batches(gather, model, first_step, num_steps, batch)


def device_batches(gather, model, first_step: int, num_steps: int, batch: int) -> dict:
    """fit's input on JAX and torch: a generator of the window's batches, each gathered on the
    device by `gather(x, y, start)` from the resident split when Keras asks for it."""
    x, y = model.resident.x, model.resident.y

    def batches():
        for step in range(first_step, first_step + num_steps):
            yield gather(x, y, step * batch)

    return {"x": batches(), "steps_per_epoch": num_steps}


FRAMEWORK_SUPPORT = {"tensorflow": TensorflowSupport, "jax": JaxSupport, "torch": TorchSupport}


def has_lstm(task: TaskSpec) -> bool:
    return any(isinstance(layer, LSTM) for layer in task.layers)


def lstm_use_cudnn(device: str, precision: str) -> bool | str:
    """Keras' use_cudnn for the LSTM: "auto" (cuDNN where Keras can), except bf16 on a GPU
    under JAX or TensorFlow, whose cuDNN LSTMs take no bfloat16 (see the module docstring)."""
    if device == "cuda" and precision == "bf16" and FRAMEWORK in ("jax", "tensorflow"):
        return False
    return "auto"


def cudnn_lstm(task: TaskSpec, device: str, precision: str = "fp32") -> bool:
    """Keras runs an LSTM on TensorFlow with a GPU as a cuDNN kernel, which XLA cannot compile."""
    cudnn = lstm_use_cudnn(device, precision) == "auto"
    return FRAMEWORK == "tensorflow" and device == "cuda" and has_lstm(task) and cudnn


GENERIC_LSTM = {
    "tensorflow": "Keras' generic RNN loop (a tf.while_loop over timesteps)",
    "jax": "Keras' generic RNN loop (a lax.scan over timesteps)",
    "torch": "Keras' torch LSTM loop (one matmul per timestep)",
}
CUDNN_LSTM = {
    "tensorflow": "cuDNN (TensorFlow's CudnnRNNV3, as Keras routes it on a GPU)",
    "jax": "cuDNN (jax.experimental.rnn, as Keras routes it on a GPU)",
    "torch": "cuDNN (torch's, as Keras routes it on a GPU in eager mode)",
}


@functools.cache  # describe() asks at construction and again after compile
def torch_cudnn_lstm_runs(dtype: str) -> bool:
    """Whether Keras' torch cuDNN LSTM runs in `dtype` here: Keras falls back to its loop on
    any error without a word, so the harness tries it once on a tiny batch."""
    import torch
    from keras.src.backend.torch import rnn

    torch_dtype = getattr(torch, dtype)
    inputs = torch.randn(2, 3, 4, device="cuda", dtype=torch_dtype)
    state = torch.zeros(2, 2, device="cuda", dtype=torch_dtype)
    kernels = [torch.randn(shape, device="cuda", dtype=torch_dtype) for shape in ((4, 8), (2, 8))]
    bias = torch.zeros(8, device="cuda", dtype=torch_dtype)
    try:
        rnn._cudnn_lstm(inputs, state, state, *kernels, bias, return_sequences=False, device="cuda")
    except Exception:  # noqa: BLE001 - what Keras catches before it falls back
        return False
    return True


def describe_lstm(task: TaskSpec, device: str, precision: str, jit_compile: bool) -> str | None:
    """The mechanism's LSTM part: which kernel Keras runs here, and in which dtype."""
    if not has_lstm(task):
        return None
    dtype = "bf16 compute, fp32 variables" if precision == "bf16" else "fp32"
    if device != "cuda":
        return f"LSTM: {GENERIC_LSTM[FRAMEWORK]} ({dtype})"
    if lstm_use_cudnn(device, precision) is False:
        return f"LSTM: {GENERIC_LSTM[FRAMEWORK]}, use_cudnn=False: no bf16 cuDNN LSTM ({dtype})"
    if FRAMEWORK == "torch":
        if jit_compile:
            return f"LSTM: {GENERIC_LSTM['torch']}: Keras skips cuDNN under torch.compile ({dtype})"
        if not torch_cudnn_lstm_runs("bfloat16" if precision == "bf16" else "float32"):
            return f"LSTM: {GENERIC_LSTM['torch']}: torch's cuDNN LSTM refused it ({dtype})"
    return f"LSTM: {CUDNN_LSTM[FRAMEWORK]} ({dtype})"
