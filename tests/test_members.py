"""Groups of trials: a fused group gives each member what its solo run gives (CPU, float64).

Each member of a group must report the same train loss, dev loss and accuracy, gradient
norms and test metrics as the same config trained alone with the same batch order. On the
CPU in float64 the fused kernels (grouped convolutions, batched matmuls, stacked embedding
tables) differ from the plain ones only by rounding, so the tolerance is 1e-6 relative: the
reports pass through float32 device buffers (harness.window).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from helpers import BASE, MEMBERS, configs, same, tiny_dataset

from harness import members as grouping
from harness import trainer
from harness.errors import UserError
from harness.graphs import GraphedStep
from harness.models import build_model
from harness.optimizer import MemberOptimizer
from harness.trialconfig import check_group, fusible_names, resolve, shape_settings


@pytest.fixture
def float64() -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


@pytest.fixture(scope="module")
def data():
    return tiny_dataset()


def solo(cfg, data) -> tuple[trainer.TrialSummary, list[dict]]:
    out: list[dict] = []
    return trainer.train(cfg, data, out.append, device="cpu"), out


def group(cfgs, data, fuse="fused", verdict=None):
    out: dict[int, list[dict]] = {i: [] for i in range(len(cfgs))}

    def report(i: int, m: dict):
        out[i].append(m)
        return verdict(i, m) if verdict else None

    return trainer.train_group(cfgs, data, report, device="cpu", fuse=fuse), out


def same_summary(a: trainer.TrialSummary, b: trainer.TrialSummary) -> None:
    assert (a.status, a.iterations, a.best_iteration) == (b.status, b.iterations, b.best_iteration)
    assert b.test_acc == a.test_acc and b.confusion == a.confusion
    assert b.test_loss == pytest.approx(a.test_loss, rel=1e-6)
    assert b.best_dev_loss == pytest.approx(a.best_dev_loss, rel=1e-6)


@pytest.mark.parametrize("model", ["TextCNN", "FastText", "DPCNN", "Transformer"])
def test_fused_members_equal_their_solo_runs(model, data, float64) -> None:
    cfgs = configs(model)
    summaries, reports = group(cfgs, data)
    assert all(s.fused and s.group_size == 3 for s in summaries)
    for i, cfg in enumerate(cfgs):
        s, r = solo(cfg, data)
        assert not s.fused and s.group_size == 1
        same(r, reports[i])
        same_summary(s, summaries[i])


def test_lstm_members_run_side_by_side_and_equal_their_solo_runs(data, float64) -> None:
    cfgs = configs("TextRNN", num_layers=2)  # inter-layer dropout: the global stream, swapped
    summaries, reports = group(cfgs, data, fuse="auto")
    assert not summaries[0].fused and summaries[0].group_size == 3
    for i, cfg in enumerate(cfgs):
        s, r = solo(cfg, data)
        same(r, reports[i])
        same_summary(s, summaries[i])


def test_a_diverging_member_ends_alone(data, float64) -> None:
    members = [MEMBERS[0], {"optimizer": "sgd", "learning_rate": 1e6, "seed": 5}, MEMBERS[2]]
    members = [{**m, "optimizer": "sgd", "momentum": 0.9} for m in members]
    cfgs = configs("TextCNN", members)
    summaries, reports = group(cfgs, data)
    assert summaries[1].status == "DIVERGED" and "non-finite" in summaries[1].reason
    assert len(reports[1]) == 1 and math.isnan(summaries[1].test_acc)
    for i in (0, 2):
        s, r = solo(cfgs[i], data)
        assert summaries[i].status == "COMPLETED" and len(reports[i]) > 1
        same(r, reports[i])
        same_summary(s, summaries[i])


def test_pruning_a_member_drops_it_and_leaves_the_others_unchanged(data, float64) -> None:
    cfgs = configs("TextCNN")

    def verdict(i: int, m: dict):
        return trainer.PRUNE if i == 1 and m["report"] == 2 else None

    summaries, reports = group(cfgs, data, verdict=verdict)
    assert summaries[1].status == "PRUNED" and summaries[1].iterations == 20
    assert len(reports[1]) == 2 and math.isnan(summaries[1].test_acc)
    for i in (0, 2):
        s, r = solo(cfgs[i], data)
        same(r, reports[i])
        same_summary(s, summaries[i])


def test_a_group_that_mixes_shape_settings_is_refused(data) -> None:
    a = resolve("TextCNN", {**BASE, "num_filters": 8})
    b = resolve("TextCNN", {**BASE, "num_filters": 16, "learning_rate": 0.1})
    with pytest.raises(UserError, match="num_filters is 16 but member 0 has 8"):
        trainer.train_group([a, b], data, device="cpu")
    with pytest.raises(UserError, match="model"):
        check_group([a, resolve("DPCNN", BASE)])
    check_group(
        [a, resolve("TextCNN", {**BASE, "num_filters": 8, "learning_rate": 0.1, "seed": 4})]
    )


def test_shape_and_fusible_settings_are_declared() -> None:
    names = fusible_names("TextCNN")
    assert {"learning_rate", "weight_decay", "dropout", "label_smoothing", "seed"} <= names
    assert not {"num_filters", "embed", "batch_size", "optimizer", "max_epochs"} & names
    shape = shape_settings(resolve("TextCNN", {"seed": 3}))
    assert shape["data_seed"] == 3 and "learning_rate" not in shape and shape["model"] == "TextCNN"


def test_one_member_optimizer_is_torch_fused_adam_bit_for_bit() -> None:
    torch.manual_seed(0)
    a = [torch.randn(5, 3), torch.randn(7)]
    b = [t.clone() for t in a]
    cfg = resolve("TextCNN", {"learning_rate": 0.01, "weight_decay": 0.1}).train
    mine = MemberOptimizer([cfg], [a])
    ref = torch.optim.Adam(b, lr=0.01, weight_decay=0.1, fused=True)
    for step in range(4):
        grads = [torch.randn_like(t, generator=torch.Generator().manual_seed(step)) for t in a]
        for t, g in zip(b, grads):
            t.grad = g.clone()
        mine.step([a], [grads])
        ref.step()
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("model", ["TextCNN", "FastText", "DPCNN", "Transformer"])
def test_fused_forward_is_the_plain_forward(model, data, float64) -> None:
    cfgs = configs(model)
    fused = grouping.build(cfgs, data, torch.device("cpu"), build_model, fuse="fused")
    assert fused.fused
    fused.eval()
    x = torch.as_tensor(data.dev_x[:16])
    out = fused(x)
    for i in range(3):
        plain = fused.member_model(i).eval()
        assert torch.allclose(out[i], plain(x), rtol=1e-9, atol=1e-12)


def test_the_cuda_graph_code_path_equals_the_plain_step(data) -> None:
    """On the CPU the graph's code path (device learning-rate table, device window index,
    tensor learning rate) runs eagerly; it must give the plain step's numbers."""
    cfgs = configs("TextCNN", schedule="cosine", warmup_steps=5)

    def run(graph: bool):
        out: dict[int, list[dict]] = {0: [], 1: [], 2: []}
        loop = trainer.Loop(cfgs, data, device="cpu", fuse="fused")
        if graph:
            loop.graph = GraphedStep(loop, capture=False)
        for epoch in range(1, loop.max_epochs + 1):
            for xb, yb in loop.batches(epoch):
                loop.step(xb, yb)
                if loop.report_due():
                    loop.evaluate_and_report(lambda i, m: out[i].append(m))
        return loop.close(), out

    a, ra = run(False)
    b, rb = run(True)
    for i in range(3):
        same(ra[i], rb[i], rel=1e-5)  # float32, and a float32 learning rate on the graph path
        assert a[i].test_acc == b[i].test_acc


