"""tests/overhead.py's statistics and block ordering (no framework is imported)."""

from __future__ import annotations

import math
import random

import overhead
import pytest
from overhead import (
    block_log_ratio,
    block_orders,
    cell_rng,
    cells_for,
    format_ratio,
    ratio_interval,
)


@pytest.mark.parametrize("blocks", [1, 2, 3, 4, 5, 8, 9])
def test_block_orders_are_balanced(blocks):
    orders = block_orders(blocks, random.Random(7))
    assert len(orders) == blocks
    assert set(orders) <= {"ABBA", "BAAB"}
    assert abs(orders.count("ABBA") - orders.count("BAAB")) == blocks % 2
    # every block runs each side twice, so each side is as often first as second in its pair
    assert all(sorted(order) == ["A", "A", "B", "B"] for order in orders)


def test_block_orders_are_seeded_and_shuffled():
    first = block_orders(10, random.Random(1))
    assert first == block_orders(10, random.Random(1))
    drawn = {tuple(block_orders(10, random.Random(seed))) for seed in range(20)}
    assert len(drawn) > 5  # the order of the blocks is drawn, not fixed


def test_cell_rng_depends_on_the_cell_only():
    a = block_orders(6, cell_rng(0, "mnist_cnn", "torch", "eager"))
    assert a == block_orders(6, cell_rng(0, "mnist_cnn", "torch", "eager"))
    others = [
        block_orders(6, cell_rng(seed, "mnist_cnn", backend, "eager"))
        for seed in range(5)
        for backend in ("torch", "jax")
    ]
    assert any(order != a for order in others)


def test_block_log_ratio_is_the_log_of_the_geometric_means():
    # ABBA: harness 12 and 18 (geometric mean sqrt(216)), bare 10 and 15 (sqrt(150))
    value = block_log_ratio([12.0, 18.0], [10.0, 15.0])
    assert value == pytest.approx(math.log(math.sqrt(216 / 150)))
    assert block_log_ratio([12.0, 18.0], [12.0, 18.0]) == 0.0
    # a linear drift of the machine within an ABBA block cancels: A 10, B 11, B 12, A 13
    assert block_log_ratio([10.0, 13.0], [11.0, 12.0]) == pytest.approx(
        math.log(math.sqrt(130 / 132))
    )
    with pytest.raises(ValueError):
        block_log_ratio([], [1.0])


def test_ratio_interval_on_known_inputs():
    # logs 0.0, 0.1, 0.2: mean 0.1, sd 0.1, t(0.975, 2) = 4.302653, half = 4.302653 * 0.1 / sqrt 3
    ratio, low, high = ratio_interval([0.0, 0.1, 0.2])
    half = 4.302652729911275 * 0.1 / math.sqrt(3)
    assert ratio == pytest.approx(math.exp(0.1))
    assert low == pytest.approx(math.exp(0.1 - half))
    assert high == pytest.approx(math.exp(0.1 + half))
    # no spread: the interval is the point
    assert ratio_interval([math.log(1.5)] * 4) == pytest.approx((1.5, 1.5, 1.5))
    # one block: a ratio, no interval
    ratio, low, high = ratio_interval([math.log(2.0)])
    assert ratio == pytest.approx(2.0) and math.isnan(low) and math.isnan(high)
    with pytest.raises(ValueError):
        ratio_interval([])


def test_format_ratio():
    assert format_ratio(1.0234, 0.98, 1.061) == "x1.02 [0.98, 1.06]"
    assert format_ratio(1.5, math.nan, math.nan) == "x1.50"


def test_cells_cover_every_backend_mode_and_task():
    cells = cells_for(
        list(overhead.TASK_ORDER), list(overhead.BACKEND_ORDER), list(overhead.MODE_ORDER)
    )
    # 3 modes for torch and jax, 4 (default too) for each Keras backend, on 4 tasks
    assert len(cells) == 4 * (3 + 3 + 4 + 4 + 4)
    assert len(set(cells)) == len(cells)
    assert all(c.mode != "default" or c.backend.startswith("keras-") for c in cells)


def test_every_cell_has_a_bare_model_and_a_short_plan():
    cells = cells_for(
        list(overhead.TASK_ORDER), list(overhead.BACKEND_ORDER), list(overhead.MODE_ORDER)
    )
    for cell in cells:
        spec = overhead.bare_spec(cell, "cpu", 0)
        assert spec["model"] in ("small_cnn", "cifar_cnn", "lstm")
        plan = overhead.plan_for(cell)
        assert 1 <= plan.window_steps <= 25 and plan.steps == 12 * plan.window_steps
        assert spec["steps_per_epoch"] == plan.steps_per_epoch
        if (cell.backend, cell.mode) not in (("torch", "fused"), ("keras-torch", "fused")):
            assert cell.mode in overhead.STEP_MS[cell.task][cell.backend] or cell.mode == "default"
    # windows of about a second: a fast cell gets 25 steps, the slowest one
    assert (
        overhead.plan_for(overhead.Cell("mnist_cnn", "keras-tensorflow", "default")).window_steps
        == 25
    )
    assert overhead.plan_for(overhead.Cell("imdb_lstm", "jax", "eager")).window_steps == 1
    assert overhead.estimate_s(cells, 3) > 0


def test_plan_matches_the_harness_window_rules():
    # 4 windows an epoch keep a Keras harness window (at least a quarter epoch) at W steps
    plan = overhead.Plan(10)
    assert -(-plan.steps_per_epoch // 4) == plan.window_steps
