"""Generated NER and COPA data: deterministic per seed, round-trips through the real readers, cached once."""

from __future__ import annotations

from pathlib import Path

from edge_agent.data import load_task_dataset
from edge_agent.data.generate import COPA_CHAINS, ensure_generated, generate_copa, generate_ner
from edge_agent.data.readers import NER_LABELS, read_conll, read_copa_jsonl, write_conll, write_copa_jsonl


def test_ner_generation_is_deterministic_per_seed() -> None:
    assert generate_ner(50, seed=3) == generate_ner(50, seed=3)
    assert generate_ner(50, seed=3) != generate_ner(50, seed=4)


def test_ner_tags_are_valid_iob2_with_every_entity_type() -> None:
    examples = generate_ner(300, seed=0)
    types = set()
    for ex in examples:
        assert len(ex.tokens) == len(ex.tags)
        for prev, tag in zip(("O", *ex.tags), ex.tags, strict=False):
            assert tag in NER_LABELS
            if tag.startswith("I-"):
                assert prev[2:] == tag[2:]  # IOB2: an I- continues the same type
            types.add(tag[2:])
    assert {"PER", "ORG", "LOC", "MISC"} <= types


def test_ner_round_trips_through_the_conll_reader(tmp_path: Path) -> None:
    examples = generate_ner(40, seed=1)
    write_conll(tmp_path / "ner.conll", examples)
    assert read_conll(tmp_path / "ner.conll") == examples


def test_copa_generation_is_deterministic_and_round_trips(tmp_path: Path) -> None:
    examples = generate_copa(60, seed=2)
    assert examples == generate_copa(60, seed=2)
    write_copa_jsonl(tmp_path / "copa.jsonl", examples)
    assert read_copa_jsonl(tmp_path / "copa.jsonl") == examples


def test_copa_labels_are_balanced_and_both_questions_occur() -> None:
    examples = generate_copa(1000, seed=0)
    ones = sum(e.label for e in examples)
    assert 400 < ones < 600
    assert {e.question for e in examples} == {"cause", "effect"}


def test_copa_items_with_a_middle_premise_need_the_question_word() -> None:
    # Premise B of a chain A -> B -> C with alternatives A and C: the answer flips with the question.
    middles = {b.replace("{P}", "") for _, b, _ in COPA_CHAINS}
    examples = [e for e in generate_copa(600, seed=0) if any(
        e.premise.endswith(m.strip()) or e.premise == m for m in middles)]
    flipped = {(e.question, e.label) for e in examples}
    assert len(examples) > 50
    assert {("cause", 0), ("cause", 1), ("effect", 0), ("effect", 1)} <= flipped


def test_generated_files_are_written_once_and_read_back(tmp_path: Path) -> None:
    path = ensure_generated("token", tmp_path)
    stamp = path.stat().st_mtime_ns
    assert ensure_generated("token", tmp_path) == path and path.stat().st_mtime_ns == stamp
    ds = load_task_dataset("token", "generated", seed=0, data_dir=tmp_path)  # "default" is WNUT-16 when installed
    assert ds.num_labels == 9
    assert len(ds.train) + len(ds.test) == len(read_conll(path))
    choice = load_task_dataset("choice", "default", seed=0, data_dir=tmp_path)
    assert choice.num_labels == 2 and len(choice.test) == round(0.2 * (len(choice.train) + len(choice.test)))
