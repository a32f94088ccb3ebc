"""A task's per-epoch recipe (bench/recipe.py): the learning-rate schedule and the crop-and-flip
augmentation are what torch's CosineAnnealingLR and torchvision's RandomCrop(padding) +
RandomHorizontalFlip define, they reach the backend at each epoch's start, and the torch
backend trained with them equals a plain torch loop written with torch's own scheduler.
(That the other backends train what torch trains under the recipe: tests/test_parity.py, on
test_tiny_resnet, which has ResNet-18's recipe over three epochs.)"""

import dataclasses
import math

import numpy as np
import pytest
from reference import TEST_TASKS, THREADS, tiny_dataset

from bench.config import RunConfig
from bench.init import epoch_permutation, initial_weights
from bench.recipe import AUGMENT_STREAM, crop_flip, epoch_learning_rate, epoch_recipe
from bench.tasks import TASKS, CosineEpochs, CropFlip

RESNET = TASKS["cifar10_resnet18"]
TINY = TEST_TASKS["test_tiny_resnet"]


def reference_crop_flip(x: np.ndarray, padding: int, seed: int, epoch: int) -> np.ndarray:
    """torchvision's transforms written out one image at a time: pad with zeros, take the
    window at the drawn (top, left), mirror it when its flip is drawn."""
    rng = np.random.default_rng([seed, AUGMENT_STREAM, epoch])
    count, height, width = x.shape[:3]
    tops = rng.integers(0, 2 * padding + 1, size=count)
    lefts = rng.integers(0, 2 * padding + 1, size=count)
    flips = rng.random(count) < 0.5
    out = np.empty_like(x)
    for i in range(count):
        padded = np.pad(x[i], ((padding, padding), (padding, padding), (0, 0)))
        crop = padded[tops[i] : tops[i] + height, lefts[i] : lefts[i] + width]
        out[i] = crop[:, ::-1] if flips[i] else crop
    return out


def test_crop_flip_is_torchvisions_crop_and_flip_per_image():
    x = np.random.default_rng(1).random((400, 32, 32, 3), dtype=np.float32)
    for seed, epoch in ((0, 0), (0, 1), (3, 7)):
        np.testing.assert_array_equal(
            crop_flip(x, CropFlip(4), seed, epoch), reference_crop_flip(x, 4, seed, epoch)
        )


def test_crop_flip_draws_every_shift_and_flip_and_changes_with_the_epoch():
    x = np.arange(2000 * 8 * 8, dtype=np.float32).reshape(2000, 8, 8, 1) + 1  # no zero pixel
    first, second = crop_flip(x, CropFlip(2), 0, 0), crop_flip(x, CropFlip(2), 0, 1)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, crop_flip(x, CropFlip(2), 0, 0))  # deterministic
    zero_rows = (first == 0).all(axis=(2, 3)).sum(axis=1)  # rows filled in by the shift
    assert set(zero_rows.tolist()) == {0, 1, 2}
    rows = first[:, 4, :, 0]  # inside every shift of 2; its pixels ascend unless mirrored
    mirrored = [bool((np.diff(row[row > 0]) < 0).all()) for row in rows]
    assert 0.45 < np.mean(mirrored) < 0.55


def test_the_cosine_schedule_is_torchs_cosine_annealing_stepped_per_epoch():
    torch = pytest.importorskip("torch")
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=200)
    task = RESNET
    for epoch in range(210):
        assert math.isclose(
            epoch_learning_rate(task, epoch),
            optimizer.param_groups[0]["lr"],
            rel_tol=1e-9,
            abs_tol=1e-12,
        )
        optimizer.step()
        scheduler.step()


def test_resnet18s_recipe_is_kuangliu_pytorch_cifars():
    assert RESNET.schedule == CosineEpochs(epochs=200) and RESNET.epochs == 200
    assert RESNET.augmentation == CropFlip(padding=4)
    optimizer = RESNET.optimizer
    assert (optimizer.learning_rate, optimizer.momentum, optimizer.weight_decay) == (0.1, 0.9, 5e-4)
    assert RESNET.batch_size == 128 and RESNET.target_accuracy == 0.93
    assert "kuangliu/pytorch-cifar" in RESNET.target_source


def test_a_task_without_a_recipe_gets_nothing_and_a_backend_refuses_one():
    task = TASKS["mnist_cnn"]
    x = np.zeros((4, 28, 28, 1), np.float32)
    assert epoch_recipe(task, 0, 3, x) == epoch_recipe(task, 0, 0, x)
    assert (
        epoch_recipe(task, 0, 3, x).learning_rate is None
        and epoch_recipe(task, 0, 3, x).x_train is None
    )
    text = dataclasses.replace(TASKS["sst2_lstm"], augmentation=CropFlip())
    with pytest.raises(ValueError, match="needs images"):
        epoch_recipe(text, 0, 0, np.zeros((4, 64), np.int32))
    pytest.importorskip("torch")
    from backends.torch_backend import TorchBackend

    backend = TorchBackend(RunConfig(task="mnist_cnn", backend="torch", threads=THREADS), task)
    backend.setup(initial_weights(task.layers, task.input_shape, 0), tiny_dataset(task))
    with pytest.raises(ValueError, match="no learning-rate schedule"):
        backend.begin_epoch(np.arange(256, dtype=np.int32), learning_rate=0.1)
    with pytest.raises(ValueError, match="no augmentation"):
        backend.begin_epoch(
            np.arange(256, dtype=np.int32), x_train=np.zeros((256, 28, 28, 1), np.float32)
        )


