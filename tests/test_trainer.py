"""The local LoRA trainer on the tiny random BERT: initialisation, publication, training, early stop, reuse."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from tiny_model import make_tiny_bert
from torch import nn

from edge_agent.data.readers import ChoiceExample, SentenceExample, TokenExample
from edge_agent.model import BaseModelCache
from edge_agent.tasks import TaskSpec, encode, forward_logits
from edge_agent.trainer import InitMismatch, LocalTrainer
from proto.adapter import Factored, LoraFactors

SENT = TaskSpec("sentiment", "sentence", 2)
# Separable by the first word: "good ..." is 1, "bad ..." is 0.
DATA = [SentenceExample(f"{'good great' if i % 2 else 'bad awful'} film {i}", i % 2) for i in range(48)]


@dataclass
class FakeMeasurement:
    joules: float
    seconds: float
    source: str
    measured: bool


class FakeMeter:
    def __init__(self) -> None:
        self.starts = 0
        self.stops = 0

    def start(self) -> None:
        self.starts += 1

    def stop(self) -> FakeMeasurement:
        self.stops += 1
        return FakeMeasurement(joules=1.5, seconds=0.1, source="fake", measured=False)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture
def trainer(model_dir: Path) -> LocalTrainer:
    return LocalTrainer(model_dir, lr=1e-2, batch_size=16, max_length=32)


def _global_update(trainer: LocalTrainer, rank: int, seed: int = 0) -> dict[str, Factored]:
    """A random rank-`rank` global update per layer with orthonormal U, V and decreasing S."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in trainer.layer_names:
        U, _ = torch.linalg.qr(torch.randn(32, rank, generator=g))  # (d_out, r)
        V, _ = torch.linalg.qr(torch.randn(32, rank, generator=g))  # (d_in, r)
        S = torch.linspace(0.8, 0.1, rank)
        out[name] = Factored(U=U, S=S, Vt=V.T.contiguous())
    return out


def _reference_logits(model_dir: Path, spec: TaskSpec, examples: list, deltas: dict[str, torch.Tensor],
                      head: dict[str, torch.Tensor]) -> torch.Tensor:
    """A freshly loaded BertModel with each Delta W merged into its weight by hand, plus the head."""
    from transformers import BertModel

    encoder = BertModel.from_pretrained(model_dir).eval()
    modules = dict(encoder.named_modules())
    head_mod = nn.Linear(32, spec.head_outputs)
    head_mod.load_state_dict(head)
    _, tokenizer = BaseModelCache.get(model_dir)
    batch = encode(spec, examples, tokenizer, 32).batch(torch.arange(len(examples)))
    with torch.no_grad():
        for name, delta in deltas.items():
            modules[name].weight += delta  # (d_out, d_in)
        return forward_logits(spec.task_type, encoder, head_mod, batch)


def _train(trainer: LocalTrainer, **kw: object) -> object:
    args: dict = {"rank": 4, "alpha": 8.0, "init": None, "head": None, "steps": 5, "meter": FakeMeter()}
    args.update(kw)
    return trainer.train(SENT, DATA, DATA[:16], **args)


def test_round_start_factors_give_the_top_eta_global_approximation(trainer: LocalTrainer) -> None:
    glob = _global_update(trainer, rank=4)
    res = _train(trainer, rank=2, alpha=8.0, init=glob, steps=0)
    for name, f in glob.items():
        lf = res.layers[name]
        top2 = f.U[:, :2] @ torch.diag(f.S[:2]) @ f.Vt[:2]
        assert torch.allclose((8.0 / 2) * lf.B @ lf.A, top2, atol=1e-6)


def test_rank_above_global_rank_keeps_the_product_and_adds_learnable_components(trainer: LocalTrainer) -> None:
    glob = _global_update(trainer, rank=4)
    res = _train(trainer, rank=6, alpha=8.0, init=glob, steps=0)
    for name, f in glob.items():
        lf = res.layers[name]
        assert lf.A.shape == (6, 32) and lf.B.shape == (32, 6)
        assert torch.allclose((8.0 / 6) * lf.B @ lf.A, f.U @ torch.diag(f.S) @ f.Vt, atol=1e-6)
        assert torch.count_nonzero(lf.B[:, 4:]) == 0 and torch.count_nonzero(lf.A[4:]) > 0


def test_round_zero_uses_peft_init_b_zero(trainer: LocalTrainer) -> None:
    res = _train(trainer, steps=0)
    assert all(torch.count_nonzero(f.B) == 0 and torch.count_nonzero(f.A) > 0 for f in res.layers.values())
    zero_rank = {n: Factored(torch.zeros(32, 0), torch.zeros(0), torch.zeros(0, 32)) for n in trainer.layer_names}
    again = _train(trainer, steps=0, init=zero_rank)
    assert all(torch.equal(again.layers[n].A, res.layers[n].A) for n in res.layers)


