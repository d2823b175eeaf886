"""The members of a training group as one module: `forward(x) -> logits [N, B, C]`.

A group is N trials of one model that share every shape setting (harness.trialconfig) and
differ only in fusible ones (learning rate, dropout, seed, ...). The loop trains a group; a
single trial is the group of one. Two forms, the same interface:

- `Stacked`: the members' plain models side by side, run one after another. N = 1 is the
  plain model itself, exactly the classic loop's cost. For N > 1 it is the fallback for
  models without a fused form (the LSTM models: torch.func's vmap has no LSTM rule and a
  grouped LSTM kernel does not exist), so every model can train as a group.
- `Fused`: one module whose parameters carry a leading member dimension, run by the
  model's `fused_forward` (harness.models.fused): one launch does the work of N members.

Both give the loop the same things: each member's trainable parameters and gradients as
lists of tensors (views into the stacked storage for `Fused`), member i's plain weights
(`member_state`), and `drop(keep)`, after which the dropped members cost nothing.

Members' random streams: member i is initialised exactly as its solo run (seed, then
build), and draws its dropout masks from a generator of its own (`member_generator`), so its
run never depends on which group it landed in. On the CPU that generator continues from the
state its solo run would have after the build, so a member's numbers equal its solo run's
(to rounding). On CUDA it is a device generator seeded with the member's seed (see
harness.models.fused).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from harness.models import model_entry
from harness.models.fused import MemberDropout
from harness.trialconfig import TrialConfig

Builder = Callable[..., nn.Module]  # harness.models.build_model's signature
FUSE_MODES = ("auto", "fused", "stacked", "vmap")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Members(nn.Module):
    """Interface shared by Stacked and Fused (see the module docstring)."""

    names: list[str]  # trainable parameter names, the plain model's
    embedding: list[bool]  # per name: an embedding table (its gradients are counted apart)

    def _describe(self, template: nn.Module) -> None:
        tables = {
            f"{name}.weight" if name else "weight"
            for name, mod in template.named_modules()
            if isinstance(mod, nn.Embedding)
        }
        self.names = [n for n, p in template.named_parameters() if p.requires_grad]
        self.embedding = [n in tables for n in self.names]

    @property
    def n(self) -> int:
        raise NotImplementedError

    @property
    def fused(self) -> bool:
        return False

    def params(self) -> list[list[Tensor]]:
        """Per member, its trainable parameters in `names` order (views for Fused)."""
        raise NotImplementedError

    def grads(self) -> list[list[Tensor]]:
        """Per member, the gradients of `params()` (zeros where a parameter got none)."""
        raise NotImplementedError

    def member_state(self, i: int) -> dict[str, Tensor]:
        """Member i's weights under the plain model's state_dict names."""
        raise NotImplementedError

    def member_model(self, i: int, weights: Sequence[Tensor] | None = None) -> nn.Module:
        """Member i as a plain model, its trainable parameters replaced by `weights` if given
        (the kept best weights, for the test). It may share storage with the group: use it
        once the member has ended."""
        raise NotImplementedError

    def drop(self, keep: Sequence[int]) -> None:
        """Keep only these members (by current index), in this order."""
        raise NotImplementedError

    def zero_grad_(self) -> None:
        for p in self.parameters():
            p.grad = None


def _grad_or_zeros(p: Tensor, zeros: dict[int, Tensor]) -> Tensor:
    if p.grad is not None:
        return p.grad
    z = zeros.get(id(p))
    if z is None:  # a parameter the forward pass did not use this step
        z = zeros[id(p)] = torch.zeros_like(p)
    return z


class Stacked(Members):
    """The plain models side by side (N = 1: the plain model alone). For N > 1 each member's
    plain dropout runs on its own stream: the device's default generator is given the
    member's state for its forward and its own state back after (`_member_stream`)."""

    def __init__(self, models: Sequence[nn.Module], rng: Sequence[torch.Generator] | None) -> None:
        super().__init__()
        self.models = nn.ModuleList(models)
        self.rng = None if rng is None else list(rng)  # per member (N > 1), member_generator
        self._describe(models[0])
        self._zeros: dict[int, Tensor] = {}

    @property
    def n(self) -> int:
        return len(self.models)

    def forward(self, x: Tensor) -> Tensor:
        if self.n == 1:
            return self.models[0](x).unsqueeze(0)
        outs = []
        for i, m in enumerate(self.models):
            if self.rng is None:
                outs.append(m(x))
                continue
            with _member_stream(x.device, self.rng[i]):
                outs.append(m(x))
        return torch.stack(outs)

    def params(self) -> list[list[Tensor]]:
        return [[p for p in m.parameters() if p.requires_grad] for m in self.models]

    def grads(self) -> list[list[Tensor]]:
        return [[_grad_or_zeros(p, self._zeros) for p in ps] for ps in self.params()]

    def member_state(self, i: int) -> dict[str, Tensor]:
        return dict(self.models[i].state_dict())

    @torch.no_grad()
    def member_model(self, i: int, weights: Sequence[Tensor] | None = None) -> nn.Module:
        model = self.models[i]
        if weights is not None:
            torch._foreach_copy_(self.params()[i], list(weights))
        return model

    def drop(self, keep: Sequence[int]) -> None:
        self.models = nn.ModuleList(self.models[i] for i in keep)
        if self.rng is not None:
            self.rng = [self.rng[i] for i in keep]
        self._zeros.clear()


