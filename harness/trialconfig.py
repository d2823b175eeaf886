"""One trial's complete settings: which model, its hyperparameters, and how to train it.

A trial is described to the outside world as a flat mapping of names to values
(`learning_rate`, `dropout`, `num_filters`, ...), the same names a search space's
`parameters` block and `--set` use. `resolve` is the one place that turns such a
mapping into typed dataclasses, starting from the model's classic settings.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field, fields
from typing import Any

from harness.coercion import coerce
from harness.errors import Problem, UserError, did_you_mean
from harness.models import MODELS, model_entry
from harness.models.base import FUSIBLE, ModelParams, fusible

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("none", "exponential", "cosine")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainConfig:
    """How the shared loop trains; defaults are the classic loop's (plus shuffling).

    `fusible(...)` marks the settings that may differ between the members of one fused group
    (harness.members); every other setting fixes shapes or the op sequence and must agree.
    """

    optimizer: str = "adam"  # adam | adamw | sgd (with momentum)
    learning_rate: float = fusible(1e-3)
    momentum: float = fusible(0.9)  # sgd only
    weight_decay: float = fusible(0.0)
    batch_size: int = 128
    max_epochs: int = 20
    max_steps: int = 0  # 0: no cap beyond max_epochs
    eval_every: int = 100  # batches between dev evaluations (and reports)
    require_improvement: int = fusible(1000)  # batches without dev-loss improvement before stopping
    schedule: str = "none"  # none | exponential (per epoch) | cosine (per step, after warmup)
    gamma: float = fusible(0.9)  # exponential decay per epoch
    warmup_steps: int = fusible(0)
    clip_norm: float = fusible(0.0)  # global-norm clipping, per member; 0 disables
    label_smoothing: float = fusible(0.0)
    shuffle: bool = True
    seed: int = fusible(0)  # model init and dropout
    data_seed: int | None = None  # batch order; None: seed (a group shares one batch order)
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = (
        False  # bf16 autocast on CUDA (ignored on CPU); fp32 measured faster for 6 of 7 models
    )
    cuda_graphs: bool = True  # capture the training step on CUDA when possible (false: eager)
    eval_batch_size: int = 512  # 512 evaluated ~40% faster than 1024 on a 2-core CPU
    grad_stats_every: int = fusible(10)  # steps between gradient-statistics samples; 0 disables
    vanish_threshold: float = fusible(1e-8)  # |g| below this counts as vanished
    explode_threshold: float = fusible(1e3)  # global grad norm above this counts as exploding
    # reports between checkpoints of the loop's full state (sweeps: Tune checkpoints);
    # None: one epoch's worth (checkpoint_interval), 0: never
    checkpoint_every: int | None = None

    def checkpoint_interval(self, batches_per_epoch: int) -> int:
        """Reports between two checkpoints: `checkpoint_every`, or when it is None one epoch's
        worth, ceil(batches_per_epoch / eval_every) reports (at least 1); 0 means never."""
        if self.checkpoint_every is not None:
            return self.checkpoint_every
        return max(1, math.ceil(batches_per_epoch / self.eval_every))

    @property
    def batch_seed(self) -> int:
        """The seed of the batch order."""
        return self.seed if self.data_seed is None else self.data_seed

    def __post_init__(self) -> None:
        problems = []
        for name, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES),
                              ("device", DEVICES)):  # fmt: skip
            if getattr(self, name) not in choices:
                problems.append(Problem(name, f"must be one of {', '.join(choices)}",
                                        getattr(self, name)))  # fmt: skip
        for name in ("batch_size", "max_epochs", "eval_every", "require_improvement",
                     "eval_batch_size"):  # fmt: skip
            if getattr(self, name) < 1:
                problems.append(Problem(name, "must be >= 1", getattr(self, name)))
        for name in ("max_steps", "warmup_steps", "grad_stats_every", "weight_decay", "clip_norm"):
            if getattr(self, name) < 0:
                problems.append(Problem(name, "must be >= 0", getattr(self, name)))
        if self.checkpoint_every is not None and self.checkpoint_every < 0:
            problems.append(Problem("checkpoint_every", "must be >= 0", self.checkpoint_every))
        if not self.learning_rate > 0:
            problems.append(Problem("learning_rate", "must be > 0", self.learning_rate))
        if not 0 <= self.label_smoothing < 1:
            problems.append(Problem("label_smoothing", "must be in [0, 1)", self.label_smoothing))
        if problems:
            raise UserError(*problems)


@dataclass(frozen=True)
class TrialConfig:
    model: str
    params: ModelParams
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_flat(self) -> dict[str, Any]:
        """JSON-ready flat mapping; `resolve(model, to_flat())` gives this config back."""
        flat = {f.name: getattr(self.train, f.name) for f in fields(self.train)}
        for f in fields(self.params):
            v = getattr(self.params, f.name)
            flat[f.name] = list(v) if isinstance(v, tuple) else v
        return flat


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def setting_types(model: str) -> dict[str, Any]:
    """Every flat name a trial of `model` accepts, with its declared type."""
    return {**_field_types(TrainConfig), **_field_types(model_entry(model).params_cls)}


def setting_names(model: str) -> set[str]:
    """Every flat name a trial of `model` accepts."""
    return set(setting_types(model))


def resolve(model: str, flat: dict[str, Any] | None = None) -> TrialConfig:
    """Classic defaults of `model`, then `flat` overrides; every problem reported at once,
    each a Problem whose path is the setting's name."""
    entry = model_entry(model)
    train_types = _field_types(TrainConfig)
    param_types = _field_types(entry.params_cls)
    train_kw: dict[str, Any] = dict(entry.classic_train)
    param_kw: dict[str, Any] = {}
    problems: list[Problem] = []
    for name, value in (flat or {}).items():
        kw, kinds = (param_kw, param_types) if name in param_types else (train_kw, train_types)
        if name not in kinds:
            others = [m for m in MODELS if name in _field_types(MODELS[m].params_cls)]
            known = set(train_types) | set(param_types)
            hint = f" (it belongs to {', '.join(others)})" if others else did_you_mean(name, known)
            problems.append(Problem(name, f"not a setting of {model} or of training{hint}"))
            continue
        try:
            kw[name] = coerce(name, value, kinds[name])
        except UserError as exc:
            problems += exc.problems
    if problems:
        raise UserError(*problems)
    try:
        train = TrainConfig(**train_kw)
        params = entry.params_cls(**param_kw)
    except (TypeError, ValueError) as exc:  # a UserError (each problem a record) goes as it is
        raise UserError(str(exc)) from None
    return TrialConfig(model=model, params=params, train=train)