def test_the_worker_hands_each_epoch_its_rate_and_images(monkeypatch):
    """bench/worker.py's Run.begin_epoch: the order, the schedule's rate and the crops of
    the run's own (never modified) training images."""
    from bench import worker

    calls = []

    class Recorder:
        def begin_epoch(self, permutation, learning_rate=None, x_train=None):
            calls.append((permutation, learning_rate, x_train))

    run = worker.Run.__new__(worker.Run)
    data = tiny_dataset(RESNET, train=64)
    original = data.x_train.copy()
    config = RunConfig(task="cifar10_resnet18", backend="torch", seed=2)
    run.config, run.task, run.data, run.backend = config, RESNET, data, Recorder()
    for epoch in range(3):
        run.begin_epoch(epoch)
    for epoch, (permutation, rate, images) in enumerate(calls):
        np.testing.assert_array_equal(permutation, epoch_permutation(2, epoch, 64))
        assert rate == pytest.approx(0.1 * (1 + math.cos(math.pi * epoch / 200)) / 2)
        np.testing.assert_array_equal(images, reference_crop_flip(original, 4, 2, epoch))
    np.testing.assert_array_equal(data.x_train, original)


def test_the_torch_backend_with_the_recipe_is_a_plain_torch_loop_with_its_scheduler():
    """Three epochs of two steps of test_tiny_resnet (SGD, momentum, coupled decay, cosine over
    three epochs, crops and flips), by the backend as the worker drives it and by a plain loop
    over torch.optim.SGD and CosineAnnealingLR on the same crops: the same losses and weights.
    Fails if the backend ignored the rate or the images (checked: both change the losses)."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from backends.torch_backend import TorchBackend
    from backends.torch_layers import build_module, from_torch_layout, to_torch_layout

    task = dataclasses.replace(
        TINY, optimizer=dataclasses.replace(TINY.optimizer, learning_rate=0.05)
    )
    data = tiny_dataset(task, train=64)
    weights = initial_weights(task.layers, task.input_shape, seed=0)
    config = RunConfig(task="cifar10_resnet18", backend="torch", threads=THREADS)  # a registry name
    backend = TorchBackend(config, task)
    backend.setup(weights, data)
    losses = []
    for epoch in range(3):
        recipe = epoch_recipe(task, 0, epoch, data.x_train)
        backend.begin_epoch(epoch_permutation(0, epoch, 64), recipe.learning_rate, recipe.x_train)
        losses += [backend.run_steps(0, 1), backend.run_steps(1, 1)]

    model = build_module(task)
    model.load_state_dict(
        {k: torch.from_numpy(v) for k, v in to_torch_layout(task, weights).items()}
    )
    spec = task.optimizer
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=spec.learning_rate,
        momentum=spec.momentum,
        weight_decay=spec.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=3)
    plain = []
    model.train()
    for epoch in range(3):
        images = torch.from_numpy(
            reference_crop_flip(data.x_train, 4, 0, epoch).transpose(0, 3, 1, 2).copy()
        )
        order = torch.from_numpy(epoch_permutation(0, epoch, 64).astype(np.int64))
        for step in range(2):
            index = order[step * 32 : (step + 1) * 32]  # the task's batch
            loss = F.cross_entropy(
                model(images[index]), torch.from_numpy(data.y_train.astype(np.int64))[index]
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            plain.append(loss.item())
        scheduler.step()
    np.testing.assert_allclose(losses, plain, rtol=1e-5)
    trained = from_torch_layout(
        task, {k: v.detach().numpy() for k, v in model.state_dict().items()}
    )
    got = backend.get_weights()
    for key in trained:
        np.testing.assert_allclose(got[key], trained[key], rtol=1e-4, atol=1e-6)


def test_a_scheduled_adam_task_takes_its_rate_on_torch():
    """Adam with a schedule: torch's cpu foreach Adam refuses a tensor lr, so the backend runs
    the single-tensor loop there; the rate set at the epoch's start is the one the step uses."""
    torch = pytest.importorskip("torch")
    from backends.torch_backend import TorchBackend

    task = dataclasses.replace(TASKS["mnist_cnn"], schedule=CosineEpochs(epochs=2))
    backend = TorchBackend(RunConfig(task="mnist_cnn", backend="torch", threads=THREADS), task)
    backend.setup(initial_weights(task.layers, task.input_shape, 0), tiny_dataset(task))
    rate = epoch_learning_rate(task, 1)
    assert rate == pytest.approx(0.0005)
    backend.begin_epoch(epoch_permutation(0, 1, 256), learning_rate=rate)
    (group,) = backend.optimizer.param_groups
    assert torch.is_tensor(group["lr"]) and float(group["lr"]) == pytest.approx(rate)
    assert not group["foreach"]
    before = backend.get_weights()["4_dense/bias"]
    backend.run_steps(0, 1)
    moved = np.abs(backend.get_weights()["4_dense/bias"] - before).max()
    assert 0 < moved <= 1.01 * rate  # Adam's first step moves each parameter by about its rate
