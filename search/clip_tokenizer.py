"""CLIP's byte-pair tokenizer without torch (and, for plain text, without ftfy or regex).

open_clip's ``SimpleTokenizer`` returns a torch tensor, so its module imports
torch (two to three seconds) before a query's dozen tokens are counted.  This
is the same algorithm over the same vocabulary, returning numpy arrays:

- text is cleaned as open_clip cleans it (``ftfy.fix_text``, HTML unescaping
  twice, then whitespace and case as the model's ``clean`` setting says);
- split into words by the same pattern, each word's UTF-8 bytes mapped to
  printable characters and merged pair by pair in rank order;
- wrapped in start/end-of-text tokens and cut to the context length, the
  last kept token replaced by end-of-text, as open_clip truncates.

Plain printable ASCII without ``&`` (most queries) is what ``ftfy`` and the
HTML unescaping leave unchanged and what the ``regex`` module's Unicode
classes match as their ASCII subsets, so it is cleaned and split with the
standard library alone: the two imports (about a quarter of a second) happen
only for text that needs them.  The tests check token-for-token equality with
open_clip on thousands of strings, both paths included.
"""

from __future__ import annotations

import functools
import html
import re
import string
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

#: open_clip's clean settings this tokenizer implements.
CLEANS = ("lower", "whitespace", "canonicalize")
DEFAULT_SPECIAL = ("<start_of_text>", "<end_of_text>")

