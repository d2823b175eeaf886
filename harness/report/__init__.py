"""`python -m harness.report results/<name> [results/<other> ...] [--out DIR]`.

Turns a sweep's results folder into answers: which settings won and how they compare, how
much compute early termination saved, which parameters mattered, whether the best value sits
at the edge of its range, and what the gradients did. The same blocks go to the terminal and
to a self-contained report.html (PNG figures embedded as base64, no external CSS/JS); the
PNGs are also written beside it. Several folders add one comparison table, one row per sweep.

Read it in this order:
  folder.py      the results folder as a Sweep (the one place that reads the files)
  analysis.py    the answers, as numbers and tables
  sections.py    the report: one function per section, (Context) -> list[Block]
  blocks.py      Block, and its two renderings (terminal text, report.html)
  comparison.py  several sweeps side by side
  cli.py         the command line
harness.plots draws the figures. Only pandas is needed for the tables; matplotlib and
Optuna are imported when a report is written, so a wrong folder fails fast with one line.
"""

from harness.report.analysis import (
    TOP_K,
    Compute,
    GradHealth,
    best_config,
    best_trial,
    compute,
    edge_warnings,
    grad_health,
    objective_values,
    param_importance,
    pareto_front,
    ranked,
    spearman,
    status_counts,
    top_table,
)
from harness.report.blocks import Block, render_html, render_text
from harness.report.cli import main
from harness.report.comparison import build_comparison, comparison_row, comparison_table
from harness.report.folder import Objective, Sweep, load_sweep, open_study, trial_name
from harness.report.sections import SECTIONS, Context, SweepReport, build_report

__all__ = [
    "SECTIONS",
    "TOP_K",
    "Block",
    "Compute",
    "Context",
    "GradHealth",
    "Objective",
    "Sweep",
    "SweepReport",
    "best_config",
    "best_trial",
    "build_comparison",
    "build_report",
    "comparison_row",
    "comparison_table",
    "compute",
    "edge_warnings",
    "grad_health",
    "load_sweep",
    "main",
    "objective_values",
    "open_study",
    "param_importance",
    "pareto_front",
    "ranked",
    "render_html",
    "render_text",
    "spearman",
    "status_counts",
    "top_table",
    "trial_name",
]
