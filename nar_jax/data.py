"""P01 NAR: Neighboring Autoregressive Modeling for Efficient Visual Generation — data.

Random-access sources (grain protocol, see :mod:`core.data`) for the class-conditional tasks:

* :func:`digit_images`: scikit-learn's 8x8 digits upsampled bilinearly to ``size`` x ``size``,
  one channel, values in [-1, 1] (10 classes, embedded, fixed seeded train/test split).
* :func:`shape_images`: procedural anti-aliased coloured shapes on a dark background, RGB in
  [-1, 1], class = shape kind (:data:`SHAPE_KINDS`), deterministic from ``(seed, index)``.
* :func:`moving_shape_videos`: ``frames`` x ``size`` x ``size`` RGB clips of one shape moving in
  a straight line (class = shape kind); with the ``tiny`` tokenizer (x2 downsampling) 16x16 frames
  give 4 x 8 x 8 token grids. :func:`token_videos`: procedural token videos directly on a
  ``(t, h, w)`` grid (class = direction of motion), for tests that need no tokenizer.
* :class:`LlamaGenCodes`: LlamaGen's extracted ImageNet codes
  (``autoregressive/train/extract_codes_c2i.py``): ``{code_path}/{dataset}{image_size}_codes/{i}.npy``
  int array ``[1, num_aug, h*w]`` (num_aug = 2: image and its horizontal flip, or 10 with
  ``--ten-crop``) and ``{code_path}/{dataset}{image_size}_labels/{i}.npy`` int ``[1]``.
* :func:`tokenize_source`: encode an image (or video) source with a trained tokenizer into a
  :class:`TokenSource`, batched and jitted once.

Token sources return ``{'tokens': int32 [N], 'label': int32 []}`` with ``N = prod(grid)`` in
raster order (video: frame, row, column); the grid is the source's ``grid`` attribute.

Deviation: LlamaGen's ``CustomDataset`` picks one augmentation at random per read (when the
folder name contains ``flip``) and may mix in ``ten_crop_105`` codes; :class:`LlamaGenCodes` is
deterministic instead: ``augmentations="all"`` makes every (file, augmentation) pair an example,
``"first"`` keeps augmentation 0 (the unflipped image / first crop).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import jax
import numpy as np
from tqdm.auto import tqdm

from core.data import ArraySource, GeneratedSource, digits

SHAPE_KINDS = ("circle", "square", "triangle", "diamond", "cross", "ring")


class TokenSource(ArraySource):
    """An :class:`~core.data.ArraySource` whose ``tokens`` rows are raster-flattened ``grid``s."""

    def __init__(self, arrays, grid: Sequence[int]):
        super().__init__(arrays)
        self.grid = tuple(int(g) for g in grid)
        tokens = self.arrays.get("tokens")
        if tokens is None or tokens.ndim != 2 or tokens.shape[1] != math.prod(self.grid):
            got = None if tokens is None else tokens.shape
            raise ValueError(f"arrays['tokens']: expected [n, {math.prod(self.grid)}] for grid {self.grid}, got {got}")
        if not np.issubdtype(tokens.dtype, np.integer):
            raise TypeError(f"arrays['tokens']: expected integer ids, got {tokens.dtype}")


# --- embedded images ------------------------------------------------------------------------


def _resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of ``[n, h, w]`` to ``[n, size, size]`` (half-pixel centres, edge clamp)."""
    n, h, w = images.shape

    def axis(src: int):
        pos = np.clip((np.arange(size) + 0.5) * src / size - 0.5, 0, src - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, src - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    (r0, r1, fr), (c0, c1, fc) = axis(h), axis(w)
    rows = images[:, r0] * (1 - fr)[None, :, None] + images[:, r1] * fr[None, :, None]
    return rows[:, :, c0] * (1 - fc)[None, None, :] + rows[:, :, c1] * fc[None, None, :]


def digit_images(split: str = "train", size: int = 32, seed: int = 0) -> ArraySource:
    """scikit-learn digits as ``image`` float32 ``[size, size, 1]`` in [-1, 1], ``label`` int32
    (10 classes), upsampled bilinearly from 8x8; the split is :func:`core.data.digits`'."""
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size={size!r}: expected an integer >= 8")
    base = digits(split, seed=seed)
    images = _resize_bilinear(base.arrays["image"], size) * 2.0 - 1.0
    return ArraySource({"image": images[..., None].astype(np.float32), "label": base.arrays["label"]})


def _shape_mask(kind: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test in coordinates normalised by the shape's radius (v grows downwards)."""
    name = SHAPE_KINDS[kind]
    r2 = u * u + v * v
    if name == "circle":
        return r2 <= 1.0
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if name == "triangle":  # apex up
        return (v >= -0.9) & (v <= 0.75) & (np.abs(u) <= (v + 0.9) / 1.65)
    if name == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if name == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95))
    return (r2 <= 1.0) & (r2 >= 0.5**2)  # ring


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    return v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def render_shape(kind: int, center: tuple[float, float], radius: float, color, background,
                 size: int, supersample: int = 4) -> np.ndarray:
    """Anti-aliased ``[size, size, 3]`` image in [0, 1]: shape ``kind`` at ``center`` (x, y in
    pixels) of ``radius`` pixels, coverage from ``supersample``^2 samples per pixel."""
    if not 0 <= kind < len(SHAPE_KINDS):
        raise ValueError(f"kind={kind}: expected an index into SHAPE_KINDS (0..{len(SHAPE_KINDS) - 1})")
    if radius <= 0 or size <= 0 or supersample <= 0:
        raise ValueError(f"radius={radius}, size={size}, supersample={supersample}: expected positive values")
    s = supersample
    coords = (np.arange(size * s) + 0.5) / s
    u = (coords[None, :] - center[0]) / radius
    v = (coords[:, None] - center[1]) / radius
    cover = _shape_mask(kind, u, v).astype(np.float32).reshape(size, s, size, s).mean(axis=(1, 3))
    color, background = np.asarray(color, np.float32), np.asarray(background, np.float32)
    return cover[..., None] * color + (1.0 - cover[..., None]) * background


