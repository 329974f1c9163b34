"""Readers of the real formats on small hand-written files (SST-2 TSV, CoNLL-2003 incl. IOB1, COPA JSONL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.data import load_task_dataset
from edge_agent.data.readers import (
    ChoiceExample,
    DataFormatError,
    SentenceExample,
    TokenExample,
    iob1_to_iob2,
    read_conll,
    read_copa_jsonl,
    read_sst2_tsv,
)


def test_sst2_tsv_reads_sentences_and_labels_after_the_header(tmp_path: Path) -> None:
    f = tmp_path / "train.tsv"
    f.write_text("sentence\tlabel\nhide new secretions \t0\na gorgeous film \t1\n", encoding="utf-8")
    assert read_sst2_tsv(f) == [SentenceExample("hide new secretions", 0), SentenceExample("a gorgeous film", 1)]


def test_sst2_tsv_with_bad_label_names_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "dev.tsv"
    f.write_text("sentence\tlabel\nfine\t1\nbroken\tyes\n", encoding="utf-8")
    with pytest.raises(DataFormatError) as err:
        read_sst2_tsv(f)
    assert err.value.line == 3 and str(f) in str(err.value)


def test_sst2_tsv_without_header_is_rejected(tmp_path: Path) -> None:
    f = tmp_path / "x.tsv"
    f.write_text("a film\t1\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="header"):
        read_sst2_tsv(f)


CONLL_IOB1 = """-DOCSTART- -X- -X- O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O
. . O O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER
in IN I-PP O
New NNP I-NP I-LOC
York NNP I-NP I-LOC
Paris NNP I-NP B-LOC
"""


def test_conll_reads_sentences_and_converts_iob1_to_iob2(tmp_path: Path) -> None:
    f = tmp_path / "train.txt"
    f.write_text(CONLL_IOB1, encoding="utf-8")
    got = read_conll(f)
    assert got == [
        TokenExample(("EU", "rejects", "German", "call", "."), ("B-ORG", "O", "B-MISC", "O", "O")),
        TokenExample(("Peter", "Blackburn", "in", "New", "York", "Paris"),
                     ("B-PER", "I-PER", "O", "B-LOC", "I-LOC", "B-LOC")),
    ]


def test_iob1_to_iob2_by_hand() -> None:
    # I-X after O or another type opens an entity; I-X after X continues; B-X is kept.
    assert iob1_to_iob2(["I-PER", "I-PER", "I-ORG", "O", "I-LOC", "B-LOC", "I-LOC"]) == (
        "B-PER", "I-PER", "B-ORG", "O", "B-LOC", "B-LOC", "I-LOC")
    iob2 = ("B-PER", "I-PER", "O", "B-MISC")
    assert iob1_to_iob2(iob2) == iob2


def test_conll_with_unknown_tag_is_rejected(tmp_path: Path) -> None:
    f = tmp_path / "bad.txt"
    f.write_text("Paris NNP I-NP B-CITY\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="B-CITY") as err:
        read_conll(f)
    assert err.value.line == 1


COPA = (
    '{"premise": "My body cast a shadow over the grass.", "choice1": "The sun was rising.", '
    '"choice2": "The grass was cut.", "question": "cause", "label": 0, "idx": 0}\n'
    '{"premise": "The woman tolerated her friend.", "choice1": "The woman knew her friend.", '
    '"choice2": "The friend left.", "question": "effect", "label": 1, "idx": 1}\n'
)


def test_copa_jsonl_reads_records(tmp_path: Path) -> None:
    f = tmp_path / "val.jsonl"
    f.write_text(COPA, encoding="utf-8")
    got = read_copa_jsonl(f)
    assert got[0] == ChoiceExample("My body cast a shadow over the grass.", "cause", "The sun was rising.",
                                   "The grass was cut.", 0)
    assert got[1].question == "effect" and got[1].label == 1


@pytest.mark.parametrize("line", ['{"premise": "x"}', "not json", '{"premise": "a", "choice1": "b", "choice2": "c", '
                                  '"question": "why", "label": 0}'])
def test_copa_jsonl_bad_record_names_the_line(tmp_path: Path, line: str) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text(COPA + line + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError) as err:
        read_copa_jsonl(f)
    assert err.value.line == 3


def test_dataset_directory_in_glue_layout_uses_its_own_split(tmp_path: Path) -> None:
    (tmp_path / "train.tsv").write_text("sentence\tlabel\na\t1\nb\t0\nc\t1\n", encoding="utf-8")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nd\t0\n", encoding="utf-8")
    ds = load_task_dataset("sentence", tmp_path)
    assert [e.text for e in ds.train] == ["a", "b", "c"] and [e.text for e in ds.test] == ["d"]
    assert ds.num_labels == 2


def test_single_file_source_is_split_by_seed(tmp_path: Path) -> None:
    f = tmp_path / "copa.jsonl"
    f.write_text(COPA * 5, encoding="utf-8")
    a, b = load_task_dataset("choice", f, seed=1), load_task_dataset("choice", f, seed=1)
    assert (len(a.train), len(a.test)) == (8, 2)
    assert a.train == b.train and a.test == b.test


def test_missing_source_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_task_dataset("token", tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="train"):
        load_task_dataset("token", tmp_path)  # a directory without train/test files