class Fused(Members):
    """One module for all members: stacked parameters, the model's fused forward."""

    def __init__(
        self,
        models: Sequence[nn.Module],
        forward: Callable[..., Tensor],
        dropout: MemberDropout,
        plain: Callable[[], nn.Module],
    ) -> None:
        super().__init__()
        template = models[0]
        self.all_names = [n for n, _ in template.named_parameters()]
        self._describe(template)
        self._plain = plain  # builds one plain model (of any member: they share every shape)
        self.stack = nn.ParameterList(
            nn.Parameter(
                torch.stack([m.get_parameter(name).detach() for m in models]),
                requires_grad=template.get_parameter(name).requires_grad,
            )
            for name in self.all_names
        )
        self._index = {name: i for i, name in enumerate(self.all_names)}
        self._forward = forward
        self.dropout = dropout
        # The template keeps the hyperparameters (kernel sizes, heads, buffers such as the
        # positional encoding) that fused_forward reads; its own weights are not used.
        self.template = template
        self._zeros: dict[int, Tensor] = {}

    def release_template(self) -> None:
        """Free the template's own weights (FastText's tables are 600 MB a member); its
        hyperparameters and buffers stay."""
        with torch.no_grad():
            for p in self.template.parameters():
                p.data = p.data.new_empty(0)

    @property
    def n(self) -> int:
        return int(self.stack[0].shape[0])

    @property
    def fused(self) -> bool:
        return True

    def train(self, mode: bool = True) -> Fused:
        super().train(mode)
        self.dropout.training = mode
        return self

    def stacked(self) -> dict[str, Tensor]:
        return {name: self.stack[i] for i, name in enumerate(self.all_names)}

    def forward(self, x: Tensor) -> Tensor:
        return self._forward(self.template, self.stacked(), x, self.dropout)

    def _trainable(self) -> list[Tensor]:
        return [self.stack[self._index[name]] for name in self.names]

    def params(self) -> list[list[Tensor]]:
        return [list(v) for v in zip(*(s.detach().unbind(0) for s in self._trainable()))]

    def grads(self) -> list[list[Tensor]]:
        grads = [_grad_or_zeros(s, self._zeros).unbind(0) for s in self._trainable()]
        return [list(v) for v in zip(*grads)]

    def member_state(self, i: int) -> dict[str, Tensor]:
        state = {name: self.stack[j].detach()[i] for j, name in enumerate(self.all_names)}
        for name, buf in self.template.state_dict().items():
            state.setdefault(name, buf)
        return state

    @torch.no_grad()
    def member_model(self, i: int, weights: Sequence[Tensor] | None = None) -> nn.Module:
        state = self.member_state(i)
        if weights is not None:
            state.update(zip(self.names, weights))
        with torch.random.fork_rng(devices=[]):  # its throwaway init must not move any stream
            model = self._plain()
        model.load_state_dict(state)
        return model

    def drop(self, keep: Sequence[int]) -> None:
        index = torch.tensor(list(keep), device=self.stack[0].device)
        with torch.no_grad():
            for j, p in enumerate(self.stack):
                new = nn.Parameter(p.detach().index_select(0, index), requires_grad=p.requires_grad)
                self.stack[j] = new
        self.dropout.keep(keep)
        self._zeros.clear()


def vmap_forward(template: nn.Module, p: dict[str, Tensor], x: Tensor, drop: Any) -> Tensor:
    """torch.func's route to a fused group, for comparison (`harness.bench fuse --impl vmap`):
    the plain forward under vmap over the stacked weights; dropout draws from the global
    stream (randomness="different"), so members do not repeat their solo runs."""

    def one(params: dict[str, Tensor]) -> Tensor:
        return torch.func.functional_call(template, params, (x,))

    return torch.func.vmap(one, randomness="different")(p)


