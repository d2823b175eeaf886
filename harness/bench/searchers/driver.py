"""The bench's real sweeps: every run one after another in one Ray session, finished runs of
the same spec reused and interrupted ones resumed."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from harness.bench.searchers.planning import RunKey, base_spec, existing_run, run_spec
from harness.config import SweepSpec
from harness.schema import Status
from harness.values import finite

RUNS_DIR = "runs"


def run_all(
    spec_path: str,
    sets: Sequence[str],
    keys: Sequence[RunKey],
    root: Path,
    *,
    overwrite: bool = False,
    verbose: bool = False,
    echo: Callable[[str], None] = print,
    command: Sequence[str] = (),
) -> list[tuple[RunKey, SweepSpec, Path]]:
    """Run (or reuse) every sweep of the bench, one after another in one Ray session."""
    from harness import sweep

    base = base_spec(spec_path, sets)
    specs = [(k, run_spec(spec_path, sets, base, k)) for k in keys]  # every error before Ray
    runs_root = root / RUNS_DIR
    plan = []
    for k, spec in specs:
        folder = runs_root / spec.name
        state = "new" if overwrite else existing_run(folder, spec)
        plan.append((k, spec, folder, state))
    own_ray = not sweep.ray.is_initialized()
    out = []
    try:
        for i, (k, spec, folder, state) in enumerate(plan, 1):
            tag = f"[{i:>{len(str(len(plan)))}}/{len(plan)}] {k.name:<{max(len(p[0].name) for p in plan)}}"
            if state == "done":
                echo(f"{tag}  reused (finished earlier in {folder})")
                out.append((k, spec, folder))
                continue
            t0 = time.time()
            outcome = sweep.run(
                spec,
                results_root=runs_root,
                resume=state == "resume",
                overwrite=overwrite or state == "new",
                console=verbose,
                command=list(command),
                shutdown=False,
            )
            if outcome.fault:  # a results folder that could not be written: one line, exit 1
                print(f"error: {outcome.fault}", file=sys.stderr)
                raise SystemExit(1)
            if outcome.interrupted:
                raise KeyboardInterrupt
            counts = pd.Series([r.get("status") for r in outcome.rows]).value_counts()
            done = ", ".join(f"{n} {s.lower()}" for s, n in counts.items())
            vals = [
                float(r["metric"])
                for r in outcome.rows
                if r.get("status") == Status.COMPLETED and finite(r.get("metric"))
            ]
            best = (max if spec.metric.goal == "maximize" else min)(vals) if vals else None
            best_txt = "-" if best is None else f"{best:.4f}"
            resumed = " (resumed)" if state == "resume" else ""
            echo(
                f"{tag}  {len(outcome.rows)} trials ({done}) in {time.time() - t0:.0f} s{resumed}; "
                f"best {spec.metric.name} {best_txt}"
            )
            out.append((k, spec, folder))
    finally:
        if own_ray and sweep.ray.is_initialized():
            sweep.ray.shutdown()
    return out
