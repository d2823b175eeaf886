"""Column names of every table the harness writes, in one place.

The loop's `report(dict)` uses METRIC_KEYS (plus LAYERS, a column-wise dict of
per-layer statistics); results tables add identifying columns in front. A test
pins these lists against the results schema in docs/results.md.
"""

from __future__ import annotations

# --- one row per report (evaluation) ------------------------------------------------------
METRIC_KEYS: dict[str, str] = {
    "iteration": "batches trained so far (the report's x-axis)",
    "report": "1-based index of this report in its trial (Optuna's step, the schedulers' time)",
    "epoch": "epoch the report fell in (1-based)",
    "samples": "training samples seen so far",
    "elapsed_s": "seconds since training started (evaluation included)",
    "lr": "learning rate at the report",
    "train_loss": "mean training loss per sample since the last report (label smoothing included)",
    "train_acc": "training accuracy over the samples since the last report",
    "dev_loss": "cross-entropy loss on the dev split (no label smoothing)",
    "dev_acc": "accuracy on the dev split",
    "improved": "dev loss improved on the best so far (the classic '*')",
    "best_dev_loss": "best dev loss so far",
    "best_dev_acc": "dev accuracy at the best dev loss so far",
    "grad_norm": "mean global L2 gradient norm (before clipping) over the sampled steps",
    "grad_norm_max": "largest global gradient norm over the sampled steps",
    "grad_max_abs": "largest absolute gradient entry in the sampled steps",
    "grad_vanish_frac": "fraction of gradient entries (embedding tables apart) below vanish_threshold",
    "embed_vanish_frac": "the same fraction in the embedding tables (rows of absent tokens count)",
    "grad_clip_frac": "fraction of steps since the last report whose norm exceeded clip_norm",
    "grad_nonfinite": "steps since the last report with a NaN/Inf loss or gradient",
    "update_ratio": "mean global norm(update) / norm(weights) over the sampled steps",
    "grad_vanishing": "grad_norm fell below vanish_threshold * sqrt(#params)",
    "grad_exploding": "grad_norm_max exceeded explode_threshold",
}

LAYERS = "layers"  # report key: {column: [value per layer]} with LAYER_KEYS columns
# report key (not a column): the loop ends the member at this report (its step budget, its
# patience or a non-finite value); only the loop knows, so a sweep reads it, never guesses it
LAST = "last"

# --- one row per (report, layer) ----------------------------------------------------------
LAYER_KEYS: dict[str, str] = {
    "layer": "parameter name (e.g. convs.weight)",
    "grad_norm": "mean L2 norm of this layer's gradient over the sampled steps",
    "grad_max_abs": "largest absolute gradient entry of this layer in the sampled steps",
    "vanish_frac": "fraction of this layer's gradient entries below vanish_threshold",
    "weight_norm": "L2 norm of the layer's weights at the report",
    "update_ratio": "mean norm(update) / norm(weights) of this layer over the sampled steps",
    "embedding": "the layer is an embedding table (its absent tokens' rows get zero gradient)",
}

# --- one row per trial (results/<name>/trials.parquet) ------------------------------------
# Parameter columns follow these, one `param.<name>` per searched parameter.
PARAM_PREFIX = "param."
TRIAL_KEYS: dict[str, str] = {
    "trial_id": "Ray Tune's trial id (short, unique within the sweep); in a group: the group's id and the member's index, 9c6ab8ba-2",
    "trial_number": "Optuna trial number (0 is the baseline when baseline: true)",
    "status": "COMPLETED, PRUNED, FAILED or DIVERGED",
    "metric": "the sweep's objective value (metric.name) as told to Optuna; PRUNED: its value "
    "at the report where it was stopped (results.load(...).top(n) ranks COMPLETED only)",
    "best_dev_loss": "best dev loss reached",
    "best_dev_acc": "dev accuracy at the best dev loss",
    "best_iteration": "iteration of the best dev loss",
    "test_acc": "test accuracy of the best weights (COMPLETED only)",
    "test_loss": "test loss of the best weights",
    "test_f1_macro": "test macro F1 of the best weights",
    "iterations": "batches trained",
    "epochs": "epochs started",
    "samples": "training samples seen",
    "train_s": "seconds the trial trained (evaluation included)",
    "start_time": "UTC time the trial started",
    "end_time": "UTC time the trial ended",
    "node_id": "Ray node id the trial ran on",
    "node_ip": "address of that node",
    "device": "cpu, cuda:N",
    "error": "why the trial failed or diverged; notes such as a GPU fallback",
    "confusion": "test confusion matrix of the best weights as JSON [[...]] (rows: true class)",
    "group_id": "Ray trial id of the group that trained the trial (unfused: the trial's own id)",
    "group_member": "the trial's index in its group (0: the member the group's batch order came from)",
    "group_size": "trials the group started with (1: unfused)",
    "fused": "the group trained as one fused module (false: alone, or members side by side)",
}


class Status:
    """A trial's status: trials.parquet's `status` column and the `status` user attribute of
    its Optuna trial. Plain strings, so tables and JSON hold them as written."""

    RUNNING = "RUNNING"  # started and not ended (or left by an interrupted run: --resume)
    COMPLETED = "COMPLETED"  # the loop ran to its end (its own early stop included): tested
    PRUNED = "PRUNED"  # stopped by early termination or the time budget
    FAILED = "FAILED"  # raised, or its worker died with no retries left
    DIVERGED = "DIVERGED"  # a non-finite loss, gradient or dev loss


STATUSES = (Status.COMPLETED, Status.PRUNED, Status.FAILED, Status.DIVERGED)  # a trial's ends