# Text that ftfy.fix_text and html.unescape return unchanged: printable ASCII
# except '&' (the start of an HTML entity), plus the whitespace that cleaning
# collapses anyway.  ESC (terminal escapes) and other control characters are
# excluded: ftfy removes them.
_PLAIN = re.compile(r"[\x20-\x25\x27-\x7e\t\n\r]*")
_WORDS = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
# The same classes restricted to ASCII, for the standard library's re.
_ASCII_WORDS = r"""'s|'t|'re|'ve|'m|'ll|'d|[a-zA-Z]+|[0-9]|[^\sa-zA-Z0-9]+"""
_PUNCTUATION = str.maketrans("", "", string.punctuation)


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (the vocabulary's alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def read_merges(path: Path) -> list[str]:
    """Merges from a BPE file: a header line, then one ``first second`` pair per line, in rank order."""
    lines = Path(path).read_text(encoding="utf-8").split("\n")[1:]
    return [line for line in lines if line]


def write_merges(merges: Iterable[str]) -> bytes:
    """The BPE file for ``merges`` (``first second`` strings, in rank order)."""
    return ("#version: sightline clip-bpe\n" + "".join(f"{m}\n" for m in merges)).encode("utf-8")


class ClipTokenizer:
    """Tokenize texts for a CLIP text tower; ``__call__`` mirrors open_clip's ``SimpleTokenizer``."""

    def __init__(self, merges: Sequence[str], context_length: int = 77, clean: str = "lower",
                 special_tokens: Sequence[str] = DEFAULT_SPECIAL):
        """``merges``: ``"first second"`` strings in rank order (a BPE file's lines)."""
        if clean not in CLEANS:
            raise ValueError(f"clean must be one of {', '.join(CLEANS)}, not {clean!r}")
        self.byte_encoder = bytes_to_unicode()
        alphabet = list(self.byte_encoder.values())
        # Pieces never contain a space (bytes map to printable characters), so a merge's
        # token is its line without the space, and its line is the key of its rank: no
        # tuples to build for 49k merges (a third of the start-up of a one-query process).
        vocab = alphabet + [c + "</w>" for c in alphabet] + [m.replace(" ", "") for m in merges] + list(special_tokens)
        self.encoder = dict(zip(vocab, range(len(vocab))))
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.special_tokens = tuple(special_tokens)
        self.sot_token_id = self.encoder[self.special_tokens[0]]
        self.eot_token_id = self.encoder[self.special_tokens[1]]
        self.context_length = int(context_length)
        self.clean = clean
        self._cache: dict[str, str] = {t: t for t in self.special_tokens}
        self._special = "|".join(self.special_tokens)
        self._ascii_pattern = re.compile(f"{self._special}|{_ASCII_WORDS}", re.IGNORECASE)

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    @property
    def merges(self) -> list[str]:
        """The merges in rank order, as :func:`write_merges` takes them."""
        return list(self.bpe_ranks)

    @classmethod
    def from_open_clip(cls, tokenizer) -> "ClipTokenizer":
        """The same tokenizer as an open_clip ``SimpleTokenizer`` instance (its own vocabulary)."""
        merges = [" ".join(pair) for pair in sorted(tokenizer.bpe_ranks, key=tokenizer.bpe_ranks.get)]
        specials = [tokenizer.decoder[i] for i in tokenizer.all_special_ids]
        return cls(merges, tokenizer.context_length, clean_name(tokenizer), specials)

    # ------------------------------------------------------------- cleaning
    def clean_text(self, text: str) -> str:
        if _PLAIN.fullmatch(text):
            text = text.strip()  # what ftfy and unescaping leave of plain text
        else:
            text = _fix_text(text)
            text = html.unescape(html.unescape(text)).strip()
        if self.clean == "canonicalize":
            text = text.replace("_", " ").translate(_PUNCTUATION).lower()
            return " ".join(text.split()).strip()
        text = " ".join(text.split()).strip()
        return text.lower() if self.clean == "lower" else text

    def _words(self, text: str) -> list[str]:
        if text.isascii():
            return self._ascii_pattern.findall(text)
        return _unicode_pattern(self._special).findall(text)

    # ------------------------------------------------------------------ BPE
    def bpe(self, token: str) -> str:
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        if len(word) == 1:
            return word[0]
        ranks = self.bpe_ranks
        while len(word) > 1:
            # The lowest-ranked adjacent pair; ranks are unique, so there are no ties.
            best, best_rank = None, None
            for pair in zip(word, word[1:]):
                rank = ranks.get(f"{pair[0]} {pair[1]}")
                if rank is not None and (best_rank is None or rank < best_rank):
                    best, best_rank = pair, rank
            if best is None:
                break
            word = _merge(word, best)
        merged = " ".join(word)
        self._cache[token] = merged
        return merged

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no start/end tokens, no truncation)."""
        ids = []
        for word in self._words(self.clean_text(text)):
            word = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self.bpe(word).split(" "))
        return ids

    def __call__(self, texts: "str | Sequence[str]", context_length: Optional[int] = None) -> np.ndarray:
        """int64 ``(n, context_length)``: start, tokens, end, zero padding (open_clip's layout)."""
        if isinstance(texts, str):
            texts = [texts]
        length = context_length or self.context_length
        out = np.zeros((len(texts), length), np.int64)
        for row, tokens in enumerate(self.token_lists(texts, length)):
            out[row, :len(tokens)] = tokens
        return out

    def token_lists(self, texts: Sequence[str], context_length: Optional[int] = None) -> list[list[int]]:
        """Each text's tokens with start and end, cut as open_clip cuts them (unpadded)."""
        length = context_length or self.context_length
        lists = []
        for text in texts:
            tokens = [self.sot_token_id] + self.encode(text) + [self.eot_token_id]
            if len(tokens) > length:
                tokens = tokens[:length]
                tokens[-1] = self.eot_token_id
            lists.append(tokens)
        return lists


def _merge(word: tuple, pair: tuple) -> tuple:
    first, second = pair
    out, i, n = [], 0, len(word)
    while i < n:
        if i < n - 1 and word[i] == first and word[i + 1] == second:
            out.append(first + second)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def clean_name(tokenizer) -> str:
    """Which of :data:`CLEANS` an open_clip ``SimpleTokenizer`` uses; ValueError for anything else."""
    if getattr(tokenizer, "reduction_fn", None) is not None:
        raise ValueError("the tokenizer reduces long texts (random or syntactic masking), which is not supported")
    name = getattr(getattr(tokenizer, "clean_fn", None), "__name__", "")
    for clean in CLEANS:
        if name == f"_clean_{clean}":
            return clean
    raise ValueError(f"unknown text cleaning {name!r}")


def _fix_text(text: str) -> str:
    import ftfy  # only for text outside plain ASCII

    return ftfy.fix_text(text)


@functools.lru_cache(maxsize=4)
def _unicode_pattern(special: str):
    import regex  # \p{L} and \p{N}: the standard library's re has no Unicode property classes

    return regex.compile(f"{special}|{_WORDS}", regex.IGNORECASE)
