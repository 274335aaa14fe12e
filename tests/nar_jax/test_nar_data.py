"""NAR data: embedded image/video sets, LlamaGen's extracted-code layout, tokenisation."""

import math

import jax
import numpy as np
import pytest
from flax import nnx

from core import data as core_data
from nar_jax import data as nd
from nar_jax import tokenizer as tok


def test_digit_images_are_upsampled_digits():
    source = nd.digit_images("train", size=32)
    base = core_data.digits("train")
    assert len(source) == len(base)
    example = source[5]
    assert example["image"].shape == (32, 32, 1) and example["image"].dtype == np.float32
    assert example["label"] == base[5]["label"]
    images = source.arrays["image"]
    assert images.min() >= -1.0 and images.max() <= 1.0
    # Bilinear upsampling with half-pixel centres: the same as jax.image.resize("linear").
    reference = jax.image.resize(base.arrays["image"][:16], (16, 32, 32), "linear") * 2 - 1
    np.testing.assert_allclose(images[:16, ..., 0], reference, atol=1e-5)
    with pytest.raises(ValueError, match="size="):
        nd.digit_images(size=4)


def test_shape_images_deterministic_and_labelled():
    a, b = nd.shape_images(64, size=32, seed=1), nd.shape_images(64, size=32, seed=1)
    for i in (0, 17, 63):
        np.testing.assert_array_equal(a[i]["image"], b[i]["image"])
        assert a[i]["label"] == b[i]["label"]
    other = nd.shape_images(64, size=32, seed=2)
    assert not np.array_equal(a[0]["image"], other[0]["image"])
    labels = {int(a[i]["label"]) for i in range(64)}
    assert labels == set(range(len(nd.SHAPE_KINDS)))
    image = a[3]["image"]
    assert image.shape == (32, 32, 3) and image.min() >= -1.0 and image.max() <= 1.0
    batch = next(core_data.batches(a, 8, seed=0))  # grain-compatible
    assert batch["image"].shape == (8, 32, 32, 3) and batch["label"].shape == (8,)


@pytest.mark.parametrize(
    "kind, area",
    [("circle", math.pi), ("square", 1.6**2), ("diamond", 2.0), ("ring", math.pi * (1 - 0.25)),
     ("cross", 2 * 0.6 * 1.9 - 0.6**2), ("triangle", 0.5 * 2.0 * 1.65)],  # base 2, height 1.65
)
def test_rendered_shape_area_matches_geometry(kind, area):
    radius = 9.0
    image = nd.render_shape(nd.SHAPE_KINDS.index(kind), (20.3, 19.7), radius, (1, 1, 1), (0, 0, 0), 40, 8)
    np.testing.assert_allclose(image[..., 0].sum(), area * radius**2, rtol=0.02)


def test_moving_shape_videos_move_at_constant_velocity():
    source = nd.moving_shape_videos(8, frames=4, size=16, seed=0)
    for i in range(3):
        video = source[i]["video"]
        assert video.shape == (4, 16, 16, 3)
        np.testing.assert_array_equal(video, nd.moving_shape_videos(8, 4, 16, 0)[i]["video"])
        weight = np.abs(video - np.median(video, axis=(1, 2), keepdims=True)).sum(-1)
        ys, xs = np.mgrid[:16, :16]
        centroid = np.stack([(weight * xs).sum((1, 2)), (weight * ys).sum((1, 2))], -1) / weight.sum((1, 2))[:, None]
        steps = np.diff(centroid, axis=0)
        np.testing.assert_allclose(steps, np.broadcast_to(steps.mean(0), steps.shape), atol=0.35)


def test_token_videos_move_in_the_labelled_direction():
    source = nd.token_videos(64, grid=(4, 8, 8), vocab_size=16, seed=0)
    assert source.grid == (4, 8, 8)
    moves = {0: (0, 1), 1: (0, -1), 2: (1, 0), 3: (-1, 0)}
    for i in range(64):
        ex = source[i]
        video = ex["tokens"].reshape(4, 8, 8)
        assert ex["tokens"].dtype == np.int32 and video.max() < 16
        token = video.max()
        assert token > 0 and set(np.unique(video)) == {0, token}
        corners = [np.argwhere(frame == token).min(0) for frame in video]
        assert all((frame == token).sum() == 4 for frame in video)
        np.testing.assert_array_equal(np.diff(corners, axis=0), [moves[int(ex["label"])]] * 3)
    np.testing.assert_array_equal(source[5]["tokens"], nd.token_videos(64, (4, 8, 8), 16, 0)[5]["tokens"])
    with pytest.raises(ValueError, match="grid="):
        nd.token_videos(4, grid=(4, 4, 8))


def _write_llamagen(root, codes, labels, image_size=256):
    """Files exactly as LlamaGen's extract_codes_c2i.py saves them (np.save of torch int64)."""
    code_dir, label_dir = root / f"imagenet{image_size}_codes", root / f"imagenet{image_size}_labels"
    code_dir.mkdir(parents=True)
    label_dir.mkdir(parents=True)
    for i, (c, y) in enumerate(zip(codes, labels)):
        np.save(code_dir / f"{i}.npy", c[None].astype(np.int64))  # (1, num_aug, h*w)
        np.save(label_dir / f"{i}.npy", np.array([y], np.int64))  # (1,)
    return code_dir, label_dir


