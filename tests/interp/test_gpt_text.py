"""Local English corpus (stdlib docstrings) and its byte-level BPE tokenizer."""

import numpy as np
import pytest

pytest.importorskip("tokenizers")

from interp import text  # noqa: E402

MODULE = '''"""Module docstring that is long enough to keep around."""


class Widget:
    """A widget: a small thing that does one job and does it well."""

    def spin(self):
        """Spin the widget round and round until it is dizzy."""

    def short(self):
        """Too short."""


def twin():
    """A widget: a small thing that does one job and does it well."""
'''


def test_docstrings_in_order_deduplicated_tests_skipped(tmp_path):
    (tmp_path / "b_mod.py").write_text(MODULE)
    (tmp_path / "a_broken.py").write_text("def f(:\n")
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "c_mod.py").write_text('"""A docstring in a test directory, skipped."""')
    files = text.stdlib_files(tmp_path)
    assert [f.name for f in files] == ["a_broken.py", "b_mod.py"]
    docs = text.docstrings(files, min_chars=20)
    assert docs == [
        "Module docstring that is long enough to keep around.",
        "A widget: a small thing that does one job and does it well.",
        "Spin the widget round and round until it is dizzy.",
    ]


def test_stdlib_corpus_is_deterministic_english():
    first = text.stdlib_docstrings(max_files=20)
    assert first == text.stdlib_docstrings(max_files=20)
    joined = " ".join(first)
    assert len(first) > 50 and " the " in joined and "Return" in joined


def test_bpe_tokenizer_round_trip_and_stream():
    docs = text.stdlib_docstrings(max_files=20)
    tokenizer = text.train_bpe_tokenizer(docs, vocab_size=400)
    assert tokenizer.get_vocab_size() <= 400
    unseen = "Zürich naïve 東京 — return the value.\n\tindented"
    assert tokenizer.decode(tokenizer.encode(unseen).ids) == unseen
    stream = text.token_stream(tokenizer, docs[:3])
    eot = tokenizer.token_to_id(text.END_OF_TEXT)
    assert (stream == eot).sum() == 3 and stream[-1] == eot
    assert len(tokenizer.encode(docs[0]).ids) < len(docs[0].encode())  # it compresses
    rows = text.lm_windows(stream, 7)
    assert rows.shape == (stream.size // 7, 7)
    np.testing.assert_array_equal(rows.reshape(-1), stream[: rows.size])


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="root"):
        text.stdlib_files(tmp_path / "missing")
    with pytest.raises(ValueError, match="vocab_size"):
        text.train_bpe_tokenizer(["some text"], vocab_size=100)
    with pytest.raises(ValueError, match="texts"):
        text.train_bpe_tokenizer([], vocab_size=300)
    with pytest.raises(ValueError, match="length"):
        text.lm_windows(np.arange(5), 6)
    with pytest.raises(ValueError, match="1-D"):
        text.lm_windows(np.zeros((2, 5)), 2)
