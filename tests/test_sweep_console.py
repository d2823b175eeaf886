"""harness.sweep.console: the lines a person watches while a sweep runs."""

from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path

from test_sweep import SMOKE

from harness import sweep
from harness.config import load_spec


def test_console_lines_are_short_and_informative() -> None:
    spec = load_spec(SMOKE)
    out = io.StringIO()
    c = sweep.Console(spec, out=out)
    rows = [
        {"trial_id": "aaa", "trial_number": 0, "status": "COMPLETED", "metric": 0.8,
         "iterations": 20, "train_s": 1.5, "param.learning_rate": 0.001,
         "param.filter_sizes": "[2, 3]", "best_iteration": 20},
        {"trial_id": "bbb", "trial_number": 1, "status": "FAILED", "error": "ValueError: x\nmore",
         "param.learning_rate": 0.005},
    ]  # fmt: skip
    for r in rows:
        c.trial_line(r)
    c.summary(rows, Path("results/smoke"), 12.0)
    text = out.getvalue()
    assert "[1/4]  aaa (#0)  COMPLETED" in text and "(baseline)" in text
    assert "filter_sizes=[2,3]" in text
    assert "failed: ValueError: x" in text and "more" not in text
    assert "best config (trial aaa (#0))" in text and "filter_sizes: [2, 3]" in text
    assert "  aaa (#0)  0.8" in text  # the top table names trials the same way
    assert "python -m harness.train --replay results/smoke --trial aaa" in text


def test_a_resumed_sweep_counts_on_and_an_interrupted_one_says_how_to_go_on() -> None:
    spec = load_spec(SMOKE)
    out = io.StringIO()
    c = sweep.Console(spec, out=out)
    c.resuming(finished=2, rerun=1, remaining=2)
    c.trial_line({"trial_id": "ccc", "trial_number": 2, "status": "PRUNED", "metric": 0.5})
    c.interrupted(1)
    lines = out.getvalue().splitlines()
    assert lines[0] == "  resuming: 2 trials done, 1 interrupted (run again from the start), 1 new"
    assert lines[1].startswith("[3/4]  ccc (#2)  PRUNED")
    assert "--resume" in lines[2]


def test_a_resume_with_nothing_left_says_no_grouping_of_zero_trials() -> None:
    from harness.sweep.groups import FusePlan

    spec = load_spec(SMOKE, ["resources.fuse=2"])
    out = io.StringIO()
    c = sweep.Console(spec, out=out)
    cluster = {"cpus": 2, "gpus": 0}
    c.grouping(FusePlan(2, 2), 0, cluster)  # a finished fused sweep, resumed
    assert out.getvalue() == ""
    c.grouping(FusePlan(2, 2), 4, cluster)
    assert out.getvalue().startswith("  4 trials in groups of up to 2")


# --------------------------------------------------------------------- while trials run

REPORT = {"report": 2, "iteration": 10, "epoch": 1, "train_loss": 0.7, "dev_loss": 0.6,
          "dev_acc": 0.7, "best_dev_acc": 0.71}  # fmt: skip
DONE = {"trial_id": "aaa", "trial_number": 0, "status": "COMPLETED", "metric": 0.8,
        "iterations": 20, "train_s": 1.5}  # fmt: skip


def test_piped_a_plain_progress_line_comes_every_few_seconds_while_trials_run() -> None:
    spec = load_spec(SMOKE)
    out = io.StringIO()
    c = sweep.Console(spec, out=out, every_s=0.05)
    c.tick()
    time.sleep(0.1)
    c.tick()
    assert out.getvalue() == ""  # nothing runs yet: nothing to say
    c.trial_started("aaa", 0)
    c.trial_report("aaa", 0, REPORT)
    time.sleep(0.1)
    c.tick()
    c.tick()  # too soon for another
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("progress: 0/4 finished, 1 running, ")
    assert "ETA -" in lines[0]  # nothing finished, no time budget: no pace to go by
    assert "aaa (#0)" in lines[0] and "it=10" in lines[0] and "best_dev_acc=0.71" in lines[0]
    c.trial_line(DONE)
    c.trial_started("bbb", 1)
    time.sleep(0.1)
    c.tick()
    last = out.getvalue().splitlines()[-1]
    assert last.startswith("progress: 1/4 finished (1 completed), 1 running, best best_dev_acc ")
    assert "0.8 aaa (#0)" in last and "ETA ~" in last and "bbb (#1)" in last and "starting" in last
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()  # a file reads plainly