def _shape_params(rng: np.random.Generator, size: int):
    kind = int(rng.integers(len(SHAPE_KINDS)))
    radius = float(rng.uniform(0.22, 0.38)) * size
    color = _hsv_to_rgb(rng.uniform(), rng.uniform(0.6, 1.0), rng.uniform(0.75, 1.0))
    background = np.full(3, rng.uniform(0.0, 0.2)) + rng.uniform(-0.03, 0.03, 3)
    return kind, radius, color, np.clip(background, 0.0, 1.0)


def shape_images(length: int = 4096, size: int = 32, seed: int = 0) -> GeneratedSource:
    """Procedural coloured shapes: ``image`` float32 ``[size, size, 3]`` in [-1, 1], ``label``
    int32 = index in :data:`SHAPE_KINDS`; example ``i`` depends only on ``(seed, i)``."""
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size={size!r}: expected an integer >= 8")

    def make(rng: np.random.Generator, index: int) -> dict:
        kind, radius, color, background = _shape_params(rng, size)
        center = tuple(rng.uniform(radius, size - radius, 2))
        image = render_shape(kind, center, radius, color, background, size)
        return {"image": (image * 2.0 - 1.0).astype(np.float32), "label": np.int32(kind)}

    return GeneratedSource(length, make, seed)


