"""Local LoRA training on a vehicle: initialise from the global factors, train under an energy meter, publish B, A.

One frozen base encoder per process (`BaseModelCache`); each call injects a fresh peft LoRA adapter into it and
unloads the adapter afterwards, so the base is never reloaded (injection + unload costs milliseconds).
Published layer names are the module names in the bare encoder, e.g. `encoder.layer.0.attention.self.query`
(peft's `base_model.model.` prefix stripped); `edge_agent.model.layer_shapes` gives their (d_out, d_in).

The encoder stays in eval mode while training: the base is frozen and lora_dropout is 0, so there is no dropout
anywhere, and a seed fully determines a run. peft is imported lazily (the idle daemon never pays for it).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from edge_agent.data.readers import Example
from edge_agent.model import DEFAULT_TARGETS, GLOBAL_RNG_LOCK, BaseModelCache, resolve_model_dir, target_layers
from edge_agent.tasks import Encoded, MetricAccumulator, TaskSpec, encode, forward_logits, loss_fn, make_head
from proto.adapter import Factored, LoraFactors, balanced_split

log = logging.getLogger(__name__)

PEFT_PREFIX = "base_model.model."
# A cached base is shared by every trainer of its replica in the process: one adapter at a time on each replica.
_BASE_LOCKS: dict[int, threading.RLock] = {}
_BASE_LOCKS_GUARD = threading.Lock()
# One process may train many vehicles (the fleet: each vehicle's train and held-out split, each task's test
# split); a cache smaller than that re-tokenises every round. Entries are small (token ids of a few hundred
# examples).
_ENCODING_CACHE_SIZE = 256


class Measurement(Protocol):
    joules: float
    seconds: float
    source: str
    measured: bool


class EnergyMeter(Protocol):
    def start(self) -> None: ...

    def stop(self) -> Measurement: ...


class InitMismatch(ValueError):
    """Initial factors that do not fit the model: wrong layer names, shapes or rank."""


@dataclass
class TrainResult:
    layers: dict[str, LoraFactors]  # exactly the trained adapter, float32
    head: dict[str, torch.Tensor]  # `weight` (out, hidden), `bias` (out,)
    samples: int  # n_v: training examples held by the vehicle (the aggregation weight, docs/algorithms.md section 1)
    loss: float  # mean training loss over the steps run (held-out loss if no step ran)
    local_accuracy: float  # on the vehicle's own held-out split (0.0 when it has none)
    train_s: float  # wall time of the training loop
    energy: Measurement  # from the meter, with its source
    steps: int
    partial: bool  # should_stop cut training short
    local_metrics: dict[str, float] = field(default_factory=dict)


class LocalTrainer:
    """Trains and evaluates rank-eta LoRA adapters plus a task head on the shared frozen encoder."""

    def __init__(
        self, model_dir: Path | str | None = None, targets: Sequence[str] = DEFAULT_TARGETS, max_length: int = 64,
        batch_size: int = 16, lr: float = 5e-4, threads: int | None = None, eval_batch_size: int = 64,
        replica: int = 0,
    ) -> None:
        """`replica` picks an independent copy of the base (`BaseModelCache`): trainers on different replicas can
        run in different threads at once; trainers on one replica take turns."""
        self.model_dir = resolve_model_dir(model_dir)
        self.replica = replica
        with _BASE_LOCKS_GUARD:
            self._lock = _BASE_LOCKS.setdefault(replica, threading.RLock())
        self.targets = tuple(targets)
        self.max_length, self.batch_size, self.eval_batch_size = max_length, batch_size, eval_batch_size
        self.lr, self.threads = lr, threads
        self._encodings: OrderedDict[tuple[str, tuple[Example, ...]], Encoded] = OrderedDict()

    @property
    def layer_names(self) -> list[str]:
        encoder, _ = BaseModelCache.get(self.model_dir, self.replica)
        return target_layers(encoder, self.targets)

    def train(
        self, spec: TaskSpec, examples: Sequence[Example], heldout: Sequence[Example], *, rank: int, alpha: float,
        init: dict[str, Factored] | dict[str, LoraFactors] | None, head: dict[str, torch.Tensor] | None,
        steps: int | None = None, epochs: float | None = None, meter: EnergyMeter,
        should_stop: Callable[[], bool] | None = None, seed: int = 0,
    ) -> TrainResult:
        """Run `steps` optimiser steps (or `epochs` passes) of batch `batch_size` from the given init.

        Args:
            init: the global factors (top-`rank` components by the balanced split, docs/algorithms.md §1; peft init
                for components beyond the global rank, and for all of them in round 0 / when None), or a
                rank-`rank` adapter to continue (migration handoff).
            head: the task head to start from; None for the seeded fresh head.
            meter: started before the first step, stopped after the last (local evaluation is not metered).
            should_stop: checked before every step; True ends training early and marks the result partial.

        Raises:
            InitMismatch: init factors with other layers, shapes or rank than this model and `rank`.
            ValueError: no training examples, bad rank, or neither/both of steps and epochs.
        """
        if not examples:
            raise ValueError("no training examples")
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        if (steps is None) == (epochs is None):
            raise ValueError("give exactly one of steps and epochs")
        n_steps = steps if steps is not None else math.ceil(epochs * len(examples) / self.batch_size)
        encoded = self._encoded(spec, examples)
        gen = torch.Generator().manual_seed(seed)
        with self._lock:
            self._set_threads()
            encoder, _ = BaseModelCache.get(self.model_dir, self.replica)
            factors = self._initial_factors(encoder, init, rank, alpha, gen)
            with self._adapter(encoder, rank, alpha, factors, seed) as model:
                head_mod = make_head(spec, encoder.config.hidden_size, head)
                params = [p for p in model.parameters() if p.requires_grad] + list(head_mod.parameters())
                opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=0.0)
                losses: list[float] = []
                partial = False
                order: list[int] = []
                meter.start()
                t0 = time.perf_counter()
                try:
                    for _ in range(n_steps):
                        if should_stop is not None and should_stop():
                            partial = True
                            break
                        if len(order) < self.batch_size:  # new epoch; a tail shorter than a batch is dropped
                            order = torch.randperm(len(encoded), generator=gen).tolist()
                        batch = encoded.batch(torch.tensor(order[: self.batch_size]))
                        del order[: self.batch_size]
                        loss = loss_fn(forward_logits(spec.task_type, model, head_mod, batch), batch["labels"])
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        losses.append(loss.item())
                finally:
                    train_s = time.perf_counter() - t0
                    energy = meter.stop()
                layers = _read_factors(model)
                local = self._metrics(spec, model, head_mod, heldout) if heldout else {}
                head_state = {k: v.detach().clone() for k, v in head_mod.state_dict().items()}
        loss_value = sum(losses) / len(losses) if losses else local.get("loss", 0.0)
        log.info("trained %s rank %d: %d/%d steps in %.2fs, loss %.4f, local acc %.3f%s", spec.name, rank,
                 len(losses), n_steps, train_s, loss_value, local.get("accuracy", 0.0), " (partial)" if partial else "")
        return TrainResult(
            layers=layers, head=head_state, samples=len(examples), loss=loss_value,
            local_accuracy=local.get("accuracy", 0.0), train_s=train_s, energy=energy, steps=len(losses),
            partial=partial, local_metrics=local,
        )

    def evaluate(
        self, spec: TaskSpec, examples: Sequence[Example], *, layers: dict[str, Factored] | dict[str, LoraFactors]
        | None, head: dict[str, torch.Tensor] | None, alpha: float,
    ) -> dict[str, float]:
        """Metrics of base + adapter + head on `examples`: accuracy and loss; for NER also entity P/R/F1.

        `layers` may be the global factored update (any rank, 0 = base only), a vehicle's LoRA factors, or None.
        """
        with self._lock:
            self._set_threads()
            encoder, _ = BaseModelCache.get(self.model_dir, self.replica)
            rank, factors = _eval_factors(layers, alpha)
            self._check_layers(encoder, factors)
            with self._adapter(encoder, rank, alpha, factors, seed=0) as model:
                return self._metrics(spec, model, make_head(spec, encoder.config.hidden_size, head), examples)

    def predict(
        self, spec: TaskSpec, examples: Sequence[Example], *, layers: dict[str, Factored] | dict[str, LoraFactors]
        | None, head: dict[str, torch.Tensor] | None, alpha: float,
    ) -> list[torch.Tensor]:
        """Logits of each evaluation batch (shapes as `tasks.forward_logits`; token batches are trimmed per batch)."""
        with self._lock:
            encoder, _ = BaseModelCache.get(self.model_dir, self.replica)
            rank, factors = _eval_factors(layers, alpha)
            self._check_layers(encoder, factors)
            with self._adapter(encoder, rank, alpha, factors, seed=0) as model:
                head_mod = make_head(spec, encoder.config.hidden_size, head)
                return [logits for logits, _ in self._batches(spec, model, head_mod, examples)]

    # -- internals -------------------------------------------------------------------------------------------

    def _set_threads(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)

    def _encoded(self, spec: TaskSpec, examples: Sequence[Example]) -> Encoded:
        """Tokenise once per (task type, examples); later rounds reuse the tensors (LRU of 256)."""
        key = (spec.task_type, tuple(examples))
        hit = self._encodings.get(key)
        if hit is not None:
            self._encodings.move_to_end(key)
            return hit
        _, tokenizer = BaseModelCache.get(self.model_dir, self.replica)
        encoded = encode(spec, examples, tokenizer, self.max_length)
        self._encodings[key] = encoded
        if len(self._encodings) > _ENCODING_CACHE_SIZE:
            self._encodings.popitem(last=False)
        return encoded

    def _batches(self, spec: TaskSpec, model: nn.Module, head: nn.Module, examples: Sequence[Example],
                 by_length: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Evaluation batches in order, or (`by_length`) grouped by length so that each batch is trimmed to
        similar lengths: less padding computed (metrics are sums over examples, so order does not matter)."""
        encoded = self._encoded(spec, examples)
        order = torch.arange(len(encoded))
        if by_length:
            mask = encoded.attention_mask
            lengths = mask.sum(-1).amax(-1) if mask.dim() == 3 else mask.sum(-1)  # choice: the longer pair
            order = torch.argsort(lengths, stable=True)
        with torch.inference_mode():
            for lo in range(0, len(encoded), self.eval_batch_size):
                batch = encoded.batch(order[lo: lo + self.eval_batch_size])
                yield forward_logits(spec.task_type, model, head, batch), batch["labels"]

    def _metrics(self, spec: TaskSpec, model: nn.Module, head: nn.Module, examples: Sequence[Example]
                 ) -> dict[str, float]:
        acc = MetricAccumulator(spec.task_type)
        for logits, labels in self._batches(spec, model, head, examples, by_length=True):
            acc.add(logits, labels)
        return acc.result()

    def _check_layers(self, encoder: nn.Module, factors: dict[str, LoraFactors] | None) -> None:
        if factors is None:
            return
        modules = dict(encoder.named_modules())
        expected = target_layers(encoder, self.targets)
        if set(factors) != set(expected):
            raise InitMismatch(f"layers {sorted(set(factors) ^ set(expected))[:4]} do not match targets {self.targets}")
        for name, f in factors.items():
            d_out, d_in = modules[name].weight.shape
            if tuple(f.A.shape[1:]) != (d_in,) or tuple(f.B.shape[:1]) != (d_out,) or f.A.shape[0] != f.B.shape[1]:
                raise InitMismatch(f"{name}: A{tuple(f.A.shape)} B{tuple(f.B.shape)} do not fit ({d_out}, {d_in})")

    def _initial_factors(
        self, encoder: nn.Module, init: dict[str, Factored] | dict[str, LoraFactors] | None, rank: int,
        alpha: float, gen: torch.Generator,
    ) -> dict[str, LoraFactors] | None:
        """Rank-`rank` factors to start from, or None for peft's own init (round 0)."""
        if not init or all(isinstance(f, Factored) and f.rank == 0 for f in init.values()):
            return None
        if all(isinstance(f, LoraFactors) for f in init.values()):
            if any(f.rank != rank for f in init.values()):
                raise InitMismatch(f"handoff adapter ranks {sorted({f.rank for f in init.values()})} != rank {rank}")
            out = dict(init)
        elif all(isinstance(f, Factored) for f in init.values()):
            out = {name: _from_global(f, rank, alpha, gen) for name, f in init.items()}
        else:
            raise InitMismatch("init must be all Factored or all LoraFactors")
        self._check_layers(encoder, out)
        return out

    @contextmanager
    def _adapter(self, encoder: nn.Module, rank: int, alpha: float, factors: dict[str, LoraFactors] | None,
                 seed: int) -> Iterator[nn.Module]:
        """The encoder with a fresh rank-`rank` LoRA injected (and set to `factors`); unloaded on exit."""
        if rank == 0:
            yield encoder
            return
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(self.targets), lora_dropout=0.0)
        with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):  # peft's kaiming init draws from the global RNG
            torch.manual_seed(seed)
            model = get_peft_model(encoder, config)
        try:
            if factors is not None:
                _write_factors(model, factors)
            model.eval()
            yield model
        finally:
            model.unload()  # puts the original Linear modules back in place; the base weights were never touched
            encoder.requires_grad_(False)


