"""A training loop's full state as files, so an interrupted trial continues exactly.

`harness.trainer.Loop.state_dict()` is a tree of dicts and lists whose leaves are numbers,
strings and tensors (weights, optimizer moments, the kept best weights, random-generator
states). A checkpoint folder holds it in two files, neither of which is ever unpickled:

    state.safetensors   every tensor of the tree, named by its path (e.g. optimizer/0/exp_avg/3)
    state.json          the rest of the tree, each tensor replaced by {"tensor": <its name>}

Both are written atomically (harness.files), the JSON last: a folder whose state.json is
there is complete. Sweeps put such a folder inside each Tune checkpoint (harness.sweep.trial).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from harness.files import write_text, write_with

TENSORS = "state.safetensors"
TREE = "state.json"
_KEY = "tensor"  # a JSON leaf {"tensor": name} stands for a tensor of state.safetensors


def pack(tree: Any, tensors: dict[str, Tensor], path: str = "") -> Any:
    """The tree with every tensor moved into `tensors` (CPU, contiguous) under its path."""
    if isinstance(tree, Tensor):
        tensors[path] = tree.detach().to("cpu").contiguous()
        return {_KEY: path}
    if isinstance(tree, dict):
        if _KEY in tree:
            raise ValueError(f"{path}: the key {_KEY!r} is reserved")
        return {
            str(k): pack(v, tensors, f"{path}/{k}" if path else str(k)) for k, v in tree.items()
        }
    if isinstance(tree, (list, tuple)):
        return [pack(v, tensors, f"{path}/{i}" if path else str(i)) for i, v in enumerate(tree)]
    return tree


def _unshared(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Each tensor with a storage of its own: safetensors refuses two names for one storage."""
    seen: set[int] = set()
    out = {}
    for name, t in tensors.items():
        ptr = t.untyped_storage().data_ptr()
        if t.numel() and ptr in seen:
            t = t.clone()
        seen.add(ptr)
        out[name] = t
    return out


def unpack(tree: Any, tensors: dict[str, Tensor]) -> Any:
    """Inverse of `pack`."""
    if isinstance(tree, dict):
        if set(tree) == {_KEY}:
            return tensors[tree[_KEY]]
        return {k: unpack(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [unpack(v, tensors) for v in tree]
    return tree


def write(folder: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write `state` (Loop.state_dict()) into `folder`; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, Tensor] = {}
    tree = pack(state, tensors)
    tensors = _unshared(tensors)
    write_with(folder / TENSORS, lambda tmp: save_file(tensors, str(tmp)))
    write_text(folder / TREE, json.dumps(tree, ensure_ascii=False))  # NaN/inf kept as such
    return folder


def read(folder: str | os.PathLike) -> dict[str, Any]:
    """The state `write` left in `folder` (ValueError if it is incomplete or unreadable)."""
    folder = Path(folder)
    try:
        tree = json.loads((folder / TREE).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / TENSORS), device="cpu")
    except (OSError, json.JSONDecodeError, SafetensorError) as exc:
        raise ValueError(f"{folder}: not a readable loop checkpoint ({exc})") from None
    return unpack(tree, tensors)


def is_checkpoint(folder: str | os.PathLike) -> bool:
    return (Path(folder) / TREE).is_file()


def info(folder: str | os.PathLike) -> dict[str, Any]:
    """The counters of a checkpoint (iteration, reports, epoch) without reading its tensors."""
    tree = json.loads((Path(folder) / TREE).read_text(encoding="utf-8"))
    return dict(tree.get("counters", {}))