def moving_shape_videos(length: int = 1024, frames: int = 4, size: int = 16, seed: int = 0) -> GeneratedSource:
    """Clips ``video`` float32 ``[frames, size, size, 3]`` in [-1, 1] of one shape moving at a
    constant velocity (staying inside the frame), ``label`` int32 = shape kind."""
    if not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames={frames!r}: expected a positive integer")
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size={size!r}: expected an integer >= 8")

    def make(rng: np.random.Generator, index: int) -> dict:
        kind, radius, color, background = _shape_params(rng, size)
        radius *= 0.8
        start = rng.uniform(radius, size - radius, 2)
        end = rng.uniform(radius, size - radius, 2)
        steps = np.linspace(0.0, 1.0, frames)[:, None] if frames > 1 else np.zeros((1, 1))
        path = start + steps * (end - start)
        clip = np.stack([render_shape(kind, tuple(p), radius, color, background, size) for p in path])
        return {"video": (clip * 2.0 - 1.0).astype(np.float32), "label": np.int32(kind)}

    return GeneratedSource(length, make, seed)


def token_videos(length: int = 1024, grid: tuple[int, int, int] = (4, 8, 8), vocab_size: int = 16,
                 seed: int = 0) -> GeneratedSource:
    """Procedural token videos on ``grid = (t, h, w)``: background token 0 with a 2x2 block of one
    random token in ``1 .. vocab_size - 1`` moving one cell per frame; ``label`` = direction
    (0 right, 1 left, 2 down, 3 up). ``tokens`` int32 ``[t*h*w]`` raster (frame, row, col)."""
    if len(grid) != 3 or any(not isinstance(g, int) or g <= 0 for g in grid):
        raise ValueError(f"grid={grid!r}: expected three positive ints (t, h, w)")
    t, h, w = grid
    if h < t + 1 or w < t + 1:
        raise ValueError(f"grid={grid!r}: h and w must be >= t + 1 for the block to move t - 1 cells")
    if vocab_size < 2:
        raise ValueError(f"vocab_size={vocab_size}: expected at least 2 (background + object)")
    moves = np.array([[0, 1], [0, -1], [1, 0], [-1, 0]])

    def make(rng: np.random.Generator, index: int) -> dict:
        label = int(rng.integers(4))
        token = int(rng.integers(1, vocab_size))
        dy, dx = moves[label]
        span = t - 1
        y0 = int(rng.integers(max(0, -dy * span), h - 1 - max(0, dy * span)))
        x0 = int(rng.integers(max(0, -dx * span), w - 1 - max(0, dx * span)))
        video = np.zeros(grid, np.int32)
        for f in range(t):
            y, x = y0 + dy * f, x0 + dx * f
            video[f, y:y + 2, x:x + 2] = token
        return {"tokens": video.reshape(-1), "label": np.int32(label)}

    source = GeneratedSource(length, make, seed)
    source.grid = tuple(grid)
    return source


# --- LlamaGen extracted codes ----------------------------------------------------------------

_NPY_NAME = re.compile(r"^(\d+)\.npy$")


def _numbered_files(folder: Path) -> dict[int, Path]:
    files = {}
    for entry in os.scandir(folder):
        match = _NPY_NAME.match(entry.name)
        if match:
            files[int(match.group(1))] = Path(entry.path)
    return files


