"""The model zoo: shapes, a training step, determinism, pretrained embeddings, equivalences."""

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
NAMES = list(SMALL)


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
    # Every parameter tensor moves (the attention vector of TextRNN_Att included) except,
    # in TextRNN, the top reverse LSTM's recurrent weights: at the last step, the only one
    # the classifier reads, that direction has taken one step from a zero state.
    exempt = {"lstm.weight_hh_l1_reverse"} if name == "TextRNN" else set()
    assert set(changed) == set(before) - exempt, set(before) - set(changed)


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


def test_pretrained_embeddings_plain_pickle_refused(tmp_path) -> None:
    import pickle

    path = tmp_path / "emb.npz"
    path.write_bytes(pickle.dumps({"embeddings": np.zeros((VOCAB, 4))}))
    with pytest.raises(UserError, match="not a readable"):
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


# --- FastText: in-model hashing equals the classic per-token Python formula ----------------


def classic_ngrams(seq: list[int], buckets: int) -> tuple[list[int], list[int]]:
    """utils_fasttext.py's biGramHash / triGramHash, in exact Python integers."""
    bi, tri = [], []
    for t in range(len(seq)):
        t1 = seq[t - 1] if t - 1 >= 0 else 0
        t2 = seq[t - 2] if t - 2 >= 0 else 0
        bi.append((t1 * 14918087) % buckets)
        tri.append((t2 * 14918087 * 18408749 + t1 * 14918087) % buckets)
    return bi, tri


@pytest.mark.parametrize("buckets", [250499, 97, 1, 2**31 - 1])
def test_fasttext_hashing_matches_classic(buckets: int) -> None:
    from harness.models.fasttext import ngram_hashes

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 10000, (3, 9), generator=g)
    x[1] = torch.randint(0, 2**62, (9,), generator=g)  # ids whose naive product overflows int64
    bigram, trigram = ngram_hashes(x, buckets)
    for row, b, t in zip(x.tolist(), bigram.tolist(), trigram.tolist()):
        assert (b, t) == classic_ngrams(row, buckets)


def test_fasttext_uses_hashed_tables() -> None:
    model = small("FastText").eval()
    assert model.embedding_ngram2.num_embeddings == SMALL["FastText"]["n_gram_buckets"]
    assert model.fc1.in_features == EMBED + 2 * SMALL["FastText"]["embed_ngram"]


# --- DPCNN: equals the classic 2-D formulation and copes with any length -------------------


def classic_dpcnn(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The classic DPCNN forward (Conv2d over [B, 1, L, embed], ZeroPad2d), with our weights."""
    n = model.conv.out_channels
    w_region = model.conv_region.weight.transpose(1, 2).unsqueeze(1)  # [F, 1, 3, embed]
    w_conv = model.conv.weight.unsqueeze(3)  # [F, F, 3, 1]

    def conv(h: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.relu(F.pad(h, (0, 0, 1, 1))), w_conv, model.conv.bias)

    def block(h: torch.Tensor) -> torch.Tensor:
        px = F.max_pool2d(F.pad(h, (0, 0, 0, 1)), (3, 1), stride=2)
        return conv(conv(px)) + px

    h = F.conv2d(model.embedding(x).unsqueeze(1), w_region, model.conv_region.bias)
    h = conv(conv(h))
    while h.size(2) > 2:
        h = block(h)
    return model.fc(h.reshape(-1, n))


@pytest.mark.parametrize("seq_len", [8, 16, 32, 64])
def test_dpcnn_matches_classic(seq_len: int) -> None:
    torch.manual_seed(0)
    model = small("DPCNN", seq_len=seq_len).eval()
    x = tokens(3, seq_len)
    torch.testing.assert_close(model(x), classic_dpcnn(model, x), rtol=1e-5, atol=1e-5)


def test_dpcnn_any_length() -> None:
    model = small("DPCNN").eval()
    for seq_len in [1, 2, 3, 4, 5, 6, 7, 9, 11, 33, 70]:  # 6 and 9 break the classic
        assert model(tokens(2, seq_len)).shape == (2, CLASSES), seq_len


# --- Transformer: the torch layers compute the classic encoder block ----------------------


def test_positional_encoding_is_classic() -> None:
    from harness.models.transformer import positional_encoding

    seq_len, d = 7, 6
    pe = [[pos / (10000.0 ** (i // 2 * 2.0 / d)) for i in range(d)] for pos in range(seq_len)]
    expected = torch.tensor(pe)
    expected[:, 0::2] = torch.sin(expected[:, 0::2])
    expected[:, 1::2] = torch.cos(expected[:, 1::2])
    torch.testing.assert_close(positional_encoding(seq_len, d), expected)


def classic_encoder(layer: nn.TransformerEncoderLayer, x: torch.Tensor, heads: int) -> torch.Tensor:
    """Classic Encoder (eval mode, standard head split): post-norm attention then FFN."""
    b, length, d = x.shape
    wq, wk, wv = layer.self_attn.in_proj_weight.chunk(3)
    bq, bk, bv = layer.self_attn.in_proj_bias.chunk(3)

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(b, length, heads, d // heads).transpose(1, 2)

    q, k, v = split(F.linear(x, wq, bq)), split(F.linear(x, wk, bk)), split(F.linear(x, wv, bv))
    att = torch.softmax(q @ k.transpose(-1, -2) * (d // heads) ** -0.5, dim=-1)
    context = (att @ v).transpose(1, 2).reshape(b, length, d)
    out = layer.norm1(layer.self_attn.out_proj(context) + x)
    ffn = layer.linear2(F.relu(layer.linear1(out)))
    return layer.norm2(ffn + out)


def test_transformer_matches_classic_block() -> None:
    torch.manual_seed(0)
    model = small("Transformer").eval()
    x = tokens(3)
    h = model.embedding(x) + model.pe
    for layer in model.encoders:
        h = classic_encoder(layer, h, SMALL["Transformer"]["num_heads"])
    expected = model.fc1(h.flatten(1))
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    # without autograd torch may take its fused inference path; it must agree too
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


def test_transformer_dropout_placement_is_classic() -> None:
    layer = small("Transformer").encoders[0]
    assert layer.self_attn.dropout == 0.0
    assert isinstance(layer.dropout, nn.Identity)
    assert layer.dropout1.p == layer.dropout2.p == 0.5
    assert not layer.norm_first


def test_transformer_pretrained_width_must_split_into_heads(tmp_path) -> None:
    path = tmp_path / "emb.npz"
    np.savez(path, embeddings=np.zeros((VOCAB, 9), np.float32))
    with pytest.raises(UserError, match="num_heads"):
        small("Transformer", embedding_path=str(path))
