"""GradStats against a straightforward per-parameter computation on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from harness.gradstats import GradStats
from harness.trialconfig import TrainConfig


def single(named, every: int, clip_norm: float = 0.0, vanish_threshold: float = 1e-8,
           explode_threshold: float = 1e3, fused: bool | None = None, embedding=None) -> Solo:
    """GradStats of one member (a group of one), with the old single-model call shapes."""
    tc = TrainConfig(grad_stats_every=every, clip_norm=clip_norm, vanish_threshold=vanish_threshold,
                     explode_threshold=explode_threshold)
    return Solo(named, GradStats([n for n, _ in named], [[p for _, p in named]], [tc],
                                 embedding=embedding, fused=fused))


class Solo:
    """Adapter: one model's parameters as member 0."""

    def __init__(self, named, stats: GradStats) -> None:
        self.params = [p for _, p in named]
        self.stats = stats

    @property
    def sampled(self) -> int:
        return self.stats.sampled[0]

    @property
    def _scratch(self):
        return self.stats._scratch

    def is_sampled(self, step: int) -> bool:
        return self.stats.is_sampled(step)[0]

    def after_backward(self, sampled: bool):
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        total = self.stats.after_backward([grads], [self.params], [sampled])
        self.stats.count([sampled])
        return None if total is None else total[0]

    def after_step(self) -> None:
        self.stats.after_step([self.params])

    def read(self):
        return self.stats.read([self.params])

    def reset(self) -> None:
        self.stats.reset()

    def decode(self, values, norms, steps):
        return self.stats.decode(values, [norms], steps)[0]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(20, 6), nn.Flatten(), nn.Linear(18, 8), nn.ReLU(), nn.Linear(8, 3))


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 20, (16, 3), generator=g), torch.randint(0, 3, (16,), generator=g)


def _run(clip: float, steps: int, every: int, lr: float = 0.1, fused: bool | None = None):
    """Train a few steps with GradStats and, beside it, record the same numbers the plain way."""
    model = _model()
    named = list(model.named_parameters())
    params = [p for _, p in named]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    stats = single(named, every=every, clip_norm=clip, vanish_threshold=1e-3, explode_threshold=5.0,
                   fused=fused, embedding=[False] * len(named))
    plain = {"norm": [], "max": [], "vanish": [], "ratio": [], "gnorm": [], "gratio": [], "clipped": 0}
    norms = []
    for step in range(steps):
        x, y = _batch(step)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        grads = [p.grad.detach().clone() for p in params]
        gnorm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
        sampled = stats.is_sampled(step)
        before = [p.detach().clone() for p in params]
        total = stats.after_backward(sampled)
        norms.append(float(total) if total is not None else 0.0)
        if clip > 0:
            plain["clipped"] += gnorm > clip
            scale = min(1.0, clip / (gnorm + 1e-6))
            for p, g in zip(params, grads):
                assert torch.allclose(p.grad, g * scale, rtol=1e-5, atol=1e-7)
        opt.step()
        if sampled:
            stats.after_step()
            plain["norm"].append([float(g.norm()) for g in grads])
            plain["max"].append([float(g.abs().max()) for g in grads])
            plain["vanish"].append([int((g.abs() < 1e-3).sum()) for g in grads])
            deltas = [p.detach() - b for p, b in zip(params, before)]
            plain["ratio"].append([float(d.norm() / b.norm()) for d, b in zip(deltas, before)])
            plain["gnorm"].append(gnorm)
            plain["gratio"].append(
                math.sqrt(sum(float(d.pow(2).sum()) for d in deltas))
                / math.sqrt(sum(float(b.pow(2).sum()) for b in before))
            )
    metrics, layers = stats.decode(stats.read().tolist(), norms, steps)
    return stats, params, plain, metrics, layers


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("clip", [0.0, 0.35])
def test_statistics_match_plain_computation(clip: float, fused: bool) -> None:
    stats, params, plain, metrics, layers = _run(clip=clip, steps=7, every=3, fused=fused)
    k = len(plain["gnorm"])
    assert k == 3 == stats.sampled  # steps 0, 3, 6
    numel = [p.numel() for p in params]
    def approx(v: float):
        return pytest.approx(v, rel=1e-4, abs=1e-7)

    assert layers["layer"] == ["0.weight", "2.weight", "2.bias", "4.weight", "4.bias"]
    for i in range(len(params)):
        assert layers["grad_norm"][i] == approx(sum(r[i] for r in plain["norm"]) / k)
        assert layers["grad_max_abs"][i] == approx(max(r[i] for r in plain["max"]))
        assert layers["vanish_frac"][i] == approx(sum(r[i] for r in plain["vanish"]) / (numel[i] * k))
        assert layers["update_ratio"][i] == approx(sum(r[i] for r in plain["ratio"]) / k)
        assert layers["weight_norm"][i] == approx(float(params[i].detach().norm()))
    assert metrics["grad_norm"] == approx(sum(plain["gnorm"]) / k)
    assert metrics["grad_norm_max"] == approx(max(plain["gnorm"]))
    assert metrics["grad_max_abs"] == approx(max(max(r) for r in plain["max"]))
    assert metrics["grad_vanish_frac"] == approx(sum(sum(r) for r in plain["vanish"]) / (sum(numel) * k))
    assert metrics["update_ratio"] == approx(sum(plain["gratio"]) / k)
    assert metrics["grad_clip_frac"] == approx(plain["clipped"] / 7 if clip else 0.0)
    if clip:
        assert 0 < metrics["grad_clip_frac"] < 1  # some steps clipped, not all
    assert metrics["grad_vanishing"] is False


