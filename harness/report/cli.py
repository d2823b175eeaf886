"""`python -m harness.report results/<name> [results/<other> ...] [--out DIR]`."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.errors import UserError, exit_on_user_error
from harness.report.analysis import TOP_K
from harness.report.blocks import render_text
from harness.report.comparison import build_comparison
from harness.report.folder import load_sweep
from harness.report.sections import build_report


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m harness.report",
        description="Tables and plots of what a sweep found; several folders are compared.",
    )
    ap.add_argument(
        "folders", nargs="+", type=Path, help="results folder(s) written by harness.sweep"
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help=(
            "where to write report.html and the PNGs (default: <folder>/report; with several "
            "folders: comparison/ beside the first)"
        ),
    )
    ap.add_argument("--top", type=int, default=TOP_K, help="how many top trials to list and plot")
    ap.add_argument("--dpi", type=int, default=None, help="resolution of the PNG figures (150)")
    ap.add_argument(
        "--no-figures",
        action="store_true",
        help="tables only: skip matplotlib (report.html without images)",
    )
    return ap


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.top < 1:
        raise UserError(f"--top: must be >= 1, got {args.top}")
    if args.dpi is not None and args.dpi < 10:
        raise UserError(f"--dpi: must be >= 10, got {args.dpi}")
    sweeps = [load_sweep(p) for p in args.folders]  # every folder checked before writing
    figures = not args.no_figures
    if len(sweeps) == 1:
        s = sweeps[0]
        out = args.out or s.path / "report"
        rep = build_report(s, out, top=args.top, dpi=args.dpi, figures=figures)
        print(f"Sweep {s.name}")
        print(rep.text(), end="")
        print(f"\nreport: {out / 'report.html'} ({len(rep.figures)} figures beside it)")
        return 0
    out = args.out or sweeps[0].path.resolve().parent / "comparison"
    _, blocks = build_comparison(sweeps, out, dpi=args.dpi, figures=figures)
    print(f"Comparison of {len(sweeps)} sweeps")
    print(render_text(blocks), end="")
    print(f"\nreport: {out / 'report.html'}")
    return 0