def _from_global(f: Factored, rank: int, alpha: float, gen: torch.Generator) -> LoraFactors:
    """Top-min(rank, r) components by the balanced split, extra components peft-style (A kaiming, B zero).

    The adapter runs at scale s(rank) = alpha / rank, so the split uses alpha' = alpha * k / rank: then
    s'(k) = s(rank) and s(rank) * B A equals the rank-k truncation of U S Vt (docs/algorithms.md section 1).
    """
    k = min(rank, f.rank)
    d_out, d_in = f.U.shape[0], f.Vt.shape[1]
    top = _split(f, k, alpha * k / rank)
    extra_a = torch.empty(rank - k, d_in)
    if rank > k:
        nn.init.kaiming_uniform_(extra_a, a=math.sqrt(5), generator=gen)  # peft's default for lora_A
    A = torch.cat([top.A, extra_a])  # (rank, d_in)
    B = torch.cat([top.B, torch.zeros(d_out, rank - k)], dim=1)  # (d_out, rank)
    return LoraFactors(A=A, B=B)


def _split(f: Factored, k: int, alpha: float) -> LoraFactors:
    """balanced_split in float32; k = 0 gives empty factors (a layer the global update has not reached yet)."""
    if k == 0:
        return LoraFactors(A=torch.zeros(0, f.Vt.shape[1]), B=torch.zeros(f.U.shape[0], 0))
    return balanced_split(Factored(f.U.float(), f.S.float(), f.Vt.float()), k, alpha)


