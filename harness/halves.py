"""A group that ran out of device memory before its first report trains as two halves.

trainer.train_group calls `train_in_halves`; each half is a train_group of its own (and may
split again). Every member still trains and reports under its own index. The halves take no
checkpoints: a state of one half is not the group's (a retried group starts afresh).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from harness.trialconfig import TrialConfig

if TYPE_CHECKING:
    from harness.trainer import Loop, MemberReport, TrialSummary


def train_in_halves(
    cfgs: Sequence[TrialConfig], data: Any, report: MemberReport | None, **kw: Any
) -> list[TrialSummary]:
    """Train `cfgs` as two halves, one after the other (each may split again). Hooks that read the loop (`after_report`, `on_batch`) get a view whose
    `alive` and `summaries` speak of the whole group: the members of a half still to run
    count as alive."""
    from harness.trainer import train_group

    n, half = len(cfgs), (len(cfgs) + 1) // 2
    note = f"group of {n} did not fit in device memory: ran as groups of {half} and {n - half}"
    summaries: list[TrialSummary | None] = [None] * n
    parts = [list(range(half)), list(range(half, n))]
    init, tested = kw.pop("init"), kw.pop("tested")
    after_report, on_batch = kw.pop("after_report"), kw.pop("on_batch")
    kw.pop("checkpoint", None)
    for k, idx in enumerate(parts):
        pending = [i for part in parts[k + 1 :] for i in part]

        def view(loop: Loop, idx: list[int] = idx, pending: list[int] = pending) -> GroupView:
            return GroupView(loop, idx, pending, summaries)

        out = train_group(
            [cfgs[i] for i in idx], data,
            None if report is None else (lambda j, m, idx=idx: report(idx[j], m)),
            init=None if init is None else [init[i] for i in idx],
            tested=None if tested is None else (lambda j, w, idx=idx: tested(idx[j], w)),
            after_report=None if after_report is None else (lambda lp, v=view: after_report(v(lp))),
            on_batch=None if on_batch is None else (lambda lp, v=view: on_batch(v(lp))),
            **kw,
        )  # fmt: skip
        for i, s in zip(idx, out):
            s.reason = "; ".join(p for p in (note, s.reason) if p)
            summaries[i] = s
    return [s for s in summaries if s is not None]


class GroupView:
    """A half's loop as the whole group's callers see it (see train_in_halves)."""

    def __init__(self, loop: Loop, idx: list[int], pending: list[int], done: list[Any]) -> None:
        self._loop = loop
        self.alive = [idx[j] for j in loop.alive] + pending
        self.summaries = list(done)
        for j, i in enumerate(idx):
            self.summaries[i] = loop.summaries[j]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)
