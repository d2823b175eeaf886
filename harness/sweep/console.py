"""The lines a person watches: what the sweep is, a line per finished trial, a table now and
then, and a summary that says where everything went.

While trials run there is more, in two forms, so a long trial is never silence: on a terminal
a live block under the scrolling lines (a status line: finished / running / pruned counts,
the best so far, elapsed time and an ETA from the budget; then each running trial's last
report), redrawn in place about once a second; anywhere else (a file, a pipe, a notebook) one
plain `progress:` line at least every `every_s` seconds (30) while trials run. The sweep's
callback drives both through `tick()`, which Tune calls many times a second (on_step_end), so
no thread is needed and nothing else writes to the stream meanwhile.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import optuna
import yaml

from harness import results as rs
from harness.config import SweepSpec
from harness.data import Dataset
from harness.files import shown
from harness.schema import Status
from harness.sweep.groups import FusePlan, shape_names
from harness.sweep.search import SearchPlan, optuna_storage_url
from harness.tracker import TB_DIR
from harness.values import finite, fmt

UI_HINT = "tensorboard and optuna-dashboard: pip install -e '.[ui]'"


def study_url(folder: Path) -> str:
    """optuna.db's storage URL as the user reads it: relative under the working folder."""
    return f"sqlite:///{shown(folder / rs.OPTUNA_FILE)}"


def gain(metric: str, goal: str, best: float, base: float) -> str:
    """How far `best` beat the baseline's `base`, in the goal's direction: in points for an
    accuracy or F1 (fractions), else the plain difference."""
    diff = best - base
    points = any(k in metric for k in ("acc", "f1"))
    size = f"{abs(diff) * 100:.2f} pt" if points else f"{abs(diff):.4g}"
    if goal == "maximize":
        return f"+{size} over the baseline" if diff >= 0 else f"{size} below the baseline"
    return f"{size} below the baseline" if diff <= 0 else f"{size} above the baseline"


