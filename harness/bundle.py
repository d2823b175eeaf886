"""A trained model as files: everything needed to use it, and nothing that is ever unpickled.

`python -m harness.train` leaves one in its run folder, a sweep keeps one per top trial under
`results/<name>/models/<trial_id>/`, and `harness.predict`, `--init-from` and `--replay`
read them:

    model.safetensors  the weights the test scored (best dev loss): the plain model's state_dict
    vocab.json         the vocabulary, id -> token (<UNK> and <PAD> last)
    model.json         model name, resolved config (TrialConfig.to_flat()), data settings
                       (DataSpec), class names, and where the weights came from and how they scored

Text is encoded with the data settings' tokenizer (level, pad_size) and this vocabulary, the
same way training encoded its splits (harness.data.encode_texts). model.json is written last,
so a folder that has it is complete.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from harness.data import PAD, UNK, DataSpec, encode_texts
from harness.errors import UserError
from harness.files import write_text, write_with
from harness.trialconfig import TrialConfig, resolve

FORMAT = 1
WEIGHTS = "model.safetensors"
VOCAB = "vocab.json"
META = "model.json"
FILES = (WEIGHTS, VOCAB, META)


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None (strict JSON), tuples -> lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


SCORES = (
    "best_iteration",
    "best_dev_loss",
    "best_dev_acc",
    "test_acc",
    "test_loss",
    "test_f1_macro",
)


def scores(summary: Any) -> dict[str, Any]:
    """How the saved weights scored, from a harness.trainer.TrialSummary (for model.json)."""
    return {k: getattr(summary, k) for k in SCORES}


def data_settings(spec: DataSpec) -> dict[str, Any]:
    """The DataSpec as recorded (the cache folder is where this machine kept it: not a setting)."""
    return {k: v for k, v in dataclasses.asdict(spec).items() if k != "cache_dir"}


def save(
    folder: str | os.PathLike,
    cfg: TrialConfig,
    spec: DataSpec,
    data: Any,
    weights: Mapping[str, Tensor],
    info: Mapping[str, Any] | None = None,
) -> Path:
    """Write the model files into `folder` (each atomically, model.json last).

    data: the harness.data.Dataset the weights were trained on (vocabulary, classes);
    info: extra JSON-able facts for model.json (scores, the trial or run it came from)."""
    folder = Path(folder)
    _check_classes(list(data.classes), f"{folder / META}: classes")
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}
    write_with(folder / WEIGHTS, lambda tmp: save_file(tensors, str(tmp), {"format": "pt"}))
    write_text(folder / VOCAB, json.dumps(list(data.vocab), ensure_ascii=False) + "\n")
    meta = {
        "format": FORMAT,
        "model": cfg.model,
        "config": cfg.to_flat(),
        "data": data_settings(spec),
        "classes": list(data.classes),
        "vocab_size": data.vocab_size,
        "fingerprint": data.fingerprint,
        **dict(info or {}),
        "torch": torch.__version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    text = json.dumps(_json_safe(meta), indent=2, ensure_ascii=False, allow_nan=False)
    write_text(folder / META, text + "\n")
    return folder


@dataclass(frozen=True)
class Bundle:
    """A saved model read back: its config, data settings, vocabulary, classes and weights."""

    path: Path
    config: TrialConfig
    data: DataSpec
    classes: tuple[str, ...]
    vocab: tuple[str, ...]
    weights: dict[str, Tensor]
    info: dict[str, Any]  # all of model.json

    @property
    def pad_id(self) -> int:
        return len(self.vocab) - 1

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """int64 [N, pad_size] ids, as training encoded its splits."""
        return encode_texts(texts, self.vocab, self.data.level, self.data.pad_size)

    def build(self, device: str | torch.device = "cpu") -> nn.Module:
        """The model with these weights, in eval mode. A pretrained embedding file named in the
        config is not needed: its values are in the weights (the width is taken from them)."""
        from harness.models import build_model

        params = self.config.params
        if params.embedding_path:
            width = int(self.weights["embedding.weight"].shape[1])
            params = dataclasses.replace(params, embedding_path=None, embed=width)
        with torch.random.fork_rng(devices=[]):  # the throwaway init moves no caller's stream
            model = build_model(
                self.config.model, params, vocab_size=len(self.vocab),
                num_classes=len(self.classes), pad_id=self.pad_id, seq_len=self.data.pad_size,
            )  # fmt: skip
        try:
            model.load_state_dict(self.weights)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise UserError(f"{self.path / WEIGHTS}: the weights do not fit {self.config.model} "
                            f"as configured in {META} ({first})") from None  # fmt: skip
        return model.to(device).eval()


def is_bundle(folder: str | os.PathLike) -> bool:
    return (Path(folder) / META).is_file()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: missing (a saved model holds {', '.join(FILES)})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _settings(folder: Path) -> tuple[dict[str, Any], TrialConfig, DataSpec]:
    """model.json read and checked: (its contents, the config, the data settings). A saved
    model is data: its `data.cache_dir` (where some machine kept its cache) is not obeyed."""
    if not folder.is_dir():
        what = "not a folder" if folder.exists() else "no such folder"
        raise UserError(f"{folder}: {what}")
    if not is_bundle(folder):
        raise UserError(f"{folder}: no saved model here (no {META})")
    where = folder / META
    meta = _read_json(where)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else meta
        raise UserError(f"{where}: format {got!r}, this harness reads format {FORMAT}")
    try:
        config = resolve(str(meta["model"]), dict(meta["config"]))
        settings = {k: v for k, v in dict(meta["data"]).items() if k not in _WHERE_TO_WRITE}
        data = DataSpec(**settings)
    except UserError as exc:
        raise UserError(f"{where}: {str(exc).splitlines()[0]}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{where}: bad model, config or data entry ({exc})") from None
    _check_classes(meta.get("classes"), f"{where}: classes")
    _check_shapes(folder, config, data, meta)
    return meta, config, data


_WHERE_TO_WRITE = ("cache_dir",)  # DataSpec fields that choose a place to write: this machine's


def _check_classes(classes: Any, where: str) -> None:
    """A non-empty list of distinct names (two equal names would give two equal p_ columns)."""
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise UserError(f"{where}: must be a non-empty list of names")
    seen: dict[str, int] = {}
    for i, name in enumerate(classes):
        if name in seen:
            raise UserError(f"{where}: {name!r} named twice (entries {seen[name]} and {i}); "
                            "class names must differ")  # fmt: skip
        seen[name] = i


def _header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape from the safetensors header, without reading the tensors."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except FileNotFoundError:
        raise UserError(f"{path}: missing (a saved model holds {', '.join(FILES)})") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable safetensors file ({exc})") from None


def _show_shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(n) for n in shape) + "]"


def _check_shapes(folder: Path, config: TrialConfig, data: DataSpec, meta: dict[str, Any]) -> None:
    """The sizes model.json claims (embed, num_filters, hidden sizes, pad_size for the
    Transformer, vocabulary and classes) must give exactly the tensors model.safetensors
    holds: the model is built on torch's meta device (no memory) and its state_dict's shapes
    compared with the file's header, before anything is allocated. A mismatch is one line
    naming the tensor."""
    from harness.models import build_model

    have = _header_shapes(folder / WEIGHTS)
    params = config.params
    if params.embedding_path and "embedding.weight" in have:  # its width is in the weights
        params = dataclasses.replace(params, embedding_path=None,
                                     embed=int(have["embedding.weight"][1]))  # fmt: skip
    vocab_size = meta.get("vocab_size")
    classes = meta.get("classes") or []
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 3:
        raise UserError(f"{folder / META}: vocab_size must be an integer >= 3, got {vocab_size!r}")
    try:
        with torch.device("meta"), torch.random.fork_rng(devices=[]):
            model = build_model(config.model, params, vocab_size=vocab_size,
                                num_classes=len(classes), pad_id=vocab_size - 1,
                                seq_len=data.pad_size)  # fmt: skip
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 -- settings no model accepts: the file's fault
        raise UserError(f"{folder / META}: its settings build no {config.model} "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                        ) from None  # fmt: skip
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for name, shape in want.items():
        if name not in have:
            raise UserError(f"{folder / WEIGHTS}: no tensor {name!r}, which {config.model} as "
                            f"configured in {META} has")  # fmt: skip
        if have[name] != shape:
            raise UserError(f"{folder / WEIGHTS}: tensor {name!r} is {_show_shape(have[name])}, "
                            f"but {META}'s settings make it {_show_shape(shape)}")  # fmt: skip
    extra = sorted(set(have) - set(want))
    if extra:
        raise UserError(f"{folder / WEIGHTS}: tensor {extra[0]!r} is not part of "
                        f"{config.model} as configured in {META}")  # fmt: skip


def settings(folder: str | os.PathLike) -> tuple[TrialConfig, DataSpec]:
    """The config and data settings of a saved model, without reading its weights."""
    _, config, data = _settings(Path(folder))
    return config, data


def load(folder: str | os.PathLike) -> Bundle:
    """Read a saved model; every problem is one UserError naming the file."""
    folder = Path(folder)
    meta, config, data = _settings(folder)
    classes = meta["classes"]
    vocab = _read_json(folder / VOCAB)
    if (
        not isinstance(vocab, list)
        or not all(isinstance(t, str) for t in vocab)
        or vocab[-2:] != [UNK, PAD]
    ):
        raise UserError(f"{folder / VOCAB}: expected a list of tokens ending with {UNK}, {PAD}")
    if len(vocab) != meta["vocab_size"]:
        raise UserError(f"{folder / VOCAB}: {len(vocab)} tokens, but {META} says vocab_size "
                        f"{meta['vocab_size']}")  # fmt: skip
    try:
        weights = load_file(str(folder / WEIGHTS), device="cpu")
    except FileNotFoundError:
        raise UserError(
            f"{folder / WEIGHTS}: missing (a saved model holds {', '.join(FILES)})"
        ) from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{folder / WEIGHTS}: not a readable safetensors file ({exc})") from None
    return Bundle(
        path=folder, config=config, data=data, classes=tuple(classes), vocab=tuple(vocab),
        weights=weights, info=meta,
    )  # fmt: skip


def remove(folder: str | os.PathLike) -> None:
    """Delete the model files in `folder` (a run that saved no model leaves none behind)."""
    for name in (META, VOCAB, WEIGHTS):  # model.json first: the folder stops being a model
        (Path(folder) / name).unlink(missing_ok=True)


def kept_models(folder: str | os.PathLike) -> list[str]:
    """Trial ids with a complete kept model under a sweep's models/ folder."""
    from harness.results import MODELS_DIR

    models = Path(folder) / MODELS_DIR
    if not models.is_dir():
        return []
    return sorted(p.name for p in models.iterdir() if not p.name.startswith(".") and is_bundle(p))


