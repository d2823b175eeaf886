"""The lines a person watches: what the sweep is, a line per finished trial, a table now and
then, and a summary that says where everything went."""

from __future__ import annotations

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
from harness.sweep.search import SearchPlan, optuna_storage_url
from harness.values import finite, fmt


class Console:
    """Concise progress: a line per finished trial, a table now and then, a summary at the end."""

    def __init__(self, spec: SweepSpec, out: TextIO | None = None, table_every: int = 5) -> None:
        self.spec = spec
        self.out = out
        self.table_every = table_every
        self.finished = 0
        self.total = spec.budget.num_samples
        self.searched = list(spec.searched)
        self.t0 = time.monotonic()

    def print(self, line: str = "") -> None:
        # sys.stdout looked up at each call: Tune pickles its callbacks, and a stream
        # (pytest's capture, say) need not be picklable
        print(line, file=self.out or sys.stdout, flush=True)

    # the start -----------------------------------------------------------------------------
    def announce(self, folder: Path, cluster: Mapping[str, Any], data: Dataset) -> None:
        """What runs where, and where its results and Ray's log go."""
        spec, r = self.spec, self.spec.resources
        self.print(
            f"sweep {spec.name}: {spec.budget.num_samples} trials of {spec.model} on {data.name} "
            f"({data.train_x.shape[0]} train), method {spec.method}, early_terminate "
            f"{spec.early_terminate.type}, {spec.metric.name} ({spec.metric.goal})"
        )
        where = (
            f"Ray {cluster['address']} ({cluster['nodes']} node(s), {cluster['cpus']:g} cpu, "
            f"{cluster['gpus']:g} gpu)"
        )
        if cluster.get("dashboard"):
            where += f", dashboard http://{cluster['dashboard']}"
        self.print(
            f"  {spec.budget.max_concurrent} at a time, cpu {r.cpu:g} gpu {r.gpu:g} each; {where}"
        )
        self.print(f"  results -> {folder}/  (Ray's log: {folder / rs.LOG_FILE})")

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

    def baseline(self) -> None:
        """Where the classic configuration had to be adapted to the space."""
        for note in self.spec.baseline_notes():
            self.print(f"  baseline: {note}")

    # while trials run ----------------------------------------------------------------------
    def trial_line(self, row: Mapping[str, Any]) -> None:
        self.finished += 1
        metric = self.spec.metric.name
        value = row.get("metric")
        parts = [
            f"[{self.finished:>{len(str(self.total))}}/{self.total}]",
            f"{row['trial_id']}",
            f"{row.get('status', '?'):<9}",
            f"{metric}={fmt(value)}",
            f"it={fmt(row.get('iterations'))}",
            f"{fmt(row.get('train_s'))}s",
        ]
        if row.get("trial_number") == 0 and self.spec.baseline:
            parts.append("(baseline)")
        params = " ".join(
            f"{n}={fmt(rs.decode_param(row.get('param.' + n)))}" for n in self.searched
        )
        line = "  ".join(parts) + ("  " + params if params else "")
        if row.get("status") in ("FAILED", "DIVERGED") and row.get("error"):
            line += f"\n      {row['status'].lower()}: {str(row['error']).splitlines()[0][:160]}"
            if row.get("status") == "FAILED":
                line += f"  (traceback in {rs.LOG_FILE})"
        self.print(line)

    def ranked(self, rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        done = [r for r in rows if r.get("status") == "COMPLETED" and finite(r.get("metric"))]
        return sorted(
            done, key=lambda r: float(r["metric"]), reverse=self.spec.metric.goal == "maximize"
        )

    def table(self, rows: Sequence[Mapping[str, Any]], top: int = 5, title: str = "") -> None:
        ranked = self.ranked(rows)[:top]
        if not ranked:
            return
        cols = [
            "trial_id",
            "metric",
            "best_iteration",
            "train_s",
            *("param." + n for n in self.searched),
        ]
        head = [
            "trial",
            self.spec.metric.name,
            "best_it",
            "train_s",
            *self.searched,
        ]
        cells = [[fmt(rs.decode_param(r.get(c))) for c in cols] for r in ranked]
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
        if title:
            self.print(title)
        self.print("  " + "  ".join(h.ljust(w) for h, w in zip(head, widths)))
        for c in cells:
            self.print("  " + "  ".join(x.ljust(w) for x, w in zip(c, widths)))

    def maybe_table(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if self.finished % self.table_every == 0 and self.finished < self.total:
            self.table(rows, top=3, title=f"-- top so far ({self.finished} finished) --")

    # the end -------------------------------------------------------------------------------
    def summary(self, rows: Sequence[Mapping[str, Any]], folder: Path, seconds: float) -> None:
        counts: dict[str, int] = {}
        for r in rows:
            counts[str(r.get("status"))] = counts.get(str(r.get("status")), 0) + 1
        status = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
        self.print(f"\nsweep {self.spec.name}: {len(rows)} trials in {seconds:.0f} s ({status})")
        self.table(rows, top=5, title="top trials:")
        ranked = self.ranked(rows)
        if ranked:
            self._best(ranked[0], rows, folder)
        self.print(
            f"results: {folder}/ (trials.parquet, metrics.parquet, grad_layers.parquet, sweep.json)"
        )
        self.print(f"optuna study: optuna-dashboard {optuna_storage_url(folder)}")
        self.print(f"ray log: {folder / rs.LOG_FILE}")

    def _best(
        self, best: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], folder: Path
    ) -> None:
        """The best trial: against the baseline, its whole config, how to rerun it alone."""
        base = next((r for r in rows if r.get("trial_number") == 0), None)
        if self.spec.baseline and base is not None and base is not best:
            if finite(base.get("metric")):
                delta = float(best["metric"]) - float(base["metric"])
                self.print(
                    f"best {self.spec.metric.name} {fmt(best['metric'])} vs baseline "
                    f"{fmt(base['metric'])} ({delta:+.4g})"
                )
            else:
                self.print(f"baseline ended {base.get('status')}")
        params = {n: rs.decode_param(best.get("param." + n)) for n in self.spec.parameters}
        self.print(f"best config (trial {best['trial_id']}):")
        text = yaml.safe_dump(params, sort_keys=False, default_flow_style=None)
        self.print("  " + text.rstrip().replace("\n", "\n  "))
        self.print(
            f"rerun it alone: python -m harness.train --replay {folder} --trial {best['trial_id']}"
        )

    def pareto(self, folder: Path) -> None:
        """Several objectives have no single best: name the trials on the Pareto front."""
        spec = self.spec
        study = optuna.load_study(study_name=spec.name, storage=optuna_storage_url(folder))
        names = ", ".join(m.name for m in spec.metrics)
        front = [
            f"{t.user_attrs.get('ray_trial_id', t.number)} ({', '.join(fmt(v) for v in t.values)})"
            for t in study.best_trials
        ]
        self.print(f"pareto front over {names}: {'; '.join(front) or '-'}")

    def interrupted(self, left: int) -> None:
        self.print(
            f"interrupted: {left} trial(s) did not finish; continue with the same "
            "command plus --resume"
        )