def test_llamagen_codes_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 16384, (12, 2, 256))
    labels = rng.integers(0, 1000, 12)
    _write_llamagen(tmp_path, codes, labels)
    source = nd.LlamaGenCodes(tmp_path, codebook_size=16384)
    assert source.grid == (16, 16) and len(source) == 24
    for j in (0, 1, 7, 23):
        ex = source[j]
        assert ex["tokens"].dtype == np.int32 and ex["tokens"].shape == (256,)
        np.testing.assert_array_equal(ex["tokens"], codes[j // 2, j % 2])
        assert ex["label"] == labels[j // 2] and ex["label"].dtype == np.int32
    first = nd.LlamaGenCodes(tmp_path, augmentations="first")
    assert len(first) == 12
    np.testing.assert_array_equal(first[11]["tokens"], codes[11, 0])
    batch = next(core_data.batches(source, 8, seed=0))
    assert batch["tokens"].shape == (8, 256) and batch["label"].shape == (8,)
    # our writer produces the same layout
    nd.write_llamagen_codes(tmp_path / "ours", codes, labels)
    ours = nd.LlamaGenCodes(tmp_path / "ours")
    np.testing.assert_array_equal(ours[9]["tokens"], source[9]["tokens"])
    np.testing.assert_array_equal(
        np.load(tmp_path / "ours" / "imagenet256_codes" / "3.npy"),
        np.load(tmp_path / "imagenet256_codes" / "3.npy"),
    )
    with pytest.raises(IndexError, match="index=24"):
        source[24]


def test_llamagen_codes_other_sizes(tmp_path):
    codes = np.arange(3 * 1 * 24 * 24).reshape(3, 1, 576) % 100
    _write_llamagen(tmp_path, codes, [1, 2, 3], image_size=384)
    source = nd.LlamaGenCodes(tmp_path, image_size=384)
    assert source.grid == (24, 24) and len(source) == 3
    np.testing.assert_array_equal(source[2]["tokens"], codes[2, 0])


def test_llamagen_codes_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="imagenet256_codes"):
        nd.LlamaGenCodes(tmp_path / "missing")
    codes = np.zeros((4, 2, 256), np.int64)
    code_dir, label_dir = _write_llamagen(tmp_path / "a", codes, [0, 1, 2, 3])
    (label_dir / "3.npy").unlink()
    with pytest.raises(ValueError, match=r"4 code files .* but 3 label files.*without label e\.g\. \[3\]"):
        nd.LlamaGenCodes(tmp_path / "a")
    _write_llamagen(tmp_path / "b", codes, [0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"expected codes of shape \[1, num_aug, 1024\] .* got \(1, 2, 256\)"):
        nd.LlamaGenCodes(tmp_path / "b", downsample=8)
    bad = codes.copy()
    bad[2, 1, 5] = 20000
    _write_llamagen(tmp_path / "c", bad, [0, 1, 2, 3])
    source = nd.LlamaGenCodes(tmp_path / "c", codebook_size=16384)
    with pytest.raises(ValueError, match=r"2\.npy.*outside \[0, codebook_size=16384\)"):
        source[4]
    code_dir, label_dir = _write_llamagen(tmp_path / "d", codes, [0, 1, 2, 3])
    np.save(label_dir / "1.npy", np.array([1, 2]))
    with pytest.raises(ValueError, match="expected one integer class label"):
        nd.LlamaGenCodes(tmp_path / "d")[2]
    (tmp_path / "e" / "imagenet256_codes").mkdir(parents=True)
    (tmp_path / "e" / "imagenet256_labels").mkdir()
    with pytest.raises(ValueError, match="no <i>.npy code files"):
        nd.LlamaGenCodes(tmp_path / "e")
    with pytest.raises(ValueError, match="augmentations="):
        nd.LlamaGenCodes(tmp_path / "a", augmentations="random")


MICRO = tok.TokenizerConfig(channels=(8, 16), codebook_size=32, code_dim=4, norm_groups=4)


def test_tokenize_source_images_and_videos():
    model = tok.VQTokenizer(MICRO, nnx.Rngs(0))
    encode = nnx.jit(lambda m, x: m.encode(x))
    images = nd.shape_images(11, size=16, seed=0)
    tokens = nd.tokenize_source(model, images, batch_size=4, progress=False)  # padded last batch
    assert isinstance(tokens, nd.TokenSource) and tokens.grid == (8, 8) and len(tokens) == 11
    expected = encode(model, np.stack([images[i]["image"] for i in range(11)]))
    np.testing.assert_array_equal(tokens.arrays["tokens"], np.asarray(expected).reshape(11, 64))
    np.testing.assert_array_equal(tokens.arrays["label"], [images[i]["label"] for i in range(11)])

    videos = nd.moving_shape_videos(3, frames=4, size=16, seed=0)
    vtokens = nd.tokenize_source(model, videos, batch_size=2, progress=False)
    assert vtokens.grid == (4, 8, 8) and vtokens.arrays["tokens"].shape == (3, 256)
    frames = encode(model, videos[2]["video"])
    np.testing.assert_array_equal(vtokens[2]["tokens"], np.asarray(frames).reshape(-1))
    with pytest.raises(ValueError, match="field='pixels'"):
        nd.tokenize_source(model, images, field="pixels")
    bad = core_data.ArraySource({"image": np.full((2, 16, 16, 3), np.nan, np.float32)})
    with pytest.raises(ValueError, match="NaN or infinite pixels"):
        nd.tokenize_source(model, bad, progress=False)
    with pytest.raises(ValueError, match=r"arrays\['tokens'\]: expected \[n, 64\]"):
        nd.TokenSource({"tokens": np.zeros((2, 63), np.int32)}, (8, 8))
