"""Task heads, encodings and metrics, checked by hand on the tiny tokenizer."""

from __future__ import annotations

import pytest
import torch
from tiny_model import make_tiny_bert
from transformers import PreTrainedTokenizerBase

from edge_agent.data.readers import ChoiceExample, SentenceExample, TokenExample
from edge_agent.model import BaseModelCache
from edge_agent.tasks import (
    IGNORE,
    MetricAccumulator,
    TaskSpec,
    align_labels,
    encode,
    entity_f1,
    entity_spans,
    make_head,
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerBase:
    return BaseModelCache.get(make_tiny_bert(tmp_path_factory.mktemp("tiny_bert")))[1]


def test_align_labels_marks_first_piece_only_by_hand() -> None:
    # [CLS] john x ##y ##z paris [SEP] -> word ids None 0 1 1 1 2 None
    assert align_labels([None, 0, 1, 1, 1, 2, None], [1, 0, 5]) == [IGNORE, 1, 0, IGNORE, IGNORE, 5, IGNORE]


def test_token_encoding_aligns_ner_tags_to_word_pieces(tokenizer: PreTrainedTokenizerBase) -> None:
    ex = TokenExample(("John", "xyz", "Paris"), ("B-PER", "O", "B-LOC"))
    enc = encode(TaskSpec("ner", "token", 9), [ex], tokenizer, max_length=16)
    pieces = tokenizer.convert_ids_to_tokens(enc.input_ids[0][: int(enc.attention_mask[0].sum())])
    assert pieces == ["[CLS]", "john", "x", "##y", "##z", "paris", "[SEP]"]
    # NER_LABELS: O=0, B-PER=1, B-LOC=5; pad positions are ignored too
    assert enc.labels[0][:7].tolist() == [IGNORE, 1, 0, IGNORE, IGNORE, 5, IGNORE]
    assert (enc.labels[0][7:] == IGNORE).all()


def test_choice_encoding_pairs_premise_and_question_word_with_each_choice(tokenizer: PreTrainedTokenizerBase) -> None:
    ex = ChoiceExample("The film was bad.", "effect", "John left.", "Paris is good.", 1)
    enc = encode(TaskSpec("copa", "choice", 2), [ex], tokenizer, max_length=24)
    assert enc.input_ids.shape == (1, 2, 24) and enc.labels.tolist() == [1]
    first = tokenizer.decode(enc.input_ids[0, 0], skip_special_tokens=True)
    second = tokenizer.decode(enc.input_ids[0, 1], skip_special_tokens=True)
    assert first.startswith("the film was bad so john left")
    assert second.startswith("the film was bad so paris is good")
    assert enc.token_type_ids[0, 0].max() == 1  # the alternative is segment B


def test_batch_trims_padding_to_the_longest_row(tokenizer: PreTrainedTokenizerBase) -> None:
    exs = [SentenceExample("good", 1), SentenceExample("the film was bad", 0)]
    enc = encode(TaskSpec("s", "sentence", 2), exs, tokenizer, max_length=32)
    batch = enc.batch(torch.tensor([0]))
    assert batch["input_ids"].shape == (1, 3)  # [CLS] good [SEP]
    assert enc.batch(torch.tensor([0, 1]))["input_ids"].shape == (2, 6)


def test_wrong_example_type_is_a_type_error(tokenizer: PreTrainedTokenizerBase) -> None:
    with pytest.raises(TypeError, match="TokenExample"):
        encode(TaskSpec("ner", "token", 9), [SentenceExample("x", 0)], tokenizer, 8)


def test_entity_spans_by_hand() -> None:
    tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-ORG", "I-ORG"]
    # a stray I-ORG (after B-LOC) opens an ORG entity, as conlleval does
    assert entity_spans(tags) == {("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 5), ("ORG", 5, 7)}


def test_entity_f1_by_hand() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "B-MISC"]]
    # gold spans: PER(0,2) LOC(3,4) ORG(0,1) = 3; predicted: PER(0,1) LOC(3,4) ORG(0,1) MISC(1,2) = 4; correct 2
    p, r, f1 = entity_f1(gold, pred)
    assert p == pytest.approx(2 / 4) and r == pytest.approx(2 / 3)
    assert f1 == pytest.approx(2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3))
    assert entity_f1([["O"]], [["O"]]) == (1.0, 1.0, 1.0)
    assert entity_f1([["B-PER"]], [["O"]])[2] == 0.0


def test_metric_accumulator_counts_only_labelled_positions() -> None:
    acc = MetricAccumulator("token")
    # one sentence, 4 positions: [CLS](ignored) B-PER O(ignored piece) B-LOC; predictions B-PER, O at the LOC
    logits = torch.full((1, 4, 9), -5.0)
    logits[0, 1, 1] = 5.0  # B-PER
    logits[0, 3, 0] = 5.0  # O where gold is B-LOC
    labels = torch.tensor([[IGNORE, 1, IGNORE, 5]])
    acc.add(logits, labels)
    out = acc.result()
    assert out["accuracy"] == pytest.approx(1 / 2)
    assert out["entity_precision"] == 1.0 and out["entity_recall"] == pytest.approx(1 / 2)


def test_sentence_accuracy_by_hand() -> None:
    acc = MetricAccumulator("sentence")
    acc.add(torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]]), torch.tensor([0, 1, 1]))
    assert acc.result()["accuracy"] == pytest.approx(2 / 3)
    assert "entity_f1" not in acc.result()


def test_head_is_linear_on_hidden_with_wire_names_and_checks_shapes() -> None:
    spec = TaskSpec("copa", "choice", 2)
    head = make_head(spec, 32)
    assert {k: tuple(v.shape) for k, v in head.state_dict().items()} == {"weight": (1, 32), "bias": (1,)}
    assert torch.equal(make_head(spec, 32).weight, head.weight)  # seeded: every vehicle starts alike
    again = make_head(spec, 32, {"weight": torch.ones(1, 32), "bias": torch.zeros(1)})
    assert again.weight.sum().item() == 32
    with pytest.raises(ValueError, match="do not match"):
        make_head(TaskSpec("ner", "token", 9), 32, head.state_dict())