class Console:
    """Concise progress: a line per finished trial, a table now and then, a summary at the end;
    while trials run, a live block on a terminal or a plain progress line every `every_s`."""

    def __init__(
        self,
        spec: SweepSpec,
        out: TextIO | None = None,
        table_every: int = 5,
        *,
        live: bool | None = None,
        every_s: float = 30.0,
        redraw_s: float = 1.0,
    ) -> None:
        self.spec = spec
        self.out = out
        self.table_every = table_every
        self.finished = 0
        self.total = spec.budget.num_samples
        self.searched = list(spec.searched)
        self.t0 = time.monotonic()
        self.live = live  # None: a live block when the stream is a terminal
        self.every_s = every_s  # plain progress lines, when not live
        self.redraw_s = redraw_s  # live block refresh
        self.running: dict[str, dict[str, Any]] = {}  # trial id -> name and last report
        self.counts: dict[str, int] = {}  # statuses of the trials finished in this run
        self.done_here = 0  # trials finished in this run (a resume starts after others)
        self.best: Mapping[str, Any] | None = None  # best finished row so far
        self.first_start: float | None = None  # monotonic time the first trial started
        self._drawn = 0  # lines of the live block on the screen now
        self._last_draw = 0.0
        self._last_plain: float | None = None
        self._stopped = False
        self.wait_every = 30.0  # seconds between "waiting" lines while no trial can start

    def _stream(self) -> TextIO:
        # sys.stdout looked up at each call: Tune pickles its callbacks, and a stream
        # (pytest's capture, say) need not be picklable
        return self.out or sys.stdout

    def is_live(self) -> bool:
        """A live block: asked for, or the stream is a terminal that understands cursor moves."""
        if self.live is not None:
            return self.live
        stream = self._stream()
        try:
            tty = stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        return tty and os.environ.get("TERM", "") != "dumb"

    def print(self, line: str = "") -> None:
        """A line that stays (scrolls up); the live block, if shown, is redrawn below it."""
        stream = self._stream()
        drawn = self._drawn
        self._erase()
        print(line, file=stream, flush=True)
        if drawn:
            self._draw()

    # the start -----------------------------------------------------------------------------
    def header(self, data: Dataset) -> None:
        """The first line, as soon as the data is loaded: what the sweep is."""
        spec = self.spec
        self.print(
            f"sweep {spec.name}: {spec.budget.num_samples} trials of {spec.model} on {data.name} "
            f"({data.train_x.shape[0]} train), method {spec.method}, early_terminate "
            f"{spec.early_terminate.type}, {spec.metric.name} ({spec.metric.goal})"
        )

    def starting_ray(self, address: str | None) -> None:
        """Ray takes seconds to start: say so before it does."""
        if address:
            self.print(f"  joining Ray at {address} ...")
        else:
            self.print("  starting a private Ray on 127.0.0.1 (a few seconds) ...")

    def announce(self, folder: Path, cluster: Mapping[str, Any]) -> None:
        """What runs where, and where its results and Ray's log go."""
        spec, r = self.spec, self.spec.resources
        where = (
            f"Ray {cluster['address']} ({cluster['nodes']} node(s), {cluster['cpus']:g} cpu, "
            f"{cluster['gpus']:g} gpu)"
        )
        if cluster.get("dashboard"):
            where += f", dashboard http://{cluster['dashboard']}"
        self.print(
            f"  {spec.budget.max_concurrent} at a time, cpu {r.cpu:g} gpu {r.gpu:g} each; {where}"
        )
        here = shown(folder)
        self.print(f"  results -> {here}/  (Ray's log: {shown(folder / rs.LOG_FILE)})")
        watch = [f"optuna-dashboard {study_url(folder)}"]
        if spec.tensorboard:
            watch.insert(0, f"tensorboard --logdir {shown(folder / TB_DIR)}")
        if spec.mlflow is not None:
            watch.append(f"MLflow at {spec.mlflow.tracking_uri}")
        self.print(f"  watch it: {'; '.join(watch)}  ({UI_HINT})")

    def starting_trials(self, trials: int) -> None:
        """Until the first trial reports, Ray starts a process per trial that imports torch and
        the loop and fetches the data: seconds on a small machine."""
        if trials > 0:
            self.print(
                "  starting the first trials (a process each: torch, the loop, the data) ..."
            )

    def grouping(self, fuse: FusePlan, trials: int, cluster: Mapping[str, Any]) -> None:
        """How trials are grouped (resources.fuse): '8 trials in 2 groups of 4 on 1 GPU'.
        Unfused, nothing to say: each trial runs alone, as a sweep always did."""
        r = self.spec.resources
        if trials <= 0:  # a resume with nothing left to run: the resuming line said so
            return
        if not fuse.fused:
            return
        groups = fuse.groups(trials)
        at_once = min(groups, self.spec.budget.max_concurrent)
        held = at_once * (r.gpu if r.gpu > 0 else r.cpu)
        unit = "GPU" if r.gpu > 0 else "CPU"
        shared = shape_names(self.spec)  # searched shape settings: members must share them
        if shared:
            how = f"groups of up to {fuse.size} (at least {groups}; a group shares {', '.join(shared)})"
        else:
            of = f"of {fuse.size}" if trials % fuse.size == 0 else f"of up to {fuse.size}"
            how = f"{groups} groups {of}"
        self.print(
            f"  {trials} trials in {how} on {held:g} {unit}{'s' if held > 1 else ''}"
            f" ({at_once} group(s) at a time; resources.fuse {fuse.setting}: {fuse.why})"
        )

    def resuming(self, finished: int, rerun: int, remaining: int) -> None:
        """A resumed sweep counts on from the trials already finished."""
        self.finished = finished
        self.print(
            f"  resuming: {finished} trials done, {rerun} interrupted "
            f"(run again from the start), {max(0, remaining - rerun)} new"
        )

    def search(self, plan: SearchPlan) -> None:
        """method auto: what it chose and why (one line); the warm-start trials, if any."""
        if plan.choice is not None:
            self.print(f"  search: {plan.choice.describe()}")
        if plan.warm is not None:
            self.print(plan.warm.line())
            for line in plan.warm.warnings():
                self.print(f"warning: {line}")

    def baseline(self) -> None:
        """Where the classic configuration had to be adapted to the space."""
        for note in self.spec.baseline_notes():
            self.print(f"  baseline: {note}")

    # while trials run ----------------------------------------------------------------------
    def trial_line(self, row: Mapping[str, Any]) -> None:
        self.finished += 1
        self._finished(row)
        metric = self.spec.metric.name
        value = row.get("metric")
        parts = [
            f"[{self.finished:>{len(str(self.total))}}/{self.total}]",
            rs.trial_name(row),
            f"{row.get('status', '?'):<9}",
            f"{metric}={fmt(value)}",
            f"it={fmt(row.get('iterations'))}",
            f"best_it={fmt(row.get('best_iteration'))}",
            f"{fmt(row.get('train_s'))}s",
        ]
        if row.get("trial_number") == 0 and self.spec.baseline:
            parts.append("(baseline)")
        params = " ".join(
            f"{n}={fmt(rs.decode_param(row.get('param.' + n)))}" for n in self.searched
        )
        line = "  ".join(parts) + ("  " + params if params else "")
        if row.get("status") in (Status.FAILED, Status.DIVERGED) and row.get("error"):
            line += f"\n      {row['status'].lower()}: {str(row['error']).splitlines()[0][:160]}"
            if row.get("status") == Status.FAILED:
                line += f"  (traceback in {rs.LOG_FILE})"
        self.print(line)

    def ranked(
        self, rows: Sequence[Mapping[str, Any]], top: int | None = None
    ) -> list[Mapping[str, Any]]:
        """The COMPLETED trials best first, as keep_best and predict rank them (ties to the
        earlier trial); `top`: the first `top` only, a partial sort (the table comes every
        few trials, over every row so far: a whole sort each time grew with the sweep)."""
        return rs.ranked_rows(rows, self.spec.metric.goal, top)

    def table(self, rows: Sequence[Mapping[str, Any]], top: int = 5, title: str = "") -> None:
        """The best COMPLETED trials: objective, test accuracy, it (batches trained) and best_it
        (the batch of the best dev loss: the weights kept and tested), time, parameters."""
        ranked = self.ranked(rows, top)
        if not ranked:
            return
        metric = self.spec.metric.name
        extra = [] if metric == "test_acc" else ["test_acc"]
        cols = ["trial", "metric", *extra, "iterations", "best_iteration", "train_s",
                *("param." + n for n in self.searched)]  # fmt: skip
        head = ["trial", metric, *extra, "it", "best_it", "train_s", *self.searched]
        cells = [
            [rs.trial_name(r) if c == "trial" else fmt(rs.decode_param(r.get(c))) for c in cols]
            for r in ranked
        ]
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
        if title:
            self.print(title)
        self.print("  " + "  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip())
        for c in cells:
            self.print("  " + "  ".join(x.ljust(w) for x, w in zip(c, widths)).rstrip())

    def maybe_table(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if self.finished % self.table_every == 0 and self.finished < self.total:
            self.table(rows, top=3, title=f"-- top so far ({self.finished} finished) --")

    # the end -------------------------------------------------------------------------------
    def summary(self, rows: Sequence[Mapping[str, Any]], folder: Path, seconds: float) -> None:
        self.stop()
        counts: dict[str, int] = {}
        for r in rows:
            counts[str(r.get("status"))] = counts.get(str(r.get("status")), 0) + 1
        status = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
        self.print(f"\nsweep {self.spec.name}: {len(rows)} trials in {seconds:.0f} s ({status})")
        self.table(rows, top=5, title="top trials:")
        ranked = self.ranked(rows, 1)
        if ranked:
            self._best(ranked[0], rows, folder)
        here = shown(folder)
        self.print(
            f"results: {here}/ (trials.parquet, metrics.parquet, grad_layers.parquet, sweep.json)"
        )
        if self.spec.tensorboard:
            self.print(f"tensorboard: tensorboard --logdir {shown(folder / TB_DIR)}")
        self.print(f"optuna study: optuna-dashboard {study_url(folder)}")
        self.print(f"  ({UI_HINT})")
        self.print(f"ray log: {shown(folder / rs.LOG_FILE)}")

    def _best(
        self, best: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], folder: Path
    ) -> None:
        """The best trial in one line (its objective, against the baseline, its test
        accuracy), then its whole config and how to rerun it alone."""
        metric, goal = self.spec.metric.name, self.spec.metric.goal
        line = f"best trial {rs.trial_name(best)}: {metric} {fmt(best['metric'])}"
        base = next((r for r in rows if r.get("trial_number") == 0), None)
        if self.spec.baseline and base is not None:
            if base is best:
                line += " (the baseline itself)"
            elif finite(base.get("metric")):
                by = gain(metric, goal, float(best["metric"]), float(base["metric"]))
                line += f", {by} ({fmt(base['metric'])})"
            else:
                line += f" (the baseline ended {base.get('status')})"
        if metric != "test_acc" and finite(best.get("test_acc")):
            line += f"; test_acc {fmt(best['test_acc'])}"
        self.print(line)
        params = {n: rs.decode_param(best.get("param." + n)) for n in self.spec.parameters}
        self.print("best config:")
        text = yaml.safe_dump(params, sort_keys=False, default_flow_style=None)
        self.print("  " + text.rstrip().replace("\n", "\n  "))
        here = shown(folder)
        self.print(
            f"rerun it alone: python -m harness.train --replay {here} --trial {best['trial_id']}"
        )
        if (folder / rs.MODELS_DIR / str(best["trial_id"]) / "model.json").is_file():
            self.print(f"label text with it: python -m harness.predict {here} --text '...'")

    def pareto(self, folder: Path) -> None:
        """Several objectives have no single best: name the trials on the Pareto front."""
        spec = self.spec
        study = optuna.load_study(study_name=spec.name, storage=optuna_storage_url(folder))
        names = ", ".join(m.name for m in spec.metrics)
        front = [
            f"{t.user_attrs.get('ray_trial_id', '?')} (#{t.number}) "
            f"({', '.join(fmt(v) for v in t.values)})"
            for t in study.best_trials
        ]
        self.print(f"pareto front over {names}: {'; '.join(front) or '-'}")

    def waiting(self, pending: int, seconds: float) -> None:
        r = self.spec.resources
        self.print(
            f"  waiting {seconds:.0f} s: {pending} trial(s) pending, none running; each needs "
            f"cpu {r.cpu:g} gpu {r.gpu:g} on one node"
        )

    def interrupted(self, left: int) -> None:
        self.print(
            f"interrupted: {left} trial(s) did not finish; continue with the same "
            "command plus --resume"
        )

    # live progress ---------------------------------------------------------------------------
    def trial_started(self, trial_id: str, number: int | None) -> None:
        now = time.monotonic()
        self.first_start = now if self.first_start is None else self.first_start
        name = rs.trial_name({"trial_id": trial_id, "trial_number": number})
        self.running[trial_id] = {"name": name, "since": now, "report": {}}
        self.tick(force=True)

    def trial_report(self, trial_id: str, number: int | None, report: Mapping[str, Any]) -> None:
        if trial_id not in self.running:
            self.trial_started(trial_id, number)
        self.running[trial_id]["report"] = dict(report)
        self.tick()

    def _finished(self, row: Mapping[str, Any]) -> None:
        """A trial ended: it leaves the running set and counts; the best so far may change."""
        self.running.pop(str(row.get("trial_id")), None)
        self.done_here += 1
        status = str(row.get("status"))
        self.counts[status] = self.counts.get(status, 0) + 1
        if self.ranked([row]) and (self.best is None or self.ranked([row, self.best])[0] is row):
            self.best = row

    def status_line(self, now: float | None = None) -> str:
        """finished / running counts, best so far, elapsed and ETA, on one line."""
        now = time.monotonic() if now is None else now
        counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(self.counts.items()))
        parts = [
            f"{self.finished}/{self.total} finished" + (f" ({counts})" if counts else ""),
            f"{len(self.running)} running",
        ]
        if self.best is not None:
            parts.append(
                f"best: {rs.trial_name(self.best)} {self.spec.metric.name}="
                f"{fmt(self.best.get('metric'))}"
            )
        parts.append(f"{_clock(now - self.t0)} elapsed")
        eta = self.eta(now)
        parts.append("ETA " + ("-" if eta is None else f"~{_clock(eta)}"))
        return ", ".join(parts)

    def eta(self, now: float) -> float | None:
        """Seconds left: the trials still to run at the pace of those finished in this run
        (so far from the first trial's start), capped by the time budget."""
        left = None
        if self.done_here and self.first_start is not None:
            pace = (now - self.first_start) / self.done_here
            left = max(0.0, (self.total - self.finished) * pace)
        budget = self.spec.budget.time_budget_s
        if budget and self.first_start is not None:
            rest = max(0.0, budget - (now - self.first_start))
            left = rest if left is None else min(left, rest)
        return left

    def trial_status(self, trial_id: str, now: float) -> str:
        """A running trial: its name, time running and its last report's main numbers."""
        t = self.running[trial_id]
        m = t["report"]
        parts = [t["name"], f"{_clock(now - t['since'])}"]
        if m:
            parts.append(f"report {fmt(m.get('report'))} it={fmt(m.get('iteration'))} "
                         f"epoch {fmt(m.get('epoch'))}")  # fmt: skip
            keys = dict.fromkeys(("train_loss", "dev_loss", "dev_acc", self.spec.metric.name))
            parts.append(" ".join(f"{k}={fmt(m.get(k))}" for k in keys if k in m))
        else:
            parts.append("starting")
        return "  ".join(parts)

    def tick(self, force: bool = False) -> None:
        """Called often (Tune's on_step_end): redraw the live block about every redraw_s, or,
        off a terminal, print a plain progress line every every_s while trials run."""
        now = time.monotonic()
        if self._stopped:
            return
        if self.is_live():
            if force or now - self._last_draw >= self.redraw_s:
                self._erase()
                self._draw(now)
            return
        if not self.running:
            return
        if self._last_plain is None:  # the first trial just started: the clock starts now
            self._last_plain = now
        if force or now - self._last_plain < self.every_s:
            return
        self._last_plain = now
        running = "; ".join(self.trial_status(t, now) for t in self.running)
        print(f"progress: {self.status_line(now)} | {running}", file=self._stream(), flush=True)

    def stop(self) -> None:
        """The live block goes; plain lines from here on (the summary)."""
        self._erase()
        self.running.clear()
        self._stopped = True

    def _draw(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        try:
            width = os.get_terminal_size(self._stream().fileno()).columns - 1
        except (AttributeError, OSError, ValueError):
            width = 0
        width = max(40, width if width > 0 else shutil.get_terminal_size((100, 24)).columns - 1)
        lines = [f"-- {self.status_line(now)}"]
        lines += [f"   {self.trial_status(t, now)}" for t in self.running]
        text = "\n".join(line[:width] for line in lines)  # a wrapped line would break the erase
        self._stream().write(text + "\n")
        self._stream().flush()
        self._drawn = len(lines)
        self._last_draw = now

    def _erase(self) -> None:
        if self._drawn:
            # to the first column, up over the block, clear to the end of the screen
            self._stream().write(f"\r\x1b[{self._drawn}A\x1b[J")
            self._drawn = 0


def _clock(seconds: float) -> str:
    """12s, 3m05s, 1h02m."""
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