def locate(path: str | os.PathLike, trial: str | int | None = None) -> Path:
    """The saved model a user means by a folder: a harness.train run folder or a kept model
    (their own files), or a sweep's results folder: the trial `trial` names (a trial id or an
    Optuna number) or else the best kept trial by the sweep's objective."""
    from harness import results as rs

    folder = Path(path)
    if not folder.exists():
        raise UserError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder (give a harness.train run folder, a sweep's "
                        f"results folder or one of its {rs.MODELS_DIR}/<trial_id>)")  # fmt: skip
    if (folder / rs.SWEEP_FILE).is_file():
        res = rs.load(folder)
        kept = kept_models(folder)
        if trial is not None:
            tid = rs.find_trial(res, trial)
            if tid not in kept:
                raise UserError(f"{folder}: trial {tid} has no kept weights (keep_best kept: "
                                f"{', '.join(kept) or 'none'})")  # fmt: skip
            return folder / rs.MODELS_DIR / tid
        rows = res.trials.to_dict("records")
        best = [t for t in rs.ranking(rows, res.goal) if t in kept] or kept
        if not best:
            raise UserError(f"{folder}: no kept models in {rs.MODELS_DIR}/ (the sweep ran with "
                            "keep_best: 0, or no trial completed)")  # fmt: skip
        return folder / rs.MODELS_DIR / best[0]
    if trial is not None:
        raise UserError(f"--trial: {folder} is not a sweep's results folder (no {rs.SWEEP_FILE})")
    if is_bundle(folder):
        return folder
    if (folder / "summary.json").is_file():
        raise UserError(f"{folder}: this run saved no model (only completed runs do)")
    raise UserError(f"{folder}: no saved model here (no {META}); give a harness.train run folder, "
                    f"a sweep's results folder or one of its {rs.MODELS_DIR}/<trial_id>")  # fmt: skip