def _eval_factors(layers: dict[str, Factored] | dict[str, LoraFactors] | None, alpha: float
                  ) -> tuple[int, dict[str, LoraFactors] | None]:
    """One common rank R for evaluation; each layer rescaled so s(R) * B A is its own Delta W, zero-padded to R."""
    if not layers:
        return 0, None
    rank = max(f.rank for f in layers.values())
    if rank == 0:
        return 0, None
    out: dict[str, LoraFactors] = {}
    for name, f in layers.items():
        if isinstance(f, Factored):
            lf = _split(f, f.rank, alpha * f.rank / rank)
        else:  # s(r) B A = s(R) (c B)(c A) with c = sqrt(R / r)
            c = math.sqrt(rank / f.rank)
            lf = LoraFactors(A=f.A.float() * c, B=f.B.float() * c)
        pad = rank - lf.rank
        out[name] = LoraFactors(A=torch.cat([lf.A, torch.zeros(pad, lf.A.shape[1])]),
                                B=torch.cat([lf.B, torch.zeros(lf.B.shape[0], pad)], dim=1))
    return rank, out


def _lora_modules(model: nn.Module) -> dict[str, nn.Module]:
    from peft.tuners.lora import LoraLayer

    return {n.removeprefix(PEFT_PREFIX): m for n, m in model.named_modules() if isinstance(m, LoraLayer)}


def _write_factors(model: nn.Module, factors: dict[str, LoraFactors]) -> None:
    modules = _lora_modules(model)
    with torch.no_grad():
        for name, f in factors.items():
            modules[name].lora_A["default"].weight.copy_(f.A)  # (rank, d_in)
            modules[name].lora_B["default"].weight.copy_(f.B)  # (d_out, rank)


def _read_factors(model: nn.Module) -> dict[str, LoraFactors]:
    return {
        name: LoraFactors(A=m.lora_A["default"].weight.detach().clone(), B=m.lora_B["default"].weight.detach().clone())
        for name, m in _lora_modules(model).items()
    }
