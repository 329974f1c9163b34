"""The three task types: how examples are encoded, what the head computes, the loss and the metrics.

A task model is the shared frozen encoder (with a LoRA adapter) plus a small head, an `nn.Linear` on the
hidden size whose `weight` / `bias` travel on the wire as `head.weight` / `head.bias`:
- sentence (SST-2-like): head on the [CLS] hidden state -> num_labels logits; accuracy.
- token (CoNLL-2003 NER, IOB2): head on every hidden state -> 9 logits; labels on the first word piece only
  (-100 elsewhere); token accuracy and span-level entity F1.
- choice (COPA-like): each (premise + question word, alternative) pair is encoded, the head scores its [CLS]
  hidden state (1 output), softmax over the 2 alternatives; accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from edge_agent.data.readers import NER_LABELS, ChoiceExample, Example, SentenceExample, TokenExample

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TaskType = Literal["sentence", "token", "choice"]
IGNORE = -100  # cross-entropy's ignore_index: specials, padding and non-first word pieces
HEAD_INIT_SEED = 0  # every vehicle starts a fresh head identically, so round-0 heads average meaningfully
_QUESTION_WORD = {"cause": "because", "effect": "so"}


@dataclass(frozen=True)
class TaskSpec:
    name: str
    task_type: TaskType
    num_labels: int

    @property
    def head_outputs(self) -> int:
        """Width of the head: one score per alternative for choice, one logit per class otherwise."""
        return 1 if self.task_type == "choice" else self.num_labels


def make_head(spec: TaskSpec, hidden: int, state: dict[str, torch.Tensor] | None = None) -> nn.Linear:
    """The task head; from `state` (`weight` (out, hidden), `bias` (out,)) or a seeded fresh init (std 0.02).

    Raises:
        ValueError: `state` has other names or shapes than the head.
    """
    # skip_init: nn.Linear's own init would draw from torch's global RNG, which a training thread beside this one
    # may have just seeded (the fleet's pool); both branches below set every value anyway
    head = nn.utils.skip_init(nn.Linear, hidden, spec.head_outputs)
    if state is None:
        g = torch.Generator().manual_seed(HEAD_INIT_SEED)
        with torch.no_grad():
            head.weight.copy_(torch.randn(head.weight.shape, generator=g) * 0.02)  # BERT's initializer_range
            head.bias.zero_()
        return head
    want = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if want != got:
        raise ValueError(f"head tensors {got} do not match the task head {want}")
    head.load_state_dict({k: v.detach().float() for k, v in state.items()})
    return head


def align_labels(word_ids: Sequence[int | None], word_labels: Sequence[int]) -> list[int]:
    """Word labels onto word pieces: the first piece of each word gets its label, the rest and specials -100."""
    out: list[int] = []
    prev: int | None = None
    for wid in word_ids:
        out.append(IGNORE if wid is None or wid == prev else word_labels[wid])
        prev = wid
    return out


@dataclass
class Encoded:
    """Tokenised examples padded to max_length: ids (N, L) or (N, 2, L) for choice; labels (N,) or (N, L)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rows `idx`, trimmed to the longest sequence in them (padding costs compute, not accuracy)."""
        mask = self.attention_mask[idx]
        length = max(int(mask.sum(-1).max()), 1)
        out = {
            "input_ids": self.input_ids[idx][..., :length],
            "attention_mask": mask[..., :length],
            "token_type_ids": self.token_type_ids[idx][..., :length],
        }
        labels = self.labels[idx]
        out["labels"] = labels[:, :length] if labels.dim() == 2 else labels
        return out


def encode(
    spec: TaskSpec, examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> Encoded:
    """Tokenise `examples` for the task (fast tokenizer required: token labels use `word_ids()`)."""
    kw = {"truncation": True, "max_length": max_length, "padding": "max_length", "return_tensors": "pt"}
    if spec.task_type == "sentence":
        exs = _typed(examples, SentenceExample)
        enc = tokenizer([e.text for e in exs], **kw)
        labels = torch.tensor([e.label for e in exs], dtype=torch.long)
    elif spec.task_type == "token":
        exs = _typed(examples, TokenExample)
        enc = tokenizer([list(e.tokens) for e in exs], is_split_into_words=True, **kw)
        label_id = {t: i for i, t in enumerate(NER_LABELS)}
        labels = torch.tensor(
            [align_labels(enc.word_ids(i), [label_id[t] for t in e.tags]) for i, e in enumerate(exs)],
            dtype=torch.long,
        )
    else:
        exs = _typed(examples, ChoiceExample)
        firsts = [f"{e.premise.rstrip('.')} {_QUESTION_WORD[e.question]}" for e in exs for _ in (0, 1)]
        seconds = [c for e in exs for c in (e.choice1, e.choice2)]
        enc = tokenizer(firsts, seconds, **kw)
        labels = torch.tensor([e.label for e in exs], dtype=torch.long)
    n = len(exs)
    shape = (n, 2, -1) if spec.task_type == "choice" else (n, -1)
    ids = enc["input_ids"]
    types = enc.get("token_type_ids")
    return Encoded(
        input_ids=ids.view(shape), attention_mask=enc["attention_mask"].view(shape),
        token_type_ids=(types if types is not None else torch.zeros_like(ids)).view(shape), labels=labels,
    )


def _typed(examples: Sequence[Example], kind: type) -> list:
    bad = next((e for e in examples if not isinstance(e, kind)), None)
    if bad is not None:
        raise TypeError(f"expected {kind.__name__} examples, got {type(bad).__name__}")
    return list(examples)


def forward_logits(task_type: TaskType, encoder: nn.Module, head: nn.Module, batch: dict[str, torch.Tensor]
                   ) -> torch.Tensor:
    """Logits: sentence (N, C); token (N, L, C); choice (N, 2)."""
    ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    if task_type == "choice":
        n = ids.shape[0]
        ids, mask, types = (t.reshape(2 * n, -1) for t in (ids, mask, types))  # (2N, L)
    hidden = encoder(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state  # (B, L, H)
    if task_type == "token":
        return head(hidden)
    scores = head(hidden[:, 0])  # [CLS]: (B, C) or (2N, 1)
    return scores.view(-1, 2) if task_type == "choice" else scores


def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the last dim; token positions labelled -100 do not count."""
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)