def test_flags_and_reset() -> None:
    stats, _, plain, metrics, _ = _run(clip=0.0, steps=4, every=1, lr=0.1)
    assert metrics["grad_exploding"] is (max(plain["gnorm"]) > 5.0)
    stats.reset()
    metrics, layers = stats.decode(stats.read().tolist(), [], 0)
    assert math.isnan(metrics["grad_norm"]) and math.isnan(layers["grad_norm"][0])
    assert layers["weight_norm"][0] > 0  # weights are still read at a report without samples


def test_disabled_stats_touch_nothing() -> None:
    model = _model()
    stats = single(list(model.named_parameters()), every=0)
    x, y = _batch(0)
    nn.functional.cross_entropy(model(x), y).backward()
    assert not stats.is_sampled(0)
    assert stats.after_backward(False) is None
    assert stats._scratch is None  # no weight snapshot memory when statistics are off


def test_nonfinite_gradient_shows_in_norm() -> None:
    model = _model()
    stats = single(list(model.named_parameters()), every=1, explode_threshold=1e3)
    x, y = _batch(0)
    (nn.functional.cross_entropy(model(x), y) * float("inf")).backward()
    total = stats.after_backward(True)
    assert not math.isfinite(float(total))
    metrics, _ = stats.decode(stats.read().tolist(), [float(total)], 1)
    assert metrics["grad_exploding"] is True


def test_zero_weights_have_no_update_ratio() -> None:
    """Biases start at zero (classic init): that step has no ratio instead of a 1e9 outlier."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    nn.init.zeros_(model.bias)
    named = list(model.named_parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    stats = single(named, every=1)
    ratios = []
    for step in range(2):
        x = torch.randn(8, 4, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        before = model.bias.detach().clone()
        stats.after_backward(True)
        opt.step()
        stats.after_step()
        if step:
            ratios.append(float((model.bias.detach() - before).norm() / before.norm()))
    _, layers = stats.decode(stats.read().tolist(), [0.0, 0.0], 2)
    assert layers["update_ratio"][1] == pytest.approx(ratios[0], rel=1e-5)
    assert math.isfinite(layers["update_ratio"][0])

    fresh = single(named, every=1)
    nn.init.zeros_(model.bias)
    opt.zero_grad()
    model(torch.randn(8, 4)).pow(2).mean().backward()
    fresh.after_backward(True)
    opt.step()
    fresh.after_step()
    _, layers = fresh.decode(fresh.read().tolist(), [0.0], 1)
    assert math.isnan(layers["update_ratio"][1])