@pytest.mark.cuda
def test_cuda_graphs_equal_eager_on_the_device(data) -> None:
    def run(graphs: bool):
        out: dict[int, list[dict]] = {0: [], 1: [], 2: []}
        cfgs = configs("TextCNN", cuda_graphs=graphs, max_epochs=3)
        s = trainer.train_group(cfgs, data, lambda i, m: out[i].append(m), device="cuda")
        return s, out

    eager, re = run(False)
    graphed, rg = run(True)
    assert all(s.cuda_graphs for s in graphed) and not any(s.cuda_graphs for s in eager)
    for i in range(3):
        # GPU embedding backward uses atomics: equal up to rounding, not bit for bit
        assert [r["dev_loss"] for r in rg[i]] == pytest.approx(
            [r["dev_loss"] for r in re[i]], rel=1e-3
        )


# ---------------------------------------------------------------- members' own streams


def _device_params() -> list:
    return ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.mark.parametrize("device", _device_params())
@pytest.mark.parametrize("model", ["TextCNN", "Transformer"])
def test_a_member_with_dropout_runs_the_same_in_any_group(model, device, data, request) -> None:
    """A member draws its dropout masks from its own stream: its reports do not depend on
    which members it shares a group with (on the CPU its solo run's, too; in float64 there,
    so rounding is out of the way)."""
    if device == "cpu":
        request.getfixturevalue("float64")
    me = {"learning_rate": 0.01, "dropout": 0.5, "seed": 11}
    first = [me, {"learning_rate": 0.003, "dropout": 0.3, "seed": 2}]
    second = [me, {"learning_rate": 0.02, "dropout": 0.1, "seed": 5}, {"dropout": 0.7, "seed": 9}]
    runs = []
    for members in (first, second):
        cfgs = configs(model, members, max_epochs=1)
        out: dict[int, list[dict]] = {i: [] for i in range(len(cfgs))}
        trainer.train_group(cfgs, data, lambda i, m, out=out: out[i].append(m), device=device,
                            fuse="fused")  # fmt: skip
        runs.append(out[0])
    if device == "cuda":  # float32 kernels round with the group's size: continuous values only
        for a, b in zip(*runs):
            for k in ("train_loss", "dev_loss", "grad_norm", "grad_max_abs", "update_ratio"):
                assert b[k] == pytest.approx(a[k], rel=1e-4), (k, a["iteration"])
        return
    same(runs[0], runs[1], rel=1e-5)
    if device == "cpu":
        same(solo(configs(model, [me], max_epochs=1)[0], data)[1], runs[0], rel=1e-5)


def test_bf16_does_not_round_the_keep_probability() -> None:
    """A bf16 mask would keep 0.69921875 (bf16's 0.7) and scale by bf16's 1/0.7: the masks
    are drawn and scaled in float32 and the product rounded once."""
    from harness.models.fused import MemberDropout

    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    drop = MemberDropout([0.3, 0.3], gens)
    h = torch.ones(2, 400_000, dtype=torch.bfloat16)
    out = drop(h)
    kept = (out != 0).float().mean().item()
    assert kept == pytest.approx(0.7, abs=0.003)
    assert out.dtype == torch.bfloat16
    assert set(out.unique().tolist()) == {0.0, torch.tensor(1 / 0.7).bfloat16().item()}