class LlamaGenCodes:
    """Random-access source over LlamaGen's extracted class-conditional codes.

    Reads ``{code_path}/{dataset}{image_size}_codes/{i}.npy`` (int ``[1, num_aug, h*w]``, also
    accepted: ``[num_aug, h*w]`` or ``[h*w]``) and ``{code_path}/{dataset}{image_size}_labels/{i}.npy``
    (int ``[1]`` or scalar). ``grid = (image_size // downsample,) * 2`` (VQ-16 at 256px: 16x16).
    Examples: ``{'tokens': int32 [h*w] raster, 'label': int32 []}``; with ``augmentations="all"``
    example ``j`` is augmentation ``j % num_aug`` of file ``j // num_aug``. Every file is checked
    when read (shape, and ids below ``codebook_size`` when given).
    """

    def __init__(
        self,
        code_path: str | os.PathLike,
        image_size: int = 256,
        dataset: str = "imagenet",
        downsample: int = 16,
        augmentations: Literal["all", "first"] = "all",
        codebook_size: int | None = None,
    ):
        if augmentations not in ("all", "first"):
            raise ValueError(f"augmentations={augmentations!r}: expected 'all' or 'first'")
        if image_size <= 0 or downsample <= 0 or image_size % downsample:
            raise ValueError(
                f"image_size={image_size}, downsample={downsample}: expected positive sizes with "
                f"image_size a multiple of downsample"
            )
        root = Path(code_path)
        self.code_dir = root / f"{dataset}{image_size}_codes"
        self.label_dir = root / f"{dataset}{image_size}_labels"
        for folder in (self.code_dir, self.label_dir):
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"code_path={str(root)!r}: folder {str(folder)!r} does not exist; expected "
                    f"LlamaGen's layout from `extract_codes_c2i.py --code-path {root} "
                    f"--image-size {image_size}` ({dataset}{image_size}_codes/ and "
                    f"{dataset}{image_size}_labels/ with one <i>.npy per image)"
                )
        codes, labels = _numbered_files(self.code_dir), _numbered_files(self.label_dir)
        if not codes:
            raise ValueError(f"code_path: no <i>.npy code files in {str(self.code_dir)!r}")
        if codes.keys() != labels.keys():
            only_codes = sorted(codes.keys() - labels.keys())[:5]
            only_labels = sorted(labels.keys() - codes.keys())[:5]
            raise ValueError(
                f"code_path: {len(codes)} code files in {str(self.code_dir)!r} but {len(labels)} "
                f"label files in {str(self.label_dir)!r}; they must pair up by index (codes "
                f"without label e.g. {only_codes}, labels without codes e.g. {only_labels})"
            )
        self.ids = sorted(codes)
        self.code_files = [codes[i] for i in self.ids]
        self.label_files = [labels[i] for i in self.ids]
        side = image_size // downsample
        self.grid = (side, side)
        self.codebook_size = codebook_size
        self.num_aug = self._load_codes(0).shape[0] if augmentations == "all" else 1

    def _load_codes(self, file_index: int) -> np.ndarray:
        path = self.code_files[file_index]
        codes = np.load(path)
        n = math.prod(self.grid)
        if codes.ndim == 3 and codes.shape[0] == 1:
            codes = codes[0]
        elif codes.ndim == 1:
            codes = codes[None]
        if codes.ndim != 2 or codes.shape[1] != n:
            raise ValueError(
                f"{str(path)!r}: expected codes of shape [1, num_aug, {n}] (grid {self.grid}), got "
                f"{np.shape(np.load(path, mmap_mode='r'))}; check image_size/downsample"
            )
        if not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"{str(path)!r}: expected integer token ids, got {codes.dtype}")
        if self.codebook_size is not None and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(
                f"{str(path)!r}: token ids in [{codes.min()}, {codes.max()}] outside "
                f"[0, codebook_size={self.codebook_size})"
            )
        return codes

    def _load_label(self, file_index: int) -> np.int32:
        path = self.label_files[file_index]
        label = np.load(path)
        if label.size != 1 or not np.issubdtype(label.dtype, np.integer):
            raise ValueError(f"{str(path)!r}: expected one integer class label, got {label.dtype} {label.shape}")
        return np.int32(label.reshape(()))

    def __len__(self) -> int:
        return len(self.code_files) * self.num_aug

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(f"index={index}: expected 0 <= index < {len(self)}")
        file_index, aug = divmod(int(index), self.num_aug)
        codes = self._load_codes(file_index)
        if aug >= codes.shape[0]:
            raise ValueError(
                f"{str(self.code_files[file_index])!r}: has {codes.shape[0]} augmentations, "
                f"expected {self.num_aug} like the first file"
            )
        return {"tokens": codes[aug].astype(np.int32), "label": self._load_label(file_index)}