def test_evaluating_the_global_update_matches_a_hand_merged_fresh_model(trainer: LocalTrainer, model_dir: Path) -> None:
    glob = _global_update(trainer, rank=3, seed=1)
    head = {"weight": torch.randn(2, 32), "bias": torch.randn(2)}
    got = trainer.predict(SENT, DATA[:8], layers=glob, head=head, alpha=16.0)
    want = _reference_logits(model_dir, SENT, DATA[:8], {n: f.U @ torch.diag(f.S) @ f.Vt for n, f in glob.items()},
                             head)
    assert len(got) == 1 and torch.allclose(got[0], want, atol=1e-5)


def test_published_factors_reload_into_a_fresh_model_with_identical_outputs(trainer: LocalTrainer,
                                                                            model_dir: Path) -> None:
    res = _train(trainer, rank=4, alpha=8.0, steps=6)
    assert any(torch.count_nonzero(f.B) > 0 for f in res.layers.values())  # training moved the adapter
    got = trainer.predict(SENT, DATA[:8], layers=res.layers, head=res.head, alpha=8.0)
    deltas = {n: (8.0 / 4) * f.B @ f.A for n, f in res.layers.items()}
    want = _reference_logits(model_dir, SENT, DATA[:8], deltas, res.head)
    assert torch.allclose(got[0], want, atol=1e-5)


def test_training_reduces_loss_on_a_separable_dataset(trainer: LocalTrainer) -> None:
    before = trainer.evaluate(SENT, DATA, layers=None, head=None, alpha=8.0)
    res = _train(trainer, steps=40)
    after = trainer.evaluate(SENT, DATA, layers=res.layers, head=res.head, alpha=8.0)
    assert after["loss"] < 0.5 * before["loss"]
    assert after["accuracy"] == 1.0 and res.local_accuracy == 1.0
    assert res.steps == 40 and not res.partial and res.samples == len(DATA)


def test_should_stop_cuts_training_and_marks_partial(trainer: LocalTrainer) -> None:
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) >= 3  # checked before each step: steps 1 and 2 run, the third is refused

    meter = FakeMeter()
    res = _train(trainer, steps=20, should_stop=should_stop, meter=meter)
    assert res.partial and res.steps == 2
    assert (meter.starts, meter.stops) == (1, 1)
    assert res.energy.joules == 1.5 and res.energy.source == "fake"


def test_base_model_is_not_reloaded_and_is_restored_after_each_round(trainer: LocalTrainer, model_dir: Path) -> None:
    encoder, _ = BaseModelCache.get(model_dir)
    weights = {k: v.clone() for k, v in encoder.state_dict().items()}
    loads = BaseModelCache.loads
    for rank in (2, 8):
        _train(trainer, rank=rank, steps=2)
    trainer.evaluate(SENT, DATA[:4], layers=_global_update(trainer, 3), head=None, alpha=8.0)
    assert BaseModelCache.loads == loads
    assert BaseModelCache.get(model_dir)[0] is encoder
    assert not any("lora" in n for n, _ in encoder.named_modules())
    assert all(torch.equal(v, weights[k]) for k, v in encoder.state_dict().items())


def test_handoff_factors_continue_exactly(trainer: LocalTrainer) -> None:
    first = _train(trainer, rank=4, steps=3)
    resumed = _train(trainer, rank=4, steps=0, init=first.layers, head=first.head)
    for n, f in first.layers.items():
        assert torch.equal(resumed.layers[n].A, f.A) and torch.equal(resumed.layers[n].B, f.B)
    assert torch.equal(resumed.head["weight"], first.head["weight"])
    with pytest.raises(InitMismatch, match="rank"):
        _train(trainer, rank=2, init=first.layers)


def test_init_with_unknown_layers_or_shapes_is_rejected(trainer: LocalTrainer) -> None:
    glob = _global_update(trainer, rank=2)
    renamed = {f"x.{n}": f for n, f in glob.items()}
    with pytest.raises(InitMismatch, match="do not match"):
        _train(trainer, init=renamed)
    wrong = {n: LoraFactors(A=torch.zeros(4, 7), B=torch.zeros(32, 4)) for n in glob}
    with pytest.raises(InitMismatch, match="do not fit"):
        _train(trainer, init=wrong)


def test_same_seed_gives_the_same_adapter(trainer: LocalTrainer) -> None:
    a, b = _train(trainer, steps=3, seed=7), _train(trainer, steps=3, seed=7)
    assert all(torch.equal(a.layers[n].B, b.layers[n].B) for n in a.layers)


