"""Several sweeps side by side: one table, one anytime plot, each sweep's best config.

Each sweep's full report is its own command; this answers "which setup won, for how much
compute" across folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from harness.files import write_text
from harness.report.analysis import best_config_yaml, best_trial, compute, groups, status_counts
from harness.report.blocks import Block, render_html
from harness.report.folder import Sweep, number, times
from harness.report.sections import describe
from harness.schema import Status
from harness.values import fmt


def comparison_row(sweep: Sweep) -> dict[str, Any]:
    """One line of the comparison table: the trial with the best dev accuracy and its test
    accuracy (COMPLETED trials when there are any)."""
    t = sweep.trials
    spec = sweep.spec
    data = spec.get("data")
    done = t[t["status"] == Status.COMPLETED]
    pool = done if done["best_dev_acc"].notna().any() else t
    acc = pd.to_numeric(pool["best_dev_acc"], errors="coerce")
    best_acc = test_acc = best_name = None
    if acc.notna().any():
        i = acc.idxmax()
        best_acc, test_acc, best_name = acc[i], t.at[i, "test_acc"], t.at[i, "trial_name"]
    c = compute(sweep)
    counts = status_counts(sweep)
    return {
        "sweep": sweep.name,
        "model": spec.get("model", "?"),
        "data": (data.get("name") if isinstance(data, dict) else data) or "?",
        "method": _method(spec, sweep.info),
        "best dev acc": best_acc,
        "test acc": test_acc,
        "best trial": best_name,
        "trials": len(t),
        "pruned": int(counts.get(Status.PRUNED, 0)),
        "failed/diverged": int(counts.get(Status.FAILED, 0) + counts.get(Status.DIVERGED, 0)),
        "trial-hours": c.seconds_run / 3600,
        "saved": f"{c.saved_frac:.0%}",
        "trials per device-hour": groups(sweep).trials_per_device_hour,
    }


def _method(spec: dict, info: dict) -> str:
    """The spec's method; for auto, with the sampler it chose (sweep.json's "search")."""
    method = str(spec.get("method", "?"))
    chosen = (info.get("search") or {}).get("method") if isinstance(info, dict) else None
    return f"{method} ({chosen})" if method == "auto" and chosen else method


def comparison_table(sweeps: list[Sweep]) -> pd.DataFrame:
    return pd.DataFrame([comparison_row(s) for s in sweeps])


def _percent(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Accuracies as the classic results table prints them (91.22%)."""
    out = df.copy().astype({c: object for c in cols})
    for c in cols:
        out[c] = [f"{v:.2%}" if number(v) is not None else "-" for v in df[c]]
    return out


def anytime_curve(sweep: Sweep) -> pd.DataFrame:
    """Best completed dev accuracy so far against cumulative trial-hours (trials by end time)."""
    t = sweep.trials.copy()
    t["_end"] = times(t["end_time"])
    t = t.sort_values(["_end", "trial_number"], kind="stable", na_position="last")
    hours = t["train_s"].fillna(0).cumsum() / 3600
    acc = t["best_dev_acc"].where(t["status"] == Status.COMPLETED)
    return pd.DataFrame({"hours": hours.values, "best": acc.cummax().values}).dropna()


def build_comparison(
    sweeps: list[Sweep], out: Path, *, dpi: int | None = None, figures: bool = True
) -> tuple[pd.DataFrame, list[Block]]:
    """One table and one anytime plot across sweeps, plus each sweep's best config; writes
    out/report.html."""
    table = comparison_table(sweeps)
    blocks = [
        Block(
            "text",
            "one row per sweep: the trial with the best dev accuracy and its test "
            "accuracy; compute in trial-hours run, and the share early termination saved",
        ),
        Block("table", table=_percent(table, ["best dev acc", "test acc"])),
    ]
    curves = {s.name: anytime_curve(s) for s in sweeps}
    if figures and any(not c.empty for c in curves.values()):
        from harness import plots

        fig = plots.anytime(curves, "best dev acc (completed trials)")
        path = plots.save(fig, out / "comparison.png", dpi or plots.DPI)
        blocks.append(Block("image", "best dev accuracy so far against compute", path=path))
    for s in sweeps:
        best = best_trial(s)
        blocks.append(Block("heading", f"{s.name}: best config"))
        blocks.append(Block("text", describe(s)))
        if best is None:
            blocks.append(Block("text", "no trial reported a value of the objective"))
        else:
            blocks.append(
                Block(
                    "text",
                    f"trial {best['trial_name']}, {s.objective.name} = {fmt(best['metric'])}",
                )
            )
            blocks.append(Block("pre", best_config_yaml(s, best)))
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "report.html", render_html("Sweep comparison", blocks))
    return table, blocks
