"""What a member holds on the device, counted without a device (meta tensors)."""

from __future__ import annotations

import dataclasses

from helpers import tiny_dataset

from harness import footprint
from harness.models import parameter_count
from harness.trialconfig import resolve


def test_a_member_counts_what_the_loop_allocates() -> None:
    data = tiny_dataset()
    adam, sgd = resolve("TextCNN", {}), resolve("TextCNN", {"optimizer": "sgd"})
    assert footprint.bytes_per_param(adam) == 24  # weight, grad, m, v, kept best, snapshot
    assert footprint.bytes_per_param(sgd) == 20  # one momentum buffer
    params = parameter_count("TextCNN", adam.params, data)
    eager = footprint.member_bytes(resolve("TextCNN", {"cuda_graphs": False}), data, params, False)
    graphed = footprint.member_bytes(adam, data, params, True)
    act = footprint.activation_bytes(adam, data)
    assert graphed - eager == act > 0  # a captured step keeps a second copy of its activations
    assert footprint.group_bytes(3, graphed, params) == 3 * graphed + 4 * params


def test_attention_activations_grow_with_the_square_of_the_length() -> None:
    short = tiny_dataset()
    long = dataclasses.replace(short, train_x=short.train_x.repeat(4, axis=1))  # 4x the pad size
    cfg = resolve("Transformer", {"embed": 16, "num_heads": 2, "ffn_hidden": 16})
    a, b = footprint.activation_bytes(cfg, short), footprint.activation_bytes(cfg, long)
    assert b > 4.5 * a  # linear parts x4, attention scores x16


def test_fits_leaves_room_for_the_test_model() -> None:
    gib = 2**30
    assert footprint.fits(10 * gib, 1.0, gib, 0, used=0.8) == 8
    assert footprint.fits(10 * gib, 1.0, gib, gib // 4, used=0.8) == 7  # 1 GiB of test model
    assert footprint.fits(10 * gib, 0.25, gib, 0, used=0.8) == 2
    assert footprint.fits(gib, 1.0, 10 * gib, 0) == 1  # at least one
