"""The words a sweep file may use: its keys, methods, distributions, and the Weights & Biases
vocabulary it accepts or answers with a hint (a W&B sweep's `parameters` block works as is).
The scheduler words (early_terminate) are in harness.config.schedulers.
"""

from __future__ import annotations

METHODS = ("auto", "tpe", "random", "grid", "cmaes", "gp", "qmc", "nsga2")
DEFAULT_METHOD = "auto"
GOALS = ("maximize", "minimize")
TOP_KEYS = (
    "name", "data", "model", "train", "metric", "method", "seed", "parameters",
    "early_terminate", "budget", "resources", "baseline", "max_failures", "storage", "keep_best",
    "tensorboard", "mlflow", "warm_start",
)  # fmt: skip
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
METHOD_HINTS = {"bayes": "W&B's bayes: use tpe or gp", "bayesian": "use tpe or gp"}
ALIASES = {
    "lr": "learning_rate",
    "epochs": "max_epochs",
    "optim": "optimizer",
    "batch": "batch_size",
}
DEFAULT_METRIC = ("best_dev_acc", "maximize")
DEFAULT_NUM_SAMPLES = 10