def test_epochs_are_converted_to_steps(trainer: LocalTrainer) -> None:
    res = _train(trainer, steps=None, epochs=1.0)
    assert res.steps == 3  # 48 examples / batch 16


def test_token_and_choice_tasks_train_and_report_their_metrics(trainer: LocalTrainer) -> None:
    ner = [TokenExample(("John", "met", "Acme", "in", "Paris"), ("B-PER", "O", "B-ORG", "O", "B-LOC"))] * 8
    res = trainer.train(TaskSpec("ner", "token", 9), ner, ner[:2], rank=2, alpha=4.0, init=None, head=None,
                        steps=30, meter=FakeMeter())
    assert res.head["weight"].shape == (9, 32)
    assert res.local_metrics["entity_f1"] == 1.0  # memorised the one sentence
    copa = [ChoiceExample("The film was bad.", q, "John left.", "John stayed.", int(q == "cause"))
            for q in ("cause", "effect")] * 8
    res = trainer.train(TaskSpec("copa", "choice", 2), copa, copa[:4], rank=2, alpha=4.0, init=None, head=None,
                        steps=30, meter=FakeMeter())
    assert res.head["weight"].shape == (1, 32)
    assert res.local_accuracy == 1.0  # only the question word tells the two items apart


def test_bad_arguments_are_value_errors(trainer: LocalTrainer) -> None:
    with pytest.raises(ValueError, match="no training examples"):
        trainer.train(SENT, [], [], rank=2, alpha=4.0, init=None, head=None, steps=1, meter=FakeMeter())
    with pytest.raises(ValueError, match="exactly one"):
        _train(trainer, steps=None)


def test_evaluating_lora_factors_of_mixed_ranks_matches_their_own_scales(trainer: LocalTrainer,
                                                                        model_dir: Path) -> None:
    g = torch.Generator().manual_seed(3)
    ranks = dict(zip(trainer.layer_names, (1, 2, 4, 2), strict=True))
    layers = {n: LoraFactors(A=torch.randn(r, 32, generator=g) * 0.3, B=torch.randn(32, r, generator=g) * 0.3)
              for n, r in ranks.items()}
    head = {"weight": torch.randn(2, 32, generator=g), "bias": torch.zeros(2)}
    got = trainer.predict(SENT, DATA[:8], layers=layers, head=head, alpha=4.0)
    deltas = {n: (4.0 / f.rank) * f.B @ f.A for n, f in layers.items()}  # each layer at its own s(eta)
    assert torch.allclose(got[0], _reference_logits(model_dir, SENT, DATA[:8], deltas, head), atol=1e-5)


def test_length_grouped_evaluation_gives_the_in_order_metrics(trainer: LocalTrainer) -> None:
    """evaluate() batches by length (less padding); its metrics equal those of batches in input order."""
    from edge_agent.data.readers import ChoiceExample
    from edge_agent.tasks import MetricAccumulator

    texts = ["good", "a long and rambling review that keeps going on about nothing much at all", "bad film",
             "fine", "one of the very best things this year, without any doubt whatsoever", "meh"] * 3
    data = [SentenceExample(t, i % 2) for i, t in enumerate(texts)]
    copa = TaskSpec("copa", "choice", 2)
    choice = [ChoiceExample(p, "cause" if i % 2 else "effect", a, b, i % 2) for i, (p, a, b) in enumerate(
        [("the man slipped", "the floor was wet and very slippery after cleaning", "he sang"),
         ("it rained", "we stayed in", "the sun was out all day long over the fields and hills")] * 4)]
    small = LocalTrainer(trainer.model_dir, max_length=32, batch_size=4, eval_batch_size=4)
    glob = _global_update(small, rank=2, seed=3)
    for spec, exs, head in ((SENT, data, {"weight": torch.randn(2, 32), "bias": torch.randn(2)}),
                            (copa, choice, {"weight": torch.randn(1, 32), "bias": torch.randn(1)})):
        got = small.evaluate(spec, exs, layers=glob, head=head, alpha=16.0)
        acc = MetricAccumulator(spec.task_type)
        batches = small.predict(spec, exs, layers=glob, head=head, alpha=16.0)  # batches in input order
        labels = [torch.tensor([e.label for e in exs[i: i + 4]]) for i in range(0, len(exs), 4)]
        for logits, lab in zip(batches, labels, strict=True):
            acc.add(logits, lab)
        want = acc.result()
        assert got["accuracy"] == want["accuracy"] and got["loss"] == pytest.approx(want["loss"], rel=1e-5)