@contextlib.contextmanager
def _member_stream(device: torch.device, gen: torch.Generator) -> Iterator[None]:
    """The default generator draws from `gen` inside (a plain model's dropout knows no other).
    On CUDA through the graph-safe state swap (the generator's state object itself is
    swapped, so a captured step replays it and the graph registers `gen`); on the CPU by
    copying the state in and out."""
    if device.type == "cuda":
        default = torch.cuda.default_generators[device.index or 0]
        saved = default.graphsafe_get_state()
        default.graphsafe_set_state(gen)
        try:
            yield
        finally:
            default.graphsafe_set_state(saved)
        return
    saved_state = torch.get_rng_state()
    torch.set_rng_state(gen.get_state())
    try:
        yield
    finally:
        gen.set_state(torch.get_rng_state())
        torch.set_rng_state(saved_state)


def member_generator(seed: int, device: torch.device) -> torch.Generator:
    """A member's own dropout stream, made right after its model is built: on the CPU the
    default generator's state at that point (where its solo run's dropout starts), on CUDA a
    device generator seeded with the member's seed."""
    if device.type == "cuda":
        g = torch.Generator(device=device)
        g.manual_seed(seed)
        return g
    g = torch.Generator()
    g.set_state(torch.get_rng_state())
    return g


def build(
    cfgs: Sequence[TrialConfig],
    data: Any,
    device: torch.device,
    builder: Builder,
    fuse: str = "auto",
) -> Members:
    """The group's members, member i initialised exactly as its solo run (seed, then build).

    fuse: "auto" runs a model that has a fused form as one module, except on the CPU when a
    timed step says its members run faster side by side; "fused" always fuses (when the model
    can); "stacked" keeps the members side by side; "vmap" uses torch.func (benchmarks)."""
    if fuse not in FUSE_MODES:
        raise ValueError(f"fuse: one of {', '.join(FUSE_MODES)}, got {fuse!r}")
    models, rng = [], []
    for cfg in cfgs:
        seed_everything(cfg.train.seed)
        model = builder(
            cfg.model,
            cfg.params,
            vocab_size=data.vocab_size,
            num_classes=data.num_classes,
            pad_id=data.pad_id,
            seq_len=int(data.train_x.shape[1]),
        )
        models.append(model.to(device))
        rng.append(member_generator(cfg.train.seed, device))
    for m in models:
        m.train()
    if len(models) == 1:
        return Stacked(models, None)  # the global stream is the member's own
    forward = model_entry(cfgs[0].model).fused_forward if fuse != "stacked" else None
    if fuse == "vmap":
        forward = vmap_forward
    if forward is None or type(models[0]) is not model_entry(cfgs[0].model).module_cls:
        return Stacked(models, rng)
    dropout = MemberDropout([c.params.dropout for c in cfgs], rng)
    first = cfgs[0]

    def plain() -> nn.Module:
        return builder(
            first.model, first.params, vocab_size=data.vocab_size, num_classes=data.num_classes,
            pad_id=data.pad_id, seq_len=int(data.train_x.shape[1]),
        ).to(device)  # fmt: skip

    fused = Fused(models, forward, dropout, plain).train()
    if (
        device.type == "cpu"
        and fuse == "auto"
        and not _fused_is_faster(fused, Stacked(models, rng), data, first.train.batch_size)
    ):
        return Stacked(models, rng)
    fused.release_template()
    return fused


def _fused_is_faster(
    fused: Fused, stacked: Stacked, data: Any, batch: int, rounds: int = 2
) -> bool:
    """On the CPU a grouped kernel is not always faster than N plain ones (oneDNN's grouped
    convolution at the classic TextCNN width runs ~2x slower than the same convolutions one
    by one, while small models gain ~2x), so time one forward and backward of a real batch
    both ways (dropout off, nothing kept) and keep the faster form."""
    x = torch.as_tensor(np.ascontiguousarray(data.train_x[:batch]), dtype=torch.long)
    times = {}
    for name, module in (("stacked", stacked), ("fused", fused)):
        module.eval()
        best = float("inf")
        for _ in range(rounds):
            t = time.process_time()
            module(x).float().sum().backward()
            best = min(best, time.process_time() - t)
        module.zero_grad_()
        module.train()
        times[name] = best
    return times["fused"] <= times["stacked"]
