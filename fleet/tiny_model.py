"""A tiny random BERT (hidden 32, 2 layers, 2 heads, intermediate 64) written to a directory: the `--quick` fleet
and the tests use it instead of the real model.

The vocabulary covers every lower-case ASCII letter and digit (also as `##` continuations), so any plain
English word tokenises without [UNK]; a few whole words keep common sentences short.
"""

from __future__ import annotations

import string
from pathlib import Path

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [
    "the", "a", "an", "is", "was", "and", "of", "in", "for", "at", "to", "so", "because", "good", "bad",
    "great", "awful", "movie", "film", "works", "lives", "met", "visited", "john", "smith", "paris", "acme",
]


def tiny_vocab() -> list[str]:
    chars = list(string.ascii_lowercase + string.digits)
    punct = list(".,;:!?'\"-()&/")
    return SPECIALS + punct + chars + [f"##{c}" for c in chars] + WORDS


def make_tiny_bert(path: Path, seed: int = 0) -> Path:
    """Write a random tiny BertModel and its fast WordPiece tokenizer into `path`; return `path`."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab()
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, pad_token_id=0,
    )
    from edge_agent.model import GLOBAL_RNG_LOCK

    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):  # a training thread may be drawing from it
        torch.manual_seed(seed)
        model = BertModel(config)
    model.save_pretrained(path)
    # transformers 5 takes the vocabulary as a dict: `vocab_file=` is silently ignored and every token maps to [UNK].
    BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True).save_pretrained(path)
    return path
