"""The one train/evaluate loop every trial, group of trials, test and standalone run goes through.

It follows the classic Chinese-Text-Classification loop (Adam, cross entropy, evaluate on
dev every `eval_every` batches, keep the weights with the best dev loss, stop after
`require_improvement` batches without improvement, test the best weights) and adds
schedules, clipping, seeds, bf16 autocast and gradient statistics.

It trains a *group*: N trials of one model that share every shape setting and differ in
fusible ones (harness.trialconfig), as one module (harness.members) whose forward gives
[N, B, C] logits. One step is one forward and backward over the same batch for every member
and one optimizer step with each member's own learning rate; every report, early stop,
divergence and test is per member, and a member that ends leaves the group (`drop`), so the
others run on cheaper and unchanged. A single trial is the group of one (`train`).

Why it looks the way it does: the host must not wait for the device every batch. Data
lives on the device and is shuffled by one index permutation per epoch; per-step loss,
correct counts and gradient norms go into small device buffers (harness.window); a report
copies everything it needs (train window, gradient statistics, dev result) to the host in
one transfer. Divergence (a non-finite loss or gradient) is therefore noticed at the next
report, not at the step itself, and ends the member there. A non-finite gradient on a step
whose gradients were not measured shows up one step later, in the next step's loss. On CUDA
the step can run as a captured CUDA graph (harness.graphs).

No Ray here: `report` is any callable; Ray trials, the CLI and tests pass different ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness import budget
from harness import members as grouping
from harness import window as windows
from harness.errors import UserError
from harness.evaluation import evaluate, evaluate_members, full_precision, test  # noqa: F401
from harness.gradstats import GradStats
from harness.halves import train_in_halves
from harness.keeper import Keeper
from harness.models import build_model
from harness.optimizer import MemberOptimizer, lr_at
from harness.schema import Status
from harness.trialconfig import TrialConfig, check_group, with_batch_seed

Report = Callable[[dict[str, Any]], Any]
MemberReport = Callable[[int, dict[str, Any]], Any]
Checkpoint = Callable[[dict[str, Any]], Any]  # gets Loop.state_dict() at checkpoint points
STATE_FORMAT = 1  # bump when Loop.state_dict() changes shape
PRUNE = "prune"  # a report callback's verdict: stop this member now (recorded as PRUNED)

seed_everything = grouping.seed_everything


@dataclass
class TrialSummary:
    """How one trial (one member of a group) ended; `to_dict()` is JSON-ready."""

    status: str = Status.COMPLETED  # COMPLETED | DIVERGED | PRUNED
    reason: str = ""  # why it diverged; notes such as a device fallback
    best_iteration: int = 0
    best_dev_loss: float = math.inf
    best_dev_acc: float = math.nan
    test_acc: float = math.nan
    test_loss: float = math.nan
    test_f1_macro: float = math.nan
    report_text: str = ""  # sklearn classification_report of the test split
    confusion: list[list[int]] = field(default_factory=list)
    iterations: int = 0
    epochs: int = 0
    samples: int = 0
    train_seconds: float = 0.0  # training steps only
    eval_seconds: float = 0.0  # dev and test evaluation
    elapsed_seconds: float = 0.0  # everything from the first step to the test result
    train_cpu_seconds: float = 0.0  # process CPU time of the training steps (robust on busy hosts)
    train_samples_per_s: float = 0.0
    eval_samples_per_s: float = 0.0
    device: str = "cpu"
    stopped_early: bool = False
    group_size: int = 1  # members trained together (1: alone)
    fused: bool = False  # the group ran as one fused module (harness.members.Fused)
    cuda_graphs: bool = False  # its training step ran as a captured CUDA graph

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------- set-up helpers


def pick_device(requested: str | None, configured: str) -> tuple[torch.device, str]:
    """(device, note). An explicit request must be satisfiable; a configured 'cuda' falls back."""
    cuda = torch.cuda.is_available()
    if requested:
        if requested == "auto":
            return torch.device("cuda" if cuda else "cpu"), ""
        dev = torch.device(requested)
        if dev.type == "cuda" and not cuda:
            raise UserError(f"device: {requested!r} requested but CUDA is not available here")
        return dev, ""
    if configured == "cuda" and not cuda:
        return torch.device("cpu"), "cuda requested but not available; ran on cpu"
    if configured == "auto":
        return torch.device("cuda" if cuda else "cpu"), ""
    return torch.device(configured), ""


def autocast_for(device: torch.device, amp: bool) -> Callable[[], Any]:
    """bf16 autocast on CUDA when `amp`, else nothing."""
    if amp and device.type == "cuda":  # no weight cache: a captured step must not keep one
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext


def member_loss(logits: Tensor, y: Tensor, smoothing: Sequence[float]) -> Tensor:
    """Per-member mean cross entropy [N] of logits [N, B, C], each with its label smoothing."""
    n, b, c = logits.shape
    if len(set(smoothing)) == 1:
        per = F.cross_entropy(
            logits.reshape(n * b, c), y.repeat(n), label_smoothing=smoothing[0], reduction="none"
        )
        return per.view(n, b).mean(1)
    logp = F.log_softmax(logits, dim=2)
    nll = -logp.gather(2, y.view(1, b, 1).expand(n, b, 1)).squeeze(2)
    key = (tuple(smoothing), logits.device, logits.dtype)
    eps = _SMOOTHING.get(key)
    if eps is None:  # made once (a captured step may not copy from the host)
        eps = _SMOOTHING[key] = torch.tensor(key[0], dtype=logits.dtype, device=logits.device)
    eps = eps.view(n, 1)
    return ((1 - eps) * nll + eps * (-logp.sum(2) / c)).mean(1)


_SMOOTHING: dict[tuple, Tensor] = {}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


# ---------------------------------------------------------------------- the loop


def train(
    cfg: TrialConfig,
    data: Any,
    report: Report | None = None,
    *,
    device: str | None = None,
    threads: int | None = None,
    on_batch: Callable[[Loop], Any] | None = None,
    checkpoint: Checkpoint | None = None,
    state: dict[str, Any] | None = None,
    init: dict[str, Tensor] | None = None,
    tested: Callable[[dict[str, Tensor]], Any] | None = None,
) -> TrialSummary:
    """Train one trial on `data` (a harness.data.Dataset), calling report(dict) at every
    evaluation: the group of one. `checkpoint`, `state`, `init`: see train_group;
    tested(weights) gets the weights the test scored when the trial completes."""
    member_report = None if report is None else (lambda _i, m: report(m))
    member_tested = None if tested is None else (lambda _i, w: tested(w))
    return train_group(
        [cfg], data, member_report, device=device, threads=threads, checkpoint=checkpoint,
        state=state, init=None if init is None else [init], tested=member_tested,
        on_batch=on_batch,
    )[0]  # fmt: skip


def train_group(
    cfgs: Sequence[TrialConfig],
    data: Any,
    report: MemberReport | None = None,
    *,
    device: str | None = None,
    threads: int | None = None,
    fuse: str = "auto",
    on_batch: Callable[[Loop], Any] | None = None,
    after_report: Callable[[Loop], Any] | None = None,
    checkpoint: Checkpoint | None = None,
    state: dict[str, Any] | None = None,
    init: Sequence[dict[str, Tensor] | None] | None = None,
    tested: Callable[[int, dict[str, Tensor]], Any] | None = None,
) -> list[TrialSummary]:
    """Train the members `cfgs` together on `data`; report(member, dict) at every evaluation
    of each live member (return PRUNE to stop that member). Members may differ only in
    fusible settings; their batch order is the first member's unless they set data_seed.
    `fuse` chooses the group's form (harness.members.build: auto, fused, stacked, vmap).
    `on_batch(loop)` runs after every step (a progress bar; it must not read the device);
    `after_report(loop)` after every evaluation (a sweep sends the members that ended).

    checkpoint(state): called after every `checkpoint_every`-th evaluation while the group
    goes on, with `Loop.state_dict()` (live tensors: write them before returning).
    state: such a state to continue from, exactly where it was taken (same form).
    init: per member, weights (a plain model's state_dict) to start from instead of the
    seeded init. tested(member, weights): each completed member's tested weights (CPU).

    Out of device memory before the first report, a group of several trains as two halves
    (harness.halves, without checkpoints); later, or alone, the error goes to the caller (a
    sweep fails the members still running, each with the reason)."""
    if state is not None:
        fuse = state["form"]  # the numbers of the other form differ in rounding
    loop: Loop | None = None
    try:
        loop = Loop(cfgs, data, device=device, threads=threads, fuse=fuse)
        return run_loop(loop, report, on_batch, after_report, checkpoint, state, init, tested)
    except torch.OutOfMemoryError as exc:
        sent = loop is not None and loop.reports > 0
        if len(cfgs) < 2 or sent or state is not None:
            raise
        loop = None
        free_device_memory(exc)
    return train_in_halves(
        cfgs, data, report, device=device, threads=threads, fuse=fuse,
        on_batch=on_batch, after_report=after_report, init=init, tested=tested,
    )  # fmt: skip


def run_loop(
    loop: Loop,
    report: MemberReport | None,
    on_batch: Callable[[Loop], Any] | None = None,
    after_report: Callable[[Loop], Any] | None = None,
    checkpoint: Checkpoint | None = None,
    state: dict[str, Any] | None = None,
    init: Sequence[dict[str, Tensor] | None] | None = None,
    tested: Callable[[int, dict[str, Tensor]], Any] | None = None,
) -> list[TrialSummary]:
    """The loop itself, on a Loop already built (train_group builds it; a benchmark that
    inspects the loop builds its own): 1. start (weights, a state), 2. per batch a step,
    3. at each report the evaluation, a checkpoint, the caller's hook, 4. close the members
    still running."""
    loop.tested = tested
    for i, weights in enumerate(init or []):
        if weights is not None:
            loop.load_weights(i, weights)
    if state is not None:
        loop.load_state_dict(state)
    for epoch in range(max(loop.epoch, 1), loop.max_epochs + 1):
        for xb, yb in loop.batches(epoch):
            loop.step(xb, yb)
            if on_batch is not None:
                on_batch(loop)
            if loop.report_due():
                loop.evaluate_and_report(report)
                if checkpoint is not None and loop.checkpoint_due():
                    checkpoint(loop.state_dict())
                if after_report is not None:
                    after_report(loop)
            if loop.done():
                break
        if loop.done():
            break
    return loop.close()


def free_device_memory(exc: BaseException | None = None) -> None:
    """Give back the device memory of tensors no longer referenced (a failed group's, a
    finished trial's): `exc`'s traceback would keep their frames alive, so it is dropped.
    Never creates a CUDA context."""
    import gc

    if exc is not None:
        exc.__traceback__ = None
    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


class Loop:
    """The state of one group's training: members, optimizer, statistics, window, keeper."""

    def __init__(
        self,
        cfgs: Sequence[TrialConfig],
        data: Any,
        *,
        device: str | None = None,
        threads: int | None = None,
        fuse: str = "auto",
    ) -> None:
        cfgs = with_batch_seed(cfgs, cfgs[0].train.batch_seed) if cfgs else cfgs
        check_group(cfgs)
        self.cfgs = list(cfgs)
        self.tc = tc = cfgs[0].train  # the shape settings every member shares
        if threads:
            torch.set_num_threads(int(threads))
        self.device, note = pick_device(device, tc.device)
        self.data = data
        self._place_data(data)
        self._build_group(fuse, note)
        self.graph = None
        if self.device.type == "cuda" and tc.cuda_graphs:
            from harness.graphs import GraphedStep

            self.graph = GraphedStep(self)
        self.step_count = 0  # batches trained
        self.reports = 0  # evaluations so far (every live member reports at each)
        self.samples = 0
        self.epoch = 0
        self.eval_seconds, self.eval_samples, self.eval_cpu = 0.0, 0, 0.0
        self.lrs = [lr_at(c, 0, 0, self.total_steps) for c in self.optimizer.configs]
        self.t_start, self.cpu_start = time.perf_counter(), time.process_time()
        self.checkpoint_every = self.tc.checkpoint_interval(self.per_epoch)
        self.epoch_rng = self.shuffle_gen.get_state()  # before this epoch's permutation
        self.tested: Callable[[int, dict[str, Tensor]], Any] | None = None

    def _place_data(self, data: Any) -> None:
        """The splits on the device once; the epoch's length and the run's step budget."""
        tc = self.tc
        self.train_x, self.train_y = self._to_dev(data.train_x), self._to_dev(data.train_y)
        self.dev_x, self.dev_y = self._to_dev(data.dev_x), self._to_dev(data.dev_y)
        self.n_train, self.n_dev = int(self.train_y.shape[0]), int(self.dev_y.shape[0])
        if self.n_train == 0 or self.n_dev == 0:
            raise UserError(f"{data.name}: empty train or dev split")
        self.batch_size = tc.batch_size
        self.per_epoch = math.ceil(self.n_train / tc.batch_size)
        self.max_epochs = tc.max_epochs
        self.total_steps = budget.steps(self.n_train, tc.batch_size, tc.max_epochs, tc.max_steps)
        self.shuffle_gen = torch.Generator().manual_seed(tc.batch_seed)

    def _build_group(self, fuse: str, note: str) -> None:
        """The members and, per member, its optimizer state, statistics, window and keeper."""
        cfgs, n = self.cfgs, len(self.cfgs)
        self.members = grouping.build(cfgs, self.data, self.device, build_model, fuse=fuse)
        self.alive = list(range(n))  # original member index of each current position
        self.summaries = [
            TrialSummary(
                device=str(self.device), reason=note, group_size=n, fused=self.members.fused
            )
            for _ in cfgs
        ]
        params = self.members.params()
        trains = [c.train for c in cfgs]
        self.optimizer = MemberOptimizer(trains, params)
        self.stats = GradStats(self.members.names, params, trains, embedding=self.members.embedding)
        self.keeper = Keeper(params, [t.require_improvement for t in trains])
        self.window = windows.Window(n, min(self.tc.eval_every, self.total_steps), self.device)
        self.autocast = autocast_for(self.device, self.tc.amp)

    def member_generators(self) -> list[torch.Generator]:
        """The members' own device generators (a captured step registers them)."""
        return [g for g in _generators(self.members) or [] if g.device.type == "cuda"]

    def _to_dev(self, a: np.ndarray) -> Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.long).to(self.device)

    # ---------------------------------------------------------------- batches

    def batches(self, epoch: int):
        """The epoch's batches in the group's order (one permutation per epoch)."""
        self.epoch = epoch
        self.epoch_rng = self.shuffle_gen.get_state()
        if self.tc.shuffle:
            perm = torch.randperm(self.n_train, generator=self.shuffle_gen).to(self.device)
            ex, ey = self.train_x.index_select(0, perm), self.train_y.index_select(0, perm)
        else:
            ex, ey = self.train_x, self.train_y
        bs = self.batch_size
        first = max(0, self.step_count - (epoch - 1) * self.per_epoch)  # > 0: a resumed epoch
        for b in range(first, self.per_epoch):
            if self.step_count >= self.total_steps:
                return
            yield ex[b * bs : (b + 1) * bs], ey[b * bs : (b + 1) * bs]

    def done(self) -> bool:
        return not self.alive or self.step_count >= self.total_steps

    def report_due(self) -> bool:
        return self.step_count % self.tc.eval_every == 0 or self.step_count >= self.total_steps

    # ---------------------------------------------------------------- one batch

    def step(self, xb: Tensor, yb: Tensor) -> None:
        """Forward and backward of every member on one batch, then each member's update."""
        self.lrs = [
            lr_at(c, self.step_count, self.epoch - 1, self.total_steps)
            for c in self.optimizer.configs
        ]
        sampled = self.stats.is_sampled(self.step_count)
        k = self.window.steps
        if self.graph is None or not self.graph.run(xb, yb, k, sampled):
            self.optimizer.lr = list(self.lrs)
            self.step_eager(xb, yb, k, sampled)
        self.stats.count(sampled)
        self.window.batch_sizes.append(int(yb.shape[0]))
        self.step_count += 1
        self.samples += int(yb.shape[0])

    def step_eager(self, xb: Tensor, yb: Tensor, k: int | Tensor, sampled: list[bool]) -> None:
        """The step itself: device work only, no host read (CUDA graphs capture exactly this)."""
        members = self.members
        with self.autocast():
            logits = members(xb)
        logits = full_precision(logits)
        loss = member_loss(logits, yb, [c.label_smoothing for c in self.optimizer.configs])
        members.zero_grad_()
        loss.sum().backward()
        params, grads = members.params(), members.grads()
        norm = self.stats.after_backward(grads, params, sampled)
        self.optimizer.step(params, grads)
        if any(sampled):
            self.stats.after_step(params)
        correct = (logits.detach().argmax(2) == yb).sum(1)
        self.window.record(k, loss, correct, norm)

    # ---------------------------------------------------------------- one report

    def evaluate_and_report(self, report: MemberReport | None) -> None:
        """Dev evaluation of every member, one host transfer, one report per live member;
        members that diverged, ran out of patience, were pruned or finished leave."""
        _sync(self.device)
        self.reports += 1
        t_eval, cpu_eval = time.perf_counter(), time.process_time()
        dev = evaluate_members(
            self.members, self.dev_x, self.dev_y, self.tc.eval_batch_size, self.autocast
        )
        params = self.members.params()
        host = torch.cat(
            [self.window.device_values(), self.stats.read(params), dev.reshape(-1)]
        ).tolist()
        self.eval_seconds += time.perf_counter() - t_eval
        self.eval_cpu += time.process_time() - cpu_eval
        self.eval_samples += self.n_dev
        ws, gs = self.window.read_size, self.stats.read_size
        steps = self.window.steps
        win = self.window.decode(host[:ws])
        grads = self.stats.decode(host[ws : ws + gs], [w["norm"] for w in win], steps)
        dev_values = host[ws + gs :]
        elapsed = time.perf_counter() - self.t_start
        ended: dict[int, tuple[str, str]] = {}
        for j, i in enumerate(self.alive):
            dev_loss, dev_acc = dev_values[2 * j] / self.n_dev, dev_values[2 * j + 1] / self.n_dev
            improved = self.keeper.update(j, dev_loss, dev_acc, self.step_count, params[j])
            g_metrics, g_layers = grads[j]
            why = self._divergence(j, win[j], dev_loss, steps)
            last = bool(why) or self.keeper.exhausted(j, self.step_count) or (
                self.step_count >= self.total_steps
            )  # the loop ends the member at this report (divergence, patience, budget): it says so
            metrics = windows.row(
                step=self.step_count, report=self.reports, epoch=self.epoch, samples=self.samples, elapsed=elapsed,
                lr=self.lrs[j], window=win[j], batch_sizes=self.window.batch_sizes,
                dev_loss=dev_loss, dev_acc=dev_acc, improved=improved,
                best_loss=self.keeper.best_loss[j], best_acc=self.keeper.best_acc[j],
                grad=g_metrics, layers=g_layers, last=last,
            )  # fmt: skip
            verdict = report(i, metrics) if report is not None else None
            if why:
                ended[j] = (Status.DIVERGED, why)
            elif verdict == PRUNE:
                ended[j] = (Status.PRUNED, "")
            elif self.keeper.exhausted(j, self.step_count):
                ended[j] = (Status.COMPLETED, "early")
            elif self.step_count >= self.total_steps:
                ended[j] = (Status.COMPLETED, "")
        self.window.reset()
        self.stats.reset()
        if ended:
            self._end(ended)

    def _divergence(self, j: int, win: dict[str, list[float]], dev_loss: float, steps: int) -> str:
        """Why member j diverged in this window ('' if it did not)."""
        bad = windows.nonfinite_steps(win)
        if bad:
            first = self.step_count - steps + bad[0]  # 0-based step index
            what = "loss" if not math.isfinite(win["loss"][bad[0]]) else "gradient"
            cfg = self.optimizer.configs[j]
            lr = lr_at(cfg, first, first // self.per_epoch, self.total_steps)
            return f"non-finite {what} at iteration {first + 1} (lr {lr:g})"
        if not math.isfinite(dev_loss):
            return f"non-finite dev loss at iteration {self.step_count} (lr {self.lrs[j]:g})"
        return ""

    # ---------------------------------------------------------------- members that end

    def _end(self, ended: dict[int, tuple[str, str]]) -> None:
        """Close the ended members (test the completed ones on their best weights), then drop
        them so the rest of the group runs without their compute."""
        for j, (status, why) in ended.items():
            self._finish(j, status, why)
        keep = [j for j in range(len(self.alive)) if j not in ended]
        self.alive = [self.alive[j] for j in keep]
        if self.alive and len(keep) < self.members.n:
            self._keep(keep)

    def _keep(self, keep: list[int]) -> None:
        """Only these members (current positions) go on: drop the others everywhere."""
        self.members.drop(keep)
        self.optimizer.keep(keep)
        self.stats.keep(keep)
        self.window.keep(keep)
        self.keeper.keep(keep)
        self.lrs = [self.lrs[j] for j in keep]
        if self.graph is not None:
            self.graph.reset()

    def _finish(self, j: int, status: str, why: str) -> None:
        s = self.summaries[self.alive[j]]
        _sync(self.device)
        elapsed = time.perf_counter() - self.t_start
        s.train_cpu_seconds = time.process_time() - self.cpu_start - self.eval_cpu
        s.iterations, s.epochs, s.samples = self.step_count, self.epoch, self.samples
        s.best_iteration, s.best_dev_loss = self.keeper.best_it[j], self.keeper.best_loss[j]
        s.best_dev_acc = self.keeper.best_acc[j]
        s.stopped_early = why == "early"
        s.status = status
        if status == Status.DIVERGED:
            s.reason = _join(s.reason, why)
        eval_seconds, eval_samples = self.eval_seconds, self.eval_samples
        if status == Status.COMPLETED:
            t_test = time.perf_counter()
            model = self.members.member_model(j, self.keeper.weights[j])
            test(model, self.data, self._to_dev, self.tc, self.autocast, s)
            test_seconds = time.perf_counter() - t_test
            eval_seconds += test_seconds
            eval_samples += int(self.data.test_y.shape[0])
            elapsed += test_seconds
            if self.tested is not None:
                weights = {
                    k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
                }
                self.tested(self.alive[j], weights)
        if self.graph is not None:
            s.cuda_graphs = self.graph.captured
            s.reason = _join(s.reason, self.graph.note)
        s.elapsed_seconds = elapsed
        s.eval_seconds = eval_seconds
        s.train_seconds = max(elapsed - eval_seconds, 1e-9)
        s.train_samples_per_s = self.samples / s.train_seconds
        s.eval_samples_per_s = eval_samples / eval_seconds if eval_seconds > 0 else 0.0

    def close(self) -> list[TrialSummary]:
        """End every member still running (the budget of steps or epochs is spent)."""
        if self.alive:
            self._end({j: (Status.COMPLETED, "") for j in range(len(self.alive))})
        return self.summaries

    # ---------------------------------------------------------------- checkpoints

    def checkpoint_due(self) -> bool:
        """A checkpoint belongs after this evaluation: every `checkpoint_every`-th report
        (TrainConfig.checkpoint_interval) while members go on."""
        every = self.checkpoint_every
        return bool(every) and self.reports % every == 0 and not self.done()

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly from here (taken after a report, when the
        window and the gradient statistics are empty): the live members' weights, optimizer
        states and kept best weights, the counters, every member's summary so far, and the
        random streams. The batch order is kept as the shuffle generator's state from before
        this epoch's permutation, so a resumed epoch draws the same permutation and skips the
        batches already trained. Tensors are the loop's own (not copies)."""
        gens = _generators(self.members)
        rng: dict[str, Any] = {
            "shuffle": self.epoch_rng,
            "torch": torch.get_rng_state(),
            "members": None if gens is None else [g.get_state() for g in gens],
        }
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        keeper = {
            "weights": self.keeper.weights, "best_loss": self.keeper.best_loss,
            "best_acc": self.keeper.best_acc, "best_it": self.keeper.best_it,
        }  # fmt: skip
        counters = {
            "step_count": self.step_count, "reports": self.reports, "samples": self.samples,
            "epoch": self.epoch, "eval_seconds": self.eval_seconds,
            "eval_samples": self.eval_samples, "eval_cpu": self.eval_cpu,
            "elapsed": time.perf_counter() - self.t_start,
            "cpu": time.process_time() - self.cpu_start,
        }  # fmt: skip
        return {
            "format": STATE_FORMAT,
            "form": "fused" if self.members.fused else "stacked",
            "alive": list(self.alive),
            "members": dict(self.members.state_dict()),
            "optimizer": [dict(st) for st in self.optimizer.state],
            "keeper": keeper,
            "summaries": [s.to_dict() for s in self.summaries],
            "counters": counters,
            "lrs": list(self.lrs),
            "rng": rng,
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()` of a loop built from the same configs (PBT: the
        same shapes; fusible settings such as the learning rate may differ)."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"checkpoint format {state.get('format')!r}, expected {STATE_FORMAT}")
        alive = [int(i) for i in state["alive"]]
        if len(alive) < len(self.alive):
            keep = [self.alive.index(i) for i in alive]
            self.alive = alive
            self._keep(keep)
        self.members.load_state_dict(state["members"])
        for mine, saved in zip(self.optimizer.state, state["optimizer"]):
            for name, tensors in saved.items():
                old = mine[name]
                mine[name] = [
                    None if t is None else t.to(o.device if o is not None else self.device, copy=True)
                    for t, o in zip(tensors, old)
                ]  # fmt: skip
        kept = state["keeper"]
        for mine_w, saved_w in zip(self.keeper.weights, kept["weights"]):
            torch._foreach_copy_(mine_w, [t.to(self.device) for t in saved_w])
        self.keeper.best_loss = [float(v) for v in kept["best_loss"]]
        self.keeper.best_acc = [float(v) for v in kept["best_acc"]]
        self.keeper.best_it = [int(v) for v in kept["best_it"]]
        self.summaries = [TrialSummary(**d) for d in state["summaries"]]
        for i in self.alive:
            self.summaries[i].device = str(self.device)
        c = state["counters"]
        self.step_count, self.reports, self.samples = c["step_count"], c["reports"], c["samples"]
        self.epoch, self.eval_seconds = c["epoch"], c["eval_seconds"]
        self.eval_samples, self.eval_cpu = c["eval_samples"], c["eval_cpu"]
        self.t_start = time.perf_counter() - c["elapsed"]
        self.cpu_start = time.process_time() - c["cpu"]
        self.lrs = [float(v) for v in state["lrs"]]
        rng = state["rng"]
        self.shuffle_gen.set_state(rng["shuffle"])
        self.epoch_rng = rng["shuffle"]
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        gens = _generators(self.members)
        for g, saved in zip(gens or [], rng["members"] or []):
            g.set_state(saved)
        if self.graph is not None:
            self.graph.reset()

    @torch.no_grad()
    def load_weights(self, i: int, weights: dict[str, Tensor]) -> None:
        """Member i starts from `weights` (a plain model's state_dict, e.g. a saved model's)
        instead of its seeded init; its kept best weights start there too."""
        target = self.members.member_state(i)
        missing = sorted(set(target) - set(weights))
        extra = sorted(set(weights) - set(target))
        wrong = [k for k in target if k in weights and weights[k].shape != target[k].shape]
        if missing or extra or wrong:
            what = "; ".join(
                f"{label}: {', '.join(names[:5])}"
                for label, names in (("missing", missing), ("unexpected", extra),
                                     ("other shape", wrong)) if names
            )  # fmt: skip
            raise UserError(f"the weights do not fit {self.cfgs[i].model} as configured ({what})")
        for k, t in target.items():
            t.copy_(weights[k])
        torch._foreach_copy_(self.keeper.weights[i], [p.detach() for p in self.members.params()[i]])


def _generators(members: nn.Module) -> list[torch.Generator] | None:
    """The members' own dropout streams (any group of N > 1), else None (a group of one
    draws from the global streams)."""
    if isinstance(members, grouping.Fused):
        return members.dropout.generators
    return getattr(members, "rng", None)
