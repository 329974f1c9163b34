"""Readers (and writers) for the real dataset formats: GLUE SST-2 TSV, CoNLL-2003 columns, COPA JSONL.

Examples are frozen dataclasses with tuple fields, so a list of them hashes: the trainer caches encodings by it.
A malformed file raises `DataFormatError` naming the file, the line and the reason.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fedrank.state import atomic_write_bytes

log = logging.getLogger(__name__)

# CoNLL-2003 entity types in IOB2; the index is the class id of the token head.
NER_LABELS: tuple[str, ...] = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
COPA_QUESTIONS = ("cause", "effect")


class DataFormatError(ValueError):
    """A data file that cannot be read: the message names file, line and reason."""

    def __init__(self, path: Path | str, line: int | None, reason: str) -> None:
        self.path, self.line, self.reason = Path(path), line, reason
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class SentenceExample:
    text: str
    label: int


@dataclass(frozen=True)
class TokenExample:
    tokens: tuple[str, ...]
    tags: tuple[str, ...]  # IOB2, one per token


@dataclass(frozen=True)
class ChoiceExample:
    premise: str
    question: str  # "cause" | "effect"
    choice1: str
    choice2: str
    label: int  # 0 -> choice1, 1 -> choice2


Example = SentenceExample | TokenExample | ChoiceExample


def _fail(path: Path, line: int | None, reason: str) -> DataFormatError:
    log.warning("bad data file %s line %s: %s", path, line, reason)
    return DataFormatError(path, line, reason)


def read_sst2_tsv(path: Path) -> list[SentenceExample]:
    """GLUE SST-2 `train.tsv`/`dev.tsv`: a header `sentence\\tlabel`, then one labelled sentence per line."""
    path = Path(path)
    with path.open(encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, None)
        if header is None or "sentence" not in header or "label" not in header:
            raise _fail(path, 1, f"expected a header with 'sentence' and 'label', got {header}")
        si, li = header.index("sentence"), header.index("label")
        out: list[SentenceExample] = []
        for lineno, row in enumerate(rows, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise _fail(path, lineno, f"{len(row)} columns, header has {len(header)}")
            if row[li] not in ("0", "1"):
                raise _fail(path, lineno, f"label {row[li]!r} is not 0 or 1")
            out.append(SentenceExample(text=row[si].strip(), label=int(row[li])))
    return out


def iob1_to_iob2(tags: Iterable[str]) -> tuple[str, ...]:
    """Make every entity start with B-: an I-X that follows O or another type begins a new entity.

    Idempotent on IOB2. (CoNLL-2003's original files are IOB1, where B- only separates adjacent same-type entities.)
    """
    out: list[str] = []
    prev = "O"
    for tag in tags:
        if tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
        prev = tag
    return tuple(out)


def read_conll(path: Path) -> list[TokenExample]:
    """CoNLL-2003 columns: token in column 0, NER tag in the last; blank lines end sentences; -DOCSTART- skipped."""
    path = Path(path)
    out: list[TokenExample] = []
    tokens: list[str] = []
    tags: list[str] = []

    def flush() -> None:
        if tokens:
            out.append(TokenExample(tokens=tuple(tokens), tags=iob1_to_iob2(tags)))
        tokens.clear()
        tags.clear()

    with path.open(encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            cols = raw.split()
            if not cols:
                flush()
                continue
            if cols[0] == "-DOCSTART-":
                flush()
                continue
            if len(cols) < 2:
                raise _fail(path, lineno, "needs a token and a tag")
            tag = cols[-1]
            if tag != "O" and (tag[:2] not in ("B-", "I-") or "B-" + tag[2:] not in NER_LABELS):
                raise _fail(path, lineno, f"unknown NER tag {tag!r}")
            tokens.append(cols[0])
            tags.append(tag)
    flush()
    return out


def read_copa_jsonl(path: Path) -> list[ChoiceExample]:
    """COPA JSONL (SuperGLUE layout): premise, choice1, choice2, question cause|effect, label 0|1 per line."""
    path = Path(path)
    out: list[ChoiceExample] = []
    with path.open(encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
                ex = ChoiceExample(
                    premise=str(obj["premise"]), question=str(obj["question"]), choice1=str(obj["choice1"]),
                    choice2=str(obj["choice2"]), label=int(obj["label"]),
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise _fail(path, lineno, f"not a COPA record ({exc!r})") from exc
            if ex.question not in COPA_QUESTIONS or ex.label not in (0, 1):
                raise _fail(path, lineno, f"question {ex.question!r} / label {ex.label} out of range")
            out.append(ex)
    return out


def write_conll(path: Path, examples: Iterable[TokenExample]) -> None:
    """CoNLL-2003 layout (token, POS, chunk, NER; POS/chunk unknown as `-X-`/`_`), one -DOCSTART- header."""
    lines = ["-DOCSTART- -X- -X- O", ""]
    for ex in examples:
        lines += [f"{tok} -X- _ {tag}" for tok, tag in zip(ex.tokens, ex.tags, strict=True)]
        lines.append("")
    atomic_write_bytes(Path(path), ("\n".join(lines) + "\n").encode(), mode=0o644)  # shared cache data


def write_copa_jsonl(path: Path, examples: Iterable[ChoiceExample]) -> None:
    """One COPA record per line, with SuperGLUE's field names and an `idx`."""
    rows = [
        json.dumps({"premise": e.premise, "choice1": e.choice1, "choice2": e.choice2, "question": e.question,
                    "label": e.label, "idx": i})
        for i, e in enumerate(examples)
    ]
    atomic_write_bytes(Path(path), ("\n".join(rows) + "\n").encode(), mode=0o644)