def _screen(text: str) -> list[str]:
    """What a terminal shows after `text`: enough of one for \\r, \\n, ESC[nA and ESC[J."""
    rows: list[list[str]] = [[]]
    r = col = 0
    i = 0
    while i < len(text):
        m = re.match(r"\x1b\[(\d*)([AJ])", text[i:])
        if m:
            if m.group(2) == "A":
                r = max(0, r - int(m.group(1) or 1))
            else:
                del rows[r + 1 :]
                del rows[r][col:]
            i += len(m.group(0))
            continue
        ch = text[i]
        i += 1
        if ch == "\r":
            col = 0
        elif ch == "\n":
            r += 1
            rows.extend([] for _ in range(r + 1 - len(rows)))
        else:
            row = rows[r]
            row.extend(" " for _ in range(col + 1 - len(row)))
            row[col] = ch
            col += 1
    return ["".join(x).rstrip() for x in rows if "".join(x).strip()]


def test_on_a_terminal_a_live_block_is_redrawn_in_place() -> None:
    """On a real pseudo-terminal: a status line and one line per running trial under the
    lines that stay, redrawn without scrolling, gone when the sweep ends."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 160, 0, 0))
    written: list[bytes] = []

    def drain() -> str:
        while select.select([master], [], [], 0.05)[0]:
            written.append(os.read(master, 65536))
        return b"".join(written).decode()

    with os.fdopen(slave, "w") as term:
        c = sweep.Console(load_spec(SMOKE), out=term, redraw_s=0.0)
        assert c.is_live()
        c.trial_started("aaa", 0)
        c.trial_started("bbb", 1)
        for _ in range(20):
            c.trial_report("aaa", 0, REPORT)
            c.tick()
        assert _screen(drain()) == [
            "-- 0/4 finished, 2 running, 0s elapsed, ETA -",
            (
                "   aaa (#0)  0s  report 2 it=10 epoch 1  train_loss=0.7 dev_loss=0.6 dev_acc=0.7 "
                "best_dev_acc=0.71"
            ),
            "   bbb (#1)  0s  starting",
        ]  # twenty redraws, one block
        c.trial_line(DONE)
        screen = _screen(drain())
        assert screen[0].startswith("[1/4]  aaa (#0)  COMPLETED") and len(screen) == 3
        assert screen[1].startswith("-- 1/4 finished (1 completed), 1 running, best best_dev_acc")
        assert screen[2] == "   bbb (#1)  0s  starting"
        c.stop()
        assert len(_screen(drain())) == 1  # the block is gone; the trial line stays
        c.tick()
        assert len(_screen(drain())) == 1  # and stays gone
    os.close(master)


def test_the_console_names_what_auto_chose_and_why(tmp_path: Path) -> None:
    spec = load_spec(SMOKE, ["method=auto"])
    out = io.StringIO()
    sweep.Console(spec, out=out).search(sweep.plan_search(spec, tmp_path))
    (line,) = out.getvalue().splitlines()
    assert line.startswith("  search: auto chose TPE, multivariate + group, constant liar, 3 ")
    assert "(the baseline and 2 drawn around the classic values)" in line
    assert "2 of 4 parameters continuous; early termination prunes trials" in line
    out = io.StringIO()
    sweep.Console(load_spec(SMOKE), out=out).search(sweep.plan_search(load_spec(SMOKE), tmp_path))
    assert out.getvalue() == ""  # method tpe: nothing was chosen