def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """(type, start, end exclusive) of each entity in an IOB2 sequence; a stray I-X starts an entity (conlleval)."""
    spans: set[tuple[str, int, int]] = set()
    kind: str | None = None
    start = 0
    for i, tag in enumerate([*tags, "O"]):
        inside = tag.startswith("I-") and kind == tag[2:]
        if kind is not None and not inside:
            spans.add((kind, start, i))
            kind = None
        if tag.startswith("B-") or (tag.startswith("I-") and not inside):
            kind, start = tag[2:], i
    return spans


def entity_f1(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> tuple[float, float, float]:
    """Micro (precision, recall, F1) over exact entity spans; no entities on either side counts as perfect."""
    tp = n_gold = n_pred = 0
    for g, p in zip(gold, pred, strict=True):
        gs, ps = entity_spans(g), entity_spans(p)
        tp += len(gs & ps)
        n_gold += len(gs)
        n_pred += len(ps)
    if n_gold == 0 and n_pred == 0:
        return 1.0, 1.0, 1.0
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


@dataclass
class MetricAccumulator:
    """Collects batches of (logits, labels) and gives the task's metrics."""

    task_type: TaskType
    correct: int = 0
    total: int = 0
    loss_sum: float = 0.0
    gold_tags: list[list[str]] = field(default_factory=list)
    pred_tags: list[list[str]] = field(default_factory=list)

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        keep = labels != IGNORE
        pred = logits.argmax(-1)
        n = int(keep.sum())
        self.loss_sum += float(loss_fn(logits, labels)) * n
        self.correct += int((pred[keep] == labels[keep]).sum())
        self.total += n
        if self.task_type == "token":
            for row_pred, row_gold, row_keep in zip(pred, labels, keep, strict=True):
                self.gold_tags.append([NER_LABELS[i] for i in row_gold[row_keep].tolist()])
                self.pred_tags.append([NER_LABELS[i] for i in row_pred[row_keep].tolist()])

    def result(self) -> dict[str, float]:
        """accuracy (token accuracy for NER), mean loss, and for NER entity precision / recall / F1."""
        out = {"accuracy": self.correct / self.total if self.total else 0.0,
               "loss": self.loss_sum / self.total if self.total else 0.0}
        if self.task_type == "token":
            out["entity_precision"], out["entity_recall"], out["entity_f1"] = entity_f1(self.gold_tags, self.pred_tags)
        return out