def replace_train(cfg: TrialConfig, **changes: Any) -> TrialConfig:
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **changes))


# ---------------------------------------------------------------------- groups


def fusible_names(model: str) -> set[str]:
    """Settings of `model` that may differ inside a fused group (marked `fusible`)."""
    classes = (TrainConfig, model_entry(model).params_cls)
    return {f.name for cls in classes for f in fields(cls) if f.metadata.get(FUSIBLE)}


def shape_settings(cfg: TrialConfig) -> dict[str, Any]:
    """The settings a group's members must share: the model, every unmarked setting, and the
    batch order (data_seed resolved)."""
    fusible = fusible_names(cfg.model)
    flat = cfg.to_flat()
    out = {"model": cfg.model}
    out.update({k: v for k, v in flat.items() if k not in fusible and k != "data_seed"})
    out["data_seed"] = cfg.train.batch_seed
    return out


def check_group(cfgs: typing.Sequence[TrialConfig]) -> None:
    """Members of one group may differ only in fusible settings; anything else is one clear
    UserError naming each shape setting that differs."""
    if not cfgs:
        raise UserError("a group needs at least one member")
    first = shape_settings(cfgs[0])
    problems = []
    for i, cfg in enumerate(cfgs[1:], start=1):
        other = shape_settings(cfg)
        for name in first:
            if other.get(name) != first[name]:
                problems.append(
                    f"group member {i}: {name} is {other.get(name)!r} but member 0 has "
                    f"{first[name]!r}; {name} fixes shapes or the batch order, so members must "
                    f"share it (members may differ in: {', '.join(sorted(fusible_names(cfgs[0].model)))})"
                )
    if problems:
        raise UserError("\n".join(problems))


def with_batch_seed(cfgs: typing.Sequence[TrialConfig], data_seed: int) -> list[TrialConfig]:
    """Members whose batch order is unset take the group's (so each member's config is its
    whole story: run alone with it, a member repeats its fused run)."""
    return [
        c if c.train.data_seed is not None else replace_train(c, data_seed=data_seed) for c in cfgs
    ]