def write_llamagen_codes(code_path: str | os.PathLike, tokens: np.ndarray, labels: np.ndarray,
                         image_size: int = 256, dataset: str = "imagenet") -> None:
    """Write ``tokens [n, num_aug, h*w]`` and ``labels [n]`` in LlamaGen's extracted-code layout
    (int64 ``[1, num_aug, h*w]`` codes and ``[1]`` labels, as ``extract_codes_c2i.py`` saves)."""
    tokens, labels = np.asarray(tokens), np.asarray(labels)
    if tokens.ndim != 3 or labels.shape != tokens.shape[:1]:
        raise ValueError(f"tokens, labels: expected [n, num_aug, h*w] and [n], got {tokens.shape}, {labels.shape}")
    code_dir = Path(code_path) / f"{dataset}{image_size}_codes"
    label_dir = Path(code_path) / f"{dataset}{image_size}_labels"
    code_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    for i, (codes, label) in enumerate(zip(tokens, labels)):
        np.save(code_dir / f"{i}.npy", codes[None].astype(np.int64))
        np.save(label_dir / f"{i}.npy", np.array([label], np.int64))


# --- tokenisation -----------------------------------------------------------------------------


def tokenize_source(tokenizer, source, batch_size: int = 256, field: str | None = None,
                    progress: bool = True) -> TokenSource:
    """Encode every example of ``source`` with ``tokenizer`` (a :class:`~nar_jax.tokenizer.VQTokenizer`).

    ``field`` names the pixels: ``'image'`` ``[H, W, C]`` or ``'video'`` ``[T, H, W, C]`` (default:
    whichever the source has); frames are encoded independently. Returns a :class:`TokenSource`
    with ``tokens`` int32 ``[n, prod(grid)]`` and every other field of the source (e.g.
    ``label``). The encoder is jitted once: the last batch is padded to ``batch_size``.
    """
    from flax import nnx

    if batch_size <= 0:
        raise ValueError(f"batch_size={batch_size}: expected a positive integer")
    n = len(source)
    if n == 0:
        raise ValueError("source: expected a non-empty source")
    first = source[0]
    key = field or ("image" if "image" in first else "video" if "video" in first else None)
    if key is None or key not in first:
        raise ValueError(f"field={key!r}: expected a pixel field of the source, got fields {sorted(first)}")
    pixel_shape = np.shape(first[key])
    if len(pixel_shape) not in (3, 4):
        raise ValueError(f"source[{key!r}]: expected [H, W, C] or [T, H, W, C], got {pixel_shape}")
    frames = 1 if len(pixel_shape) == 3 else pixel_shape[0]
    height, width = pixel_shape[-3:-1]
    grid = ((frames,) if len(pixel_shape) == 4 else ()) + tokenizer.grid_shape(height, width)

    graphdef, state = nnx.split(tokenizer)

    @jax.jit
    def encode(state, pixels):
        model = nnx.merge(graphdef, state)
        flat = pixels.reshape(-1, *pixels.shape[-3:])
        return model.encode(flat).reshape(pixels.shape[0], -1)

    tokens, others = [], {k: [] for k in first if k != key}
    for start in tqdm(range(0, n, batch_size), desc="tokenize", disable=not progress):
        rows = [source[i] for i in range(start, min(start + batch_size, n))]
        pixels = np.stack([r[key] for r in rows]).astype(np.float32)
        if pixels.shape[1:] != pixel_shape:
            raise ValueError(f"source[{key!r}]: examples of different shapes {pixel_shape} and {pixels.shape[1:]}")
        if not np.isfinite(pixels).all():
            raise ValueError(f"source[{key!r}]: NaN or infinite pixels in examples {start}..{start + len(rows) - 1}")
        pad = batch_size - len(rows)
        if pad:
            pixels = np.concatenate([pixels, np.repeat(pixels[-1:], pad, axis=0)])
        tokens.append(np.asarray(encode(state, pixels))[: len(rows)])
        for k in others:
            others[k].extend(r[k] for r in rows)
    arrays = {"tokens": np.concatenate(tokens).astype(np.int32)}
    arrays.update({k: np.stack(v) for k, v in others.items()})
    return TokenSource(arrays, grid)
