"""The tiny random BERT the tests use; it lives in the package because `fedrank fleet run --quick` uses it too."""

from fleet.tiny_model import SPECIALS, WORDS, make_tiny_bert, tiny_vocab

__all__ = ["SPECIALS", "WORDS", "make_tiny_bert", "tiny_vocab"]
