"""The validated sweep: frozen dataclasses that everything after loading trusts, and what a
spec implies (a trial's config, the baseline point, the sampler, the longest trial)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness import budget, space
from harness.config.schedulers import EarlyTerminate
from harness.config.vocabulary import DEFAULT_KEEP_BEST, DEFAULT_NUM_SAMPLES
from harness.data import DataSpec
from harness.space import ParamSpec
from harness.tracker import MlflowSpec
from harness.trialconfig import TrialConfig, resolve

if TYPE_CHECKING:  # imported where used: harness.bench.record reads specs without optuna
    import optuna


@dataclass(frozen=True)
class MetricSpec:
    name: str  # a key the loop reports (harness.schema.METRIC_KEYS)
    goal: str  # maximize | minimize

    @property
    def mode(self) -> str:
        """Ray Tune's spelling of the goal."""
        return "max" if self.goal == "maximize" else "min"

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "goal": self.goal}


@dataclass(frozen=True)
class Budget:
    num_samples: int = DEFAULT_NUM_SAMPLES  # trials in all, the baseline included
    max_concurrent: int = 1
    time_budget_s: float | None = None


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0  # per trial
    gpu: float = 0.0  # per trial; a fraction (e.g. 0.25) packs trials onto one GPU
    # Optuna trials per Ray trial, trained as one group (harness.trainer.train_group): a
    # whole number (1: one trial per Ray trial, no groups) or "auto" (harness.sweep.groups
    # picks it from the model, its settings, the device and a member's memory)
    fuse: int | str = "auto"


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep; `load_spec` is the way to make one."""

    name: str
    data: DataSpec
    model: str
    train: dict[str, Any]  # fixed flat trial settings (read-only by convention)
    metrics: tuple[MetricSpec, ...]  # one, or several for nsga2
    method: str
    seed: int
    parameters: dict[str, ParamSpec]  # in file order (read-only by convention)
    early_terminate: EarlyTerminate = field(default_factory=EarlyTerminate)
    budget: Budget = field(default_factory=Budget)
    resources: Resources = field(default_factory=Resources)
    baseline: bool = True  # the model's classic settings run as the first trial
    max_failures: int = 0  # retries of a crashed trial (a failed trial is data, not retried)
    storage: str | None = None  # Ray Tune storage (dir or URI); None: results/<name>/ray
    tensorboard: bool = True  # event files per trial in results/<name>/tb/<trial_id>/
    mlflow: MlflowSpec | None = None  # one MLflow run per trial (harness.tracker)
    keep_best: int = DEFAULT_KEEP_BEST  # the top trials whose weights stay in models/ (0: none)
    warm_start: tuple[str, ...] = ()  # earlier sweeps' folders whose trials seed the study
    source_path: str = ""
    overrides: tuple[str, ...] = ()

    @property
    def metric(self) -> MetricSpec:
        """The (first) objective: what schedulers and single-objective samplers use."""
        return self.metrics[0]

    @property
    def searched(self) -> dict[str, ParamSpec]:
        return {n: p for n, p in self.parameters.items() if p.searched}

    def constants(self) -> dict[str, Any]:
        return {n: p.decode(None) for n, p in self.parameters.items() if not p.searched}

    def trial_config(self, params: Mapping[str, Any]) -> TrialConfig:
        """Fixed train settings + constants + one trial's sampled values -> TrialConfig.

        An explicit early_terminate.max_t is each trial's budget: its max_steps is capped at
        max_t reports (max_t x eval_every batches), so a trial that reaches max_t ends there
        COMPLETED and tested on its best weights, rather than being stopped (PRUNED) by the
        scheduler; --replay gets the same cap."""
        flat = {**self.train, **self.constants(), **params}
        cfg = resolve(self.model, flat)
        reports = self.early_terminate.trial_cap
        if reports is not None:
            cap = reports * cfg.train.eval_every
            if not 0 < cfg.train.max_steps <= cap:
                cfg = resolve(self.model, {**flat, "max_steps": cap})
        return cfg

    def baseline_params(self) -> dict[str, Any]:
        """The first point to evaluate: each searched parameter at the model's classic value.

        Where the classic value is not in the space it is moved to the nearest value that is:
        a range clips (and snaps to q / whole numbers), a numeric choice list takes the
        closest choice, any other choice list its first value. baseline_notes() says which.
        """
        classic = resolve(self.model, {}).to_flat()
        return {n: p.nearest(classic[n]) for n, p in self.searched.items()}

    def baseline_notes(self) -> list[str]:
        """One line per searched parameter whose classic value lies outside the space."""
        classic = resolve(self.model, {}).to_flat()
        notes = []
        for n, v in self.baseline_params().items():
            if not space.same_value(v, classic[n]):
                notes.append(
                    f"{n}: classic value {classic[n]!r} is outside the space; baseline uses {v!r}"
                )
        return notes

    def choice(self) -> space.Choice | None:
        """What `method: auto` picks for this space and budget (None for other methods)."""
        if self.method != space.AUTO:
            return None
        return space.choose(
            self.parameters,
            self.budget.num_samples,
            objectives=len(self.metrics),
            pruning=self.early_terminate.type != "none",
            prior=self.baseline and not self.warm_start,
        )

    def sampler(self, choice: space.Choice | None = None) -> optuna.samplers.BaseSampler:
        """The Optuna sampler for `method` (see harness.space.sampler); `auto` builds
        `choice` (by default the one it makes now)."""
        return space.sampler(
            self.method, self.seed, self.parameters, self.budget.num_samples,
            choice or self.choice(),
        )  # fmt: skip

    def prior_points(self, choice: space.Choice | None) -> list[dict[str, Any]]:
        """Trials `auto` runs right after the baseline: drawn around the classic values."""
        if choice is None or not choice.prior_draws:
            return []
        return space.prior_points(
            self.parameters, self.baseline_params(), choice.prior_draws, self.seed
        )

    def grace_period(self, max_t: int) -> int:
        """The report of the first rung (harness.config.schedulers.EarlyTerminate.first_rung)."""
        return self.early_terminate.first_rung(max_t)

    def max_t(self, train_size: int) -> int:
        """early_terminate.max_t, or one more than the most reports a trial can make."""
        if self.early_terminate.max_t is not None:
            return self.early_terminate.max_t
        return self.most_reports(train_size) + 1

    def most_reports(self, train_size: int) -> int:
        """The most reports (dev evaluations) the longest trial of this space makes.

        Longest: smallest batch_size, most max_epochs, smallest eval_every the space allows,
        capped by max_steps when every allowed max_steps is a cap, and by an explicit max_t.
        """
        fixed = resolve(self.model, self.train).to_flat()

        def allowed(name: str) -> list[float]:
            p = self.parameters.get(name)
            if p is None:
                return [fixed[name]]
            if p.distribution == "constant":
                return [p.value]
            if p.distribution == "categorical":
                return list(p.values)
            return list(p.bounds())

        caps = allowed("max_steps")
        longest = budget.steps(
            train_size,
            int(min(allowed("batch_size"))),
            int(max(allowed("max_epochs"))),
            0 if 0 in caps else int(max(caps)),
        )
        reports = budget.reports(longest, int(min(allowed("eval_every"))))
        cap = self.early_terminate.trial_cap
        return reports if cap is None else min(reports, cap)

    def warnings(self, train_size: int) -> list[str]:
        """What the spec and the training split's size imply that is legal but wasteful:
        said before Ray starts (each a line of the console)."""
        out = self.early_terminate.warnings(self.most_reports(train_size))
        p = self.parameters.get("batch_size")
        sizes = (
            [resolve(self.model, self.train).train.batch_size] if p is None
            else [p.value] if p.distribution == "constant"
            else list(p.values) if p.distribution == "categorical" else [p.bounds()[1]]
        )  # fmt: skip
        big = [int(b) for b in sizes if b > train_size]
        if big:
            out.append(
                f"batch_size {max(big)} is larger than the training split ({train_size} "
                "texts): one step per epoch"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        """The spec as resolved (defaults filled in), JSON-able; load_spec reads it back."""
        metric: Any = [m.to_dict() for m in self.metrics]
        if self.method != "nsga2":
            metric = metric[0]
        return {
            "name": self.name,
            "data": dataclasses.asdict(self.data),
            "model": self.model,
            "train": {k: space.thaw(v) for k, v in self.train.items()},
            "metric": metric,
            "method": self.method,
            "seed": self.seed,
            "parameters": {n: p.to_dict() for n, p in self.parameters.items()},
            "early_terminate": self.early_terminate.to_dict(),
            "budget": dataclasses.asdict(self.budget),
            "resources": dataclasses.asdict(self.resources),
            "baseline": self.baseline,
            "max_failures": self.max_failures,
            "storage": self.storage,
            "tensorboard": self.tensorboard,
            "mlflow": dataclasses.asdict(self.mlflow) if self.mlflow else None,
            "keep_best": self.keep_best,
            **({"warm_start": list(self.warm_start)} if self.warm_start else {}),
        }
