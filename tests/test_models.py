"""The model zoo: shapes, training step, determinism, pretrained embeddings, classic equivalences."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from harness.errors import UserError
from harness.models import MODELS, build_model
from harness.models.base import init_weights

VOCAB, CLASSES, PAD, SEQ, EMBED = 50, 4, 0, 12, 16

# Small dims so every test runs in well under a second on 2 cores.
SMALL: dict[str, dict] = {
    "TextCNN": {"num_filters": 8},
    "TextRNN": {"hidden_size": 8},
    "TextRNN_Att": {"hidden_size": 8, "att_hidden": 6},
    "TextRCNN": {"hidden_size": 8},
    "FastText": {"hidden_size": 8, "n_gram_buckets": 97, "embed_ngram": 6},
    "DPCNN": {"num_filters": 8},
    "Transformer": {"num_heads": 2, "ffn_hidden": 12},
}
NAMES = ["TextCNN"]  # grows as models land


def small(name: str, seq_len: int = SEQ, **over) -> nn.Module:
    params = MODELS[name].params_cls(**{"embed": EMBED, **SMALL[name], **over})
    return build_model(name, params, VOCAB, CLASSES, PAD, seq_len)


def tokens(batch: int, seq_len: int = SEQ, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, seq_len), generator=g)


def test_every_registered_model_is_tested() -> None:
    assert set(MODELS) == set(SMALL)



@pytest.mark.parametrize("name", NAMES)
def test_forward_shape(name: str) -> None:
    model = small(name).eval()
    for batch in (1, 5):
        out = model(tokens(batch))
        assert out.shape == (batch, CLASSES)
        assert out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_one_adam_step_changes_parameters(name: str) -> None:
    torch.manual_seed(0)
    model = small(name).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = tokens(6)
    x[:, -3:] = PAD  # some padding, as real batches have
    loss = F.cross_entropy(model(x), torch.arange(6) % CLASSES)
    loss.backward()
    opt.step()
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p)]
    grads = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not grads, f"parameters without gradient: {grads}"
    # Every parameter tensor moves (the attention vector of TextRNN_Att included).
    assert set(changed) == set(before), set(before) - set(changed)


@pytest.mark.parametrize("name", NAMES)
def test_batch_of_one_trains(name: str) -> None:
    model = small(name).train()
    loss = F.cross_entropy(model(tokens(1)), torch.tensor([1]))
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_seed(name: str) -> None:
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = small(name).train()  # dropout active: the seed must fix it too
        outs.append(model(tokens(3)))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_padding_row_starts_at_zero(name: str) -> None:
    model = small(name)
    assert model.embedding.padding_idx == PAD
    assert torch.count_nonzero(model.embedding.weight[PAD]) == 0


@pytest.mark.parametrize("name", NAMES)
def test_pretrained_embeddings(name: str, tmp_path) -> None:
    width = 10  # differs from params.embed: the file's width must win
    table = np.random.default_rng(0).normal(size=(VOCAB, width)).astype(np.float32)
    path = tmp_path / "emb.npz"
    np.savez(path, embeddings=table)
    model = small(name, embedding_path=str(path))
    assert model.embedding.embedding_dim == width
    torch.testing.assert_close(model.embedding.weight.detach(), torch.from_numpy(table))
    assert model(tokens(2)).shape == (2, CLASSES)
    frozen = small(name, embedding_path=str(path), freeze_embedding=True)
    assert not frozen.embedding.weight.requires_grad


@pytest.mark.parametrize("name", [n for n in ("TextCNN", "FastText") if n in NAMES])
def test_pretrained_embeddings_wrong_shape(name: str, tmp_path) -> None:
    path = tmp_path / "emb.npz"
    np.savez(path, embeddings=np.zeros((VOCAB + 1, 8), np.float32))
    with pytest.raises(UserError, match="shape"):
        small(name, embedding_path=str(path))


def test_pretrained_embeddings_pickled_object_refused(tmp_path) -> None:
    class Boom:
        def __reduce__(self):  # would run on unpickling
            return (pytest.fail, ("the embedding file was unpickled",))

    path = tmp_path / "emb.npz"
    arr = np.empty(1, dtype=object)
    arr[0] = Boom()
    np.savez(path, embeddings=arr)
    with pytest.raises(UserError, match="emb.npz"):
        small("TextCNN", embedding_path=str(path))


def test_pretrained_embeddings_missing_file(tmp_path) -> None:
    with pytest.raises(UserError, match="not found"):
        small("TextCNN", embedding_path=str(tmp_path / "nope.npz"))


@pytest.mark.parametrize(
    ("name", "over", "key"),
    [
        ("TextCNN", {"num_filters": 0}, "num_filters"),
        ("TextCNN", {"filter_sizes": (2, 0)}, "filter_sizes"),
        ("TextCNN", {"dropout": 1.0}, "dropout"),
        ("TextRNN", {"num_layers": 0}, "num_layers"),
        ("FastText", {"n_gram_buckets": 0}, "n_gram_buckets"),
        ("Transformer", {"num_heads": 3}, "num_heads"),  # 16 is not divisible by 3
    ],
)
def test_bad_params_are_user_errors(name: str, over: dict, key: str) -> None:
    if name not in NAMES:
        pytest.skip(f"{name} not built yet")
    with pytest.raises(UserError, match=key):
        small(name, **over)


@pytest.mark.parametrize("name", NAMES)
def test_classic_defaults_build(name: str) -> None:
    entry = MODELS[name]
    model = build_model(name, entry.params_cls(), 10000, 10, 0, 32).eval()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{name}: {n_params:,} parameters")
    assert n_params > 10000 * 300  # the embedding alone
    with torch.no_grad():
        assert model(torch.randint(0, 10000, (2, 32))).shape == (2, 10)


def test_init_weights_is_classic() -> None:
    model = nn.Sequential(nn.Embedding(10, 4, padding_idx=0), nn.Linear(4, 3), nn.LayerNorm(3))
    emb = model[0].weight.detach().clone()
    with torch.no_grad():
        model[1].bias.fill_(1.0)
    init_weights(model)
    assert torch.equal(model[0].weight, emb)  # embedding untouched
    assert torch.count_nonzero(model[1].bias) == 0
    assert torch.equal(model[2].weight, torch.ones(3))  # 1-D scale keeps its init


# --- TextCNN: the 1-D convolution equals the classic full-width 2-D one ------------------


def test_textcnn_matches_classic_conv2d() -> None:
    torch.manual_seed(0)
    model = small("TextCNN").eval()
    x = tokens(4)
    emb = model.embedding(x).unsqueeze(1)  # classic: [B, 1, L, embed]
    pooled = []
    for conv in model.convs:
        # Classic Conv2d(1, F, (k, embed)) weight is [F, 1, k, embed]; ours is [F, embed, k].
        w2d = conv.weight.transpose(1, 2).unsqueeze(1)
        h = F.relu(F.conv2d(emb, w2d, conv.bias)).squeeze(3)
        pooled.append(F.max_pool1d(h, h.size(2)).squeeze(2))
    expected = model.fc(torch.cat(pooled, 1))
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


def test_textcnn_shorter_than_widest_filter() -> None:
    model = small("TextCNN", seq_len=2).eval()
    assert model(tokens(3, seq_len=2)).shape == (3, CLASSES)


def test_dataclass_params_are_frozen() -> None:
    params = MODELS["TextCNN"].params_cls()
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.num_filters = 3  # type: ignore[misc]
