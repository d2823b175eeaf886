"""`python -m harness.predict FOLDER`: label new text with a saved model.

    python -m harness.predict results/train/TextCNN-20261126-101500 --text "质量很好，推荐"
    python -m harness.predict results/textcnn --file texts.txt --out preds.parquet
    python -m harness.predict results/textcnn --trial 3 --text "..." --device cuda

FOLDER is a `harness.train` run folder, a sweep's results folder (its best kept trial, or
the one `--trial` names: a trial id or an Optuna number) or one kept model folder
(results/<name>/models/<trial_id>). Each text is encoded with the model's own vocabulary
and tokenizer settings, scored in batches on the device, and becomes one row: the text, a
`label` column (the class name) and one `p_<class>` probability column per class, printed
as a table or written to Parquet (`--out`). From Python:

    from harness.predict import load
    rows = load("results/textcnn").predict(["质量很好", "太差了"])   # a pandas DataFrame
"""

from __future__ import annotations

import argparse
import os
import sys
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from harness import bundle as saved
from harness.errors import UserError, exit_on_user_error
from harness.values import fmt

PROB_PREFIX = "p_"  # probability columns: p_<class name>


class Predictor:
    """A saved model on a device, ready to label text (`load` makes one)."""

    def __init__(self, model: saved.Bundle, device: str | None = None) -> None:
        from harness.trainer import autocast_for, pick_device

        self.bundle = model
        self.device, _ = pick_device(device or "auto", "auto")
        self.model = model.build(self.device)
        self.autocast = autocast_for(self.device, model.config.train.amp)  # as the test scored
        self.batch_size = model.config.train.eval_batch_size

    @property
    def classes(self) -> tuple[str, ...]:
        return self.bundle.classes

    @property
    def columns(self) -> list[str]:
        return ["text", "label", *(PROB_PREFIX + c for c in self.classes)]

    @torch.inference_mode()
    def scores(
        self, texts: Sequence[str], batch_size: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(label ids [N], class probabilities [N, C]) of `texts`, computed in batches."""
        from harness.trainer import full_precision

        x = torch.as_tensor(self.bundle.encode(list(texts)), dtype=torch.long)
        size = batch_size or self.batch_size
        ids, probs = [], []
        for s in range(0, x.shape[0], size):
            with self.autocast():
                logits = self.model(x[s : s + size].to(self.device))
            logits = full_precision(logits)
            ids.append(logits.argmax(1).cpu())  # argmax of the logits, as the test scored
            probs.append(torch.softmax(logits, 1).cpu())
        if not ids:
            return np.zeros(0, dtype=np.int64), np.zeros((0, len(self.classes)), dtype=np.float32)
        return torch.cat(ids).numpy(), torch.cat(probs).float().numpy()

    def predict(self, texts: Sequence[str], batch_size: int | None = None) -> Any:
        """One row per text: text, label (class name), p_<class> per class (a DataFrame).
        Texts are stripped as training stripped its lines (so `--text " 好 "` and the same line
        in a `--file` get one label); an empty one is a UserError: it would be all padding."""
        import pandas as pd

        texts = clean(texts)
        ids, probs = self.scores(texts, batch_size)
        out: dict[str, Any] = {"text": texts, "label": [self.classes[i] for i in ids]}
        for k, c in enumerate(self.classes):
            out[PROB_PREFIX + c] = probs[:, k]
        return pd.DataFrame(out, columns=self.columns)


def clean(texts: Sequence[str], where: str = "text") -> list[str]:
    """Texts stripped as the data loaders strip lines; an empty one is a UserError naming it."""
    if isinstance(texts, str):
        texts = [texts]
    out = [str(t).strip() for t in texts]
    for i, t in enumerate(out):
        if not t:
            which = f"{where} {i + 1}" if len(out) > 1 else where
            raise UserError(f"{which}: empty text (nothing to label: the model would see "
                            "padding only)")  # fmt: skip
    return out


def load(
    path: str | os.PathLike, trial: str | int | None = None, device: str | None = None
) -> Predictor:
    """The saved model a folder holds (see the module docstring), ready on `device`
    (default: CUDA when available)."""
    return Predictor(saved.load(saved.locate(path, trial)), device)


# ---------------------------------------------------------------------- the command


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness.predict",
        description="Label text with a saved model: a harness.train run folder, a sweep's "
        "results folder (its best kept trial) or a kept model folder.",
    )
    p.add_argument(
        "folder", help="results/train/<run>, results/<sweep> or results/<sweep>/models/<id>"
    )
    p.add_argument(
        "--trial", help="with a sweep folder: a trial id or Optuna number (default: the best kept)"
    )
    p.add_argument("--text", action="append", default=[], help="a text to label (repeatable)")
    p.add_argument("--file", help="a UTF-8 file with one text per line (blank lines skipped)")
    p.add_argument("--out", help="write the rows to this Parquet file instead of printing them")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="default: cuda when available, else cpu")  # fmt: skip
    p.add_argument(
        "--batch-size", type=int, help="texts per batch (default: the model's eval_batch_size)"
    )
    return p


def _trial_name(model: saved.Bundle) -> str | None:
    """A kept trial's name as every output gives it, `9c6ab8ba (#3)`: the Optuna number from
    its sweep's trials.parquet (models/<trial_id>/ sits in the sweep's folder)."""
    from harness import results as rs

    tid = (model.info.get("origin") or {}).get("trial_id")
    if not tid:
        return None
    sweep = model.path.parent.parent
    if model.path.parent.name == rs.MODELS_DIR and (sweep / rs.SWEEP_FILE).is_file():
        import pandas as pd

        try:
            t = pd.read_parquet(sweep / rs.TRIALS_FILE, columns=["trial_id", "trial_number"])
        except Exception:  # noqa: BLE001 -- a damaged or missing table: the id alone
            return str(tid)
        row = t[t["trial_id"] == tid]
        if len(row):
            return rs.trial_name(row.iloc[0].to_dict())
    return str(tid)


def _describe(model: saved.Bundle) -> str:
    info = model.info
    name = _trial_name(model)
    where = f"trial {name}" if name else "run"
    scores = info.get("scores") or {}
    score = ", ".join(f"{k} {fmt(scores[k])}" for k in ("best_dev_acc", "test_acc") if k in scores)
    return f"{model.config.model} ({where}{', ' + score if score else ''}) from {model.path}"


def _width(text: str) -> int:
    """Terminal columns of `text` (CJK characters take two)."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _show(rows: Any, width: int = 40) -> list[str]:
    """The rows as an aligned table: label, probabilities, the text (cut to `width` columns)."""
    probs = [c for c in rows.columns if c.startswith(PROB_PREFIX)]
    table = [["label", *probs, "text"]]
    for r in rows.to_dict("records"):
        text = r["text"][:width]
        while _width(text) > width:
            text = text[:-2] + "…"
        table.append([r["label"], *(fmt(r[c]) for c in probs), text])
    widths = [max(_width(str(x)) for x in col) for col in zip(*table)]
    return [
        "  ".join(str(x) + " " * (w - _width(str(x))) for x, w in zip(row, widths)).rstrip()
        for row in table
    ]


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    from harness.data import read_texts
    from harness.files import usable_file, write_with

    args = _parser().parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size: must be >= 1, got {args.batch_size}")
    if not args.text and not args.file:
        raise UserError("nothing to label: give --text TEXT (repeatable) or --file texts.txt")
    texts = clean(args.text, "--text") + (read_texts(args.file) if args.file else [])
    out = usable_file(args.out) if args.out else None  # before any work
    predictor = load(args.folder, args.trial, args.device)
    rows = predictor.predict(texts, args.batch_size)
    print(f"model: {_describe(predictor.bundle)} on {predictor.device}", file=sys.stderr)
    if out is not None:
        try:
            write_with(out, lambda tmp: rows.to_parquet(tmp, index=False))
        except OSError as exc:
            raise UserError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
        print(f"{len(rows)} rows -> {out}", file=sys.stderr)
    else:
        for line in _show(rows):
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
