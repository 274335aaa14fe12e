"""Local English text and its tokenizer: the Python standard library's docstrings.

The corpus is every docstring (module, class, function) of the standard library's ``.py``
sources, read with :mod:`ast` in a fixed order (sorted relative paths, then ``ast.walk`` order),
cleaned with :func:`inspect.cleandoc`, deduplicated keeping the first occurrence. Test suites,
``site-packages`` and a few non-English or generated trees are skipped. The text depends on the
Python version only. A byte-level BPE tokenizer is trained on it with the ``tokenizers`` library,
and :func:`lm_windows` cuts the token stream into fixed-length training rows.
"""

from __future__ import annotations

import ast
import inspect
import sysconfig
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

END_OF_TEXT = "<|endoftext|>"
_SKIP_DIRS = {"test", "tests", "site-packages", "idle_test", "lib2to3", "__pycache__", "encodings"}


def stdlib_root() -> Path:
    """The directory of the running interpreter's standard library sources."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | str | None = None, max_files: int | None = None) -> list[Path]:
    """The ``.py`` files under ``root`` (default: the stdlib), sorted, tests skipped."""
    root = stdlib_root() if root is None else Path(root)
    if not root.is_dir():
        raise ValueError(f"root={str(root)!r}: expected an existing directory of Python sources")
    if max_files is not None and max_files <= 0:
        raise ValueError(f"max_files={max_files}: expected a positive int or None")
    files = sorted(
        (p for p in root.rglob("*.py")
         if not _SKIP_DIRS.intersection(p.relative_to(root).parts[:-1])),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    return files[:max_files] if max_files is not None else files


def docstrings(files: Iterable[Path | str], min_chars: int = 40) -> list[str]:
    """The cleaned, deduplicated docstrings of ``files`` (at least ``min_chars`` long), in order."""
    seen: set[str] = set()
    out: list[str] = []
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    for path in files:
        try:
            source = Path(path).read_text(encoding="utf-8")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SyntaxWarning)
                tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, kinds):
                continue
            doc = ast.get_docstring(node, clean=False)
            if not doc:
                continue
            doc = inspect.cleandoc(doc)
            if len(doc) >= min_chars and doc not in seen:
                seen.add(doc)
                out.append(doc)
    return out


def stdlib_docstrings(max_files: int | None = None, min_chars: int = 40) -> list[str]:
    """The standard library's docstrings (``max_files`` limits the corpus for quick runs)."""
    return docstrings(stdlib_files(max_files=max_files), min_chars=min_chars)


def train_bpe_tokenizer(texts: Sequence[str], vocab_size: int, min_frequency: int = 2):
    """A byte-level BPE ``tokenizers.Tokenizer`` trained on ``texts``, with ``<|endoftext|>``.

    Byte-level, so any string encodes (no unknown token); decoding inverts encoding.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if not texts:
        raise ValueError("texts: expected a non-empty sequence of strings")
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + 1:
        raise ValueError(
            f"vocab_size={vocab_size}: expected at least {len(alphabet) + 1} (256 bytes + "
            f"{END_OF_TEXT})"
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def token_stream(tokenizer, texts: Sequence[str]) -> np.ndarray:
    """All ``texts`` encoded and joined, each followed by ``<|endoftext|>``: int32 [n_tokens]."""
    eot = tokenizer.token_to_id(END_OF_TEXT)
    if eot is None:
        raise ValueError(f"tokenizer: expected the special token {END_OF_TEXT!r} in its vocabulary")
    pieces = []
    for encoding in tokenizer.encode_batch(list(texts)):
        pieces.append(np.asarray(encoding.ids, np.int32))
        pieces.append(np.asarray([eot], np.int32))
    if not pieces:
        raise ValueError("texts: expected at least one string")
    return np.concatenate(pieces)


def lm_windows(stream: np.ndarray, length: int) -> np.ndarray:
    """Non-overlapping rows of ``length`` tokens from a 1-D stream (the tail is dropped)."""
    stream = np.asarray(stream)
    if stream.ndim != 1:
        raise ValueError(f"stream: expected a 1-D token array, got shape {stream.shape}")
    if length < 2 or stream.size < length:
        raise ValueError(
            f"length={length}: expected 2 <= length <= len(stream)={stream.size}"
        )
    n = stream.size // length
    return stream[: n * length].reshape(n, length)


def stdlib_lm_rows(vocab_size: int, length: int, max_files: int | None = None):
    """``(tokenizer, rows)``: a BPE tokenizer of ``vocab_size`` trained on the stdlib docstrings
    and the corpus cut into int32 rows ``[n, length]`` (``length = n_ctx + 1`` for
    :func:`interp.models.gpt.next_token_loss`)."""
    texts = stdlib_docstrings(max_files=max_files)
    tokenizer = train_bpe_tokenizer(texts, vocab_size)
    return tokenizer, lm_windows(token_stream(tokenizer, texts), length)
