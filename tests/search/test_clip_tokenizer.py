"""The torch-free tokenizer gives open_clip's tokens, token for token."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from sightline.search.clip_tokenizer import ClipTokenizer, read_merges, write_merges
from tests.helpers import text_corpus as corpus

@pytest.fixture(scope="module")
def open_clip_tokenizer():
    import open_clip

    return open_clip.tokenizer.SimpleTokenizer()


@pytest.fixture(scope="module")
def ours(open_clip_tokenizer, tmp_path_factory):
    """Ours, built from the merges file it writes (as the export does), not from open_clip's object."""
    path = tmp_path_factory.mktemp("bpe") / "merges.txt"
    path.write_bytes(write_merges(ClipTokenizer.from_open_clip(open_clip_tokenizer).merges))
    return ClipTokenizer(read_merges(path))


def test_the_corpus_covers_both_paths_and_truncation(open_clip_tokenizer):
    texts = corpus()
    plain = [t for t in texts if t.isascii() and "&" not in t and "\x1b" not in t]
    assert 1000 < len(plain) < len(texts) - 300
    long = [t for t in texts if len(open_clip_tokenizer.encode(t)) > 75]
    assert len(long) > 100


def test_same_tokens_as_open_clip(open_clip_tokenizer, ours):
    texts = corpus()
    expected = open_clip_tokenizer(texts).numpy()
    got = ours(texts)
    assert got.dtype == np.int64 and got.shape == expected.shape == (len(texts), 77)
    mismatched = [texts[i] for i in np.flatnonzero((got != expected).any(axis=1))]
    assert not mismatched, f"{len(mismatched)} texts differ, e.g. {mismatched[:5]!r}"


def test_vocabulary_and_ids(open_clip_tokenizer, ours):
    assert ours.encoder == open_clip_tokenizer.encoder
    assert (ours.sot_token_id, ours.eot_token_id) == (open_clip_tokenizer.sot_token_id, open_clip_tokenizer.eot_token_id)
    assert ours.vocab_size == 49408


@pytest.mark.parametrize("clean", ["whitespace", "canonicalize"])
def test_other_cleaning_modes(clean):
    import open_clip

    reference = open_clip.tokenizer.SimpleTokenizer(clean=clean, context_length=32)
    mine = ClipTokenizer.from_open_clip(reference)
    assert mine.clean == clean and mine.context_length == 32
    texts = corpus(600, seed=1)
    assert np.array_equal(mine(texts), reference(texts).numpy())


def test_truncation_keeps_end_of_text_last(ours):
    lists = ours.token_lists(["word " * 200, "short"])
    assert len(lists[0]) == 77 and lists[0][-1] == ours.eot_token_id and lists[0][0] == ours.sot_token_id
    assert lists[1] == [ours.sot_token_id, *ours.encode("short"), ours.eot_token_id]


def test_unsupported_tokenizer_settings_are_refused():
    import open_clip

    with pytest.raises(ValueError, match="reduces long texts"):
        ClipTokenizer.from_open_clip(open_clip.tokenizer.SimpleTokenizer(reduction_mask="random"))
    with pytest.raises(ValueError, match="clean must be"):
        ClipTokenizer([], clean="shout")


def test_plain_text_needs_neither_ftfy_nor_regex(tmp_path, open_clip_tokenizer):
    """The imports that cost a quarter of a second happen only for text that needs them."""
    path = tmp_path / "merges.txt"
    path.write_bytes(write_merges(ClipTokenizer.from_open_clip(open_clip_tokenizer).merges))
    code = (
        "import sys; from sightline.search.clip_tokenizer import ClipTokenizer, read_merges; "
        f"t = ClipTokenizer(read_merges({str(path)!r})); t(['A photo of 2 dogs, running!']); "
        "print('ftfy' in sys.modules, 'regex' in sys.modules, 'torch' in sys.modules); "
        "t(['café &amp; crème']); print('ftfy' in sys.modules, 'regex' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "False", "True", "True"]
