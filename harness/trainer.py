"""The one train/evaluate loop every trial, test and standalone run goes through.

It follows the classic Chinese-Text-Classification loop (Adam, cross entropy, evaluate
on dev every `eval_every` batches, keep the weights with the best dev loss, stop after
`require_improvement` batches without improvement, test the best weights) and adds
schedules, clipping, seeds, bf16 autocast and gradient statistics.

Why it looks the way it does: the host must not wait for the device every batch. Data
lives on the device and is shuffled by one index permutation per epoch; per-step loss,
correct counts and gradient norms go into small device buffers; a report copies
everything it needs (train window, gradient statistics, dev result) to the host in one
transfer. Divergence (a non-finite loss or gradient) is therefore noticed at the next
report, not at the step itself, and ends the trial there.

No Ray here: `report` is any callable; Ray trials, the CLI and tests pass different ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness import schema
from harness.errors import UserError
from harness.gradstats import GradStats
from harness.models import build_model
from harness.trialconfig import TrainConfig, TrialConfig

Report = Callable[[dict[str, Any]], None]


@dataclass
class TrialSummary:
    """How one trial ended; `to_dict()` is JSON-ready."""

    status: str = "COMPLETED"  # COMPLETED | DIVERGED
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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(tc: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD+momentum; the fused implementation when the build has one."""
    if tc.optimizer == "adam":
        cls, kw = torch.optim.Adam, {}
    elif tc.optimizer == "adamw":
        cls, kw = torch.optim.AdamW, {}
    else:
        cls, kw = torch.optim.SGD, {"momentum": tc.momentum}
    kw.update(lr=tc.learning_rate, weight_decay=tc.weight_decay)
    try:
        return cls(params, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return cls(params, foreach=True, **kw)


def lr_at(tc: TrainConfig, step: int, epoch: int, total_steps: int) -> float:
    """Learning rate of 0-based `step` in 0-based `epoch`.

    Linear warmup over warmup_steps (any schedule), then: none -> constant;
    exponential -> x gamma per finished epoch; cosine -> half cosine from the base
    rate to 0 at total_steps.
    """
    base = tc.learning_rate
    if step < tc.warmup_steps:
        return base * (step + 1) / tc.warmup_steps
    if tc.schedule == "exponential":
        return base * tc.gamma**epoch
    if tc.schedule == "cosine":
        span = max(1, total_steps - tc.warmup_steps)
        t = min(1.0, (step - tc.warmup_steps) / span)
        return base * 0.5 * (1.0 + math.cos(math.pi * t))
    return base


# ---------------------------------------------------------------------- evaluation


@torch.inference_mode()
def evaluate(
    model: nn.Module, x: Tensor, y: Tensor, batch_size: int, autocast: Any, preds: bool = False
) -> tuple[Tensor, Tensor | None]:
    """Device tensor [loss_sum, correct] (plain cross entropy), and argmax predictions if asked.

    Nothing is read back here: the caller copies the result with its other numbers.
    """
    was_training = model.training
    model.eval()
    acc = torch.zeros(2, device=x.device)
    out = []
    for s in range(0, x.shape[0], batch_size):
        xb, yb = x[s : s + batch_size], y[s : s + batch_size]
        with autocast():
            logits = model(xb)
        logits = logits.float()
        p = logits.argmax(1)
        acc[0] += F.cross_entropy(logits, yb, reduction="sum")
        acc[1] += (p == yb).sum()
        if preds:
            out.append(p)
    model.train(was_training)
    return acc, (torch.cat(out) if preds else None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------- the loop


def train(
    cfg: TrialConfig,
    data: Any,
    report: Report | None = None,
    *,
    device: str | None = None,
    threads: int | None = None,
) -> TrialSummary:
    """Train cfg.model on `data` (a harness.data.Dataset), calling report(dict) at every evaluation."""
    tc = cfg.train
    if threads:
        torch.set_num_threads(int(threads))
    dev, note = pick_device(device, tc.device)
    seed_everything(tc.seed)
    summary = TrialSummary(device=str(dev), reason=note)

    model = build_model(
        cfg.model,
        cfg.params,
        vocab_size=data.vocab_size,
        num_classes=data.num_classes,
        pad_id=data.pad_id,
        seq_len=int(data.train_x.shape[1]),
    ).to(dev)
    model.train()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = make_optimizer(tc, [p for _, p in named])
    stats = GradStats(
        named,
        every=tc.grad_stats_every,
        clip_norm=tc.clip_norm,
        vanish_threshold=tc.vanish_threshold,
        explode_threshold=tc.explode_threshold,
    )
    use_amp = tc.amp and dev.type == "cuda"

    def autocast() -> Any:
        if use_amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def to_dev(a: np.ndarray) -> Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.long).to(dev)

    train_x, train_y = to_dev(data.train_x), to_dev(data.train_y)
    dev_x, dev_y = to_dev(data.dev_x), to_dev(data.dev_y)
    n_train, n_dev = int(train_y.shape[0]), int(dev_y.shape[0])
    if n_train == 0 or n_dev == 0:
        raise UserError(f"{data.name}: empty train or dev split")
    bs = tc.batch_size
    batches = math.ceil(n_train / bs)
    total_steps = batches * tc.max_epochs
    if tc.max_steps:
        total_steps = min(total_steps, tc.max_steps)
    shuffle_gen = torch.Generator().manual_seed(tc.seed)

    # per-step device buffers of the current report window: loss, correct, global grad norm
    window = torch.zeros(3, min(tc.eval_every, total_steps), device=dev)
    state = list(model.state_dict().values())
    best_state = [t.detach().clone() for t in state]
    best_loss, best_acc, best_it = math.inf, math.nan, 0
    label_smoothing = tc.label_smoothing

    step = 0  # batches trained
    samples = 0
    window_start, window_samples = 0, 0
    eval_seconds, eval_samples, eval_cpu = 0.0, 0, 0.0
    lr = lr_at(tc, 0, 0, total_steps)
    for group in optimizer.param_groups:
        group["lr"] = lr
    stop = False
    t_start, cpu_start = time.perf_counter(), time.process_time()
    epoch = 0
    for epoch in range(1, tc.max_epochs + 1):
        if tc.shuffle:
            perm = torch.randperm(n_train, generator=shuffle_gen).to(dev)
            ex, ey = train_x.index_select(0, perm), train_y.index_select(0, perm)
        else:
            ex, ey = train_x, train_y
        for b in range(batches):
            new_lr = lr_at(tc, step, epoch - 1, total_steps)
            if new_lr != lr:
                lr = new_lr
                for group in optimizer.param_groups:
                    group["lr"] = lr
            xb, yb = ex[b * bs : (b + 1) * bs], ey[b * bs : (b + 1) * bs]
            with autocast():
                logits = model(xb)
            logits = logits.float()
            loss = F.cross_entropy(logits, yb, label_smoothing=label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            sampled = stats.is_sampled(step)
            gnorm = stats.after_backward(sampled)
            optimizer.step()
            if sampled:
                stats.after_step()
            k = step - window_start
            window[0, k] = loss.detach()
            window[1, k] = (logits.detach().argmax(1) == yb).sum()
            if gnorm is not None:
                window[2, k] = gnorm
            step += 1
            samples += int(yb.shape[0])
            window_samples += int(yb.shape[0])
            if step % tc.eval_every and step < total_steps:
                continue

            # ---- evaluate + report: the one host transfer of this window
            _sync(dev)
            t_eval, cpu_eval = time.perf_counter(), time.process_time()
            dev_acc_t, _ = evaluate(model, dev_x, dev_y, tc.eval_batch_size, autocast)
            n = step - window_start
            host = torch.cat([window[:, :n].reshape(-1), stats.read(), dev_acc_t]).tolist()
            eval_seconds += time.perf_counter() - t_eval
            eval_cpu += time.process_time() - cpu_eval
            eval_samples += n_dev
            losses, corrects, norms = host[:n], host[n : 2 * n], host[2 * n : 3 * n]
            g_values = host[3 * n : 3 * n + stats.read_size]
            dev_loss = host[-2] / n_dev
            dev_acc = host[-1] / n_dev
            bad = [i for i in range(n) if not (math.isfinite(losses[i]) and math.isfinite(norms[i]))]
            improved = math.isfinite(dev_loss) and dev_loss < best_loss
            if improved:
                best_loss, best_acc, best_it = dev_loss, dev_acc, step
                with torch.no_grad():
                    torch._foreach_copy_(best_state, state)
            g_metrics, g_layers = stats.decode(g_values, norms, n)
            metrics: dict[str, Any] = {
                "iteration": step,
                "epoch": epoch,
                "samples": samples,
                "elapsed_s": time.perf_counter() - t_start,
                "lr": lr,
                "train_loss": sum(losses) / n,
                "train_acc": sum(corrects) / window_samples,
                "dev_loss": dev_loss,
                "dev_acc": dev_acc,
                "improved": improved,
                "best_dev_loss": best_loss,
                "best_dev_acc": best_acc,
                "grad_nonfinite": len(bad),
                **g_metrics,
            }
            metrics = {key: metrics[key] for key in schema.METRIC_KEYS}
            metrics[schema.LAYERS] = g_layers
            window.zero_()
            stats.reset()
            window_start, window_samples = step, 0
            if bad:
                first = window_start - n + bad[0]  # 0-based step index
                what = "loss" if not math.isfinite(losses[bad[0]]) else "gradient"
                summary.status = "DIVERGED"
                summary.reason = _join(
                    note,
                    f"non-finite {what} at iteration {first + 1} "
                    f"(lr {lr_at(tc, first, first // batches, total_steps):g})",
                )
            elif not math.isfinite(dev_loss):
                summary.status = "DIVERGED"
                summary.reason = _join(note, f"non-finite dev loss at iteration {step} (lr {lr:g})")
            if report is not None:
                report(metrics)
            if summary.status == "DIVERGED":
                stop = True
            elif step - best_it >= tc.require_improvement:
                summary.stopped_early = True
                stop = True
            if stop or step >= total_steps:
                stop = True
                break
        if stop:
            break
    _sync(dev)
    elapsed = time.perf_counter() - t_start
    summary.train_cpu_seconds = time.process_time() - cpu_start - eval_cpu

    summary.iterations, summary.epochs, summary.samples = step, epoch, samples
    summary.best_iteration, summary.best_dev_loss, summary.best_dev_acc = best_it, best_loss, best_acc
    if summary.status == "COMPLETED":
        t_test = time.perf_counter()
        with torch.no_grad():
            torch._foreach_copy_(state, best_state)
        _test(model, data, to_dev, tc, autocast, summary)
        test_seconds = time.perf_counter() - t_test
        eval_seconds += test_seconds
        eval_samples += int(data.test_y.shape[0])
        elapsed += test_seconds
    summary.elapsed_seconds = elapsed
    summary.eval_seconds = eval_seconds
    summary.train_seconds = max(elapsed - eval_seconds, 1e-9)
    summary.train_samples_per_s = samples / summary.train_seconds
    summary.eval_samples_per_s = eval_samples / eval_seconds if eval_seconds > 0 else 0.0
    return summary


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _test(
    model: nn.Module, data: Any, to_dev: Callable, tc: TrainConfig, autocast: Any, summary: TrialSummary
) -> None:
    """Accuracy, loss, macro F1, classification report and confusion matrix of the test split."""
    from sklearn.metrics import classification_report, confusion_matrix, f1_score

    x, y = to_dev(data.test_x), to_dev(data.test_y)
    acc, preds = evaluate(model, x, y, tc.eval_batch_size, autocast, preds=True)
    loss_sum, correct = acc.tolist()
    n = int(y.shape[0])
    y_true = np.asarray(data.test_y)
    y_pred = preds.cpu().numpy()
    labels = list(range(data.num_classes))
    summary.test_loss = loss_sum / n
    summary.test_acc = correct / n
    summary.test_f1_macro = float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))
    summary.report_text = classification_report(
        y_true, y_pred, labels=labels, target_names=list(data.classes), digits=4, zero_division=0
    )
    summary.confusion = confusion_matrix(y_true, y_pred, labels=labels).tolist()
