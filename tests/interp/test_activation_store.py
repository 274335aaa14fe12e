"""Activation store: rows equal direct captures, resume is byte-identical, grain serves them."""

import json

import core  # noqa: F401  (before building models)
import core.data
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from interp import activation_store
from interp.activation_store import MANIFEST, ActivationStore, harvest
from interp.capture import run_with_hooks
from interp.models import gpt, minilm

RESID = "blocks.0.hook_resid_post"
HOOK_Z = "blocks.1.attn.hook_z"
N_BATCHES, BATCH, POS = 6, 4, 16  # 384 rows per capture
SHARD_ROWS = 50  # batches of 64 rows straddle shard boundaries


@pytest.fixture(scope="module")
def model():
    return gpt.GPT(gpt.preset("tiny"), nnx.Rngs(0))


@pytest.fixture(scope="module")
def tokens():
    return np.random.default_rng(0).integers(0, 512, (N_BATCHES, BATCH, POS), dtype=np.int32)


@pytest.fixture(scope="module")
def full_store(model, tokens, tmp_path_factory):
    """An uninterrupted harvest of both captures (the reference for resume tests)."""
    return harvest(model, tokens, tmp_path_factory.mktemp("full"), (RESID, HOOK_Z),
                   shard_rows=SHARD_ROWS, description={"corpus": "random"}, progress=False)


def stored_rows(store, capture):
    return np.concatenate(list(store.chunks(capture)))


def direct_rows(model, tokens, capture, *args):
    out = [run_with_hooks(model, t, *args, capture=(capture,))[1][capture] for t in tokens]
    return np.concatenate([np.asarray(x).reshape(x.shape[0], x.shape[1], -1) for x in out])


def store_files(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_rows_equal_direct_capture_and_manifest(model, tokens, tmp_path):
    traces = activation_store._forward._cache_size()
    store = harvest(model, tokens, tmp_path, (HOOK_Z, RESID), shard_rows=SHARD_ROWS,
                    description={"corpus": "random"}, progress=False)
    assert activation_store._forward._cache_size() == traces + 1  # one compile for 6 batches
    for capture, d in ((RESID, 64), (HOOK_Z, 4 * 16)):
        want = direct_rows(model, tokens, capture).reshape(-1, d)
        np.testing.assert_allclose(stored_rows(store, capture), want, rtol=1e-5, atol=1e-6)
        assert store.d(capture) == d
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    rows = [s["rows"] for s in manifest["shards"]]
    assert rows == [SHARD_ROWS] * 7 + [384 - 7 * SHARD_ROWS]
    assert manifest["rows"] == store.rows == 384 and manifest["finished"]
    assert manifest["batches_consumed"] == N_BATCHES and manifest["dtype"] == "float32"
    assert manifest["model"]["config"]["d_model"] == 64
    assert manifest["description"] == {"corpus": "random"}
    assert store.captures == (HOOK_Z, RESID)


def test_mask_drop_first_and_bfloat16(model, tokens, tmp_path):
    rng = np.random.default_rng(1)
    masks = (np.arange(POS) < rng.integers(2, POS + 1, (N_BATCHES, BATCH, 1))).astype(np.int32)
    corpus = [(t, m) for t, m in zip(tokens, masks)]
    store = harvest(model, corpus, tmp_path, RESID, shard_rows=SHARD_ROWS, dtype="bfloat16",
                    drop_first=True, progress=False)
    keep = masks[:, :, 1:].astype(bool)
    want = direct_rows(model, tokens, RESID)[:, 1:][keep.reshape(-1, POS - 1)]
    assert store.rows == keep.sum() == len(want)
    assert np.load(tmp_path / store.manifest["shards"][0]["files"][RESID]).dtype == np.uint16
    got = stored_rows(store, RESID)
    np.testing.assert_allclose(got, want.astype(jnp.bfloat16).astype(np.float32),
                               rtol=1e-2, atol=1e-3)
    np.testing.assert_array_equal(got, got.astype(jnp.bfloat16).astype(np.float32))


def test_minilm_gets_the_mask_and_padding_is_dropped(tmp_path):
    config = minilm.MiniLMConfig(vocab_size=100, d_model=32, n_layers=2, n_heads=2, d_head=16,
                                 d_mlp=64, n_ctx=16)
    model = minilm.MiniLM(config, nnx.Rngs(0))
    rng = np.random.default_rng(2)
    ids = rng.integers(1, 100, (3, 4, 8), dtype=np.int32)
    masks = (np.arange(8) < rng.integers(1, 9, (3, 4, 1))).astype(np.int32)
    corpus = [{"input_ids": i * m, "attention_mask": m} for i, m in zip(ids, masks)]
    store = harvest(model, corpus, tmp_path, "blocks.1.hook_resid_post", shard_rows=20,
                    progress=False)
    want = np.concatenate([
        np.asarray(run_with_hooks(model, b["input_ids"], b["attention_mask"],
                                  capture=("blocks.1.hook_resid_post",))[1]
                   ["blocks.1.hook_resid_post"])[b["attention_mask"].astype(bool)]
        for b in corpus])
    np.testing.assert_allclose(stored_rows(store, None), want, rtol=1e-5, atol=1e-5)


class Killed(Exception):
    pass


def killed_after(tokens, n):
    for i, batch in enumerate(tokens):
        if i == n:
            raise Killed
        yield batch


def test_resume_after_interruption_is_byte_identical(model, tokens, full_store, tmp_path):
    kwargs = dict(shard_rows=SHARD_ROWS, description={"corpus": "random"}, progress=False)
    with pytest.raises(Killed):
        harvest(model, killed_after(tokens, 3), tmp_path, (RESID, HOOK_Z), **kwargs)
    partial = ActivationStore(tmp_path)
    assert not partial.finished and partial.rows == 3 * SHARD_ROWS  # 192 rows -> 3 full shards
    consumed = partial.manifest["batches_consumed"], partial.manifest["rows_into_next_batch"]
    assert consumed == (2, 22)
    # what a kill mid-write leaves: a temp file and a shard the manifest does not list yet
    (tmp_path / ".tmp-0123-shard-00003.blocks.0.hook_resid_post.npy").write_bytes(b"half")
    np.save(tmp_path / "shard-00003.blocks.0.hook_resid_post.npy", np.zeros((3, 64), np.float32))
    source = ActivationStore(tmp_path).source(RESID)
    assert len(source) == 150
    np.testing.assert_array_equal(source[149]["activations"], stored_rows(full_store, RESID)[149])

    harvest(model, tokens, tmp_path, (RESID, HOOK_Z), **kwargs)
    assert store_files(tmp_path) == store_files(full_store.directory)


def test_extending_a_finished_store_refills_its_last_shard(model, tokens, full_store, tmp_path):
    kwargs = dict(shard_rows=SHARD_ROWS, description={"corpus": "random"}, progress=False)
    short = harvest(model, tokens, tmp_path, (RESID, HOOK_Z), max_batches=3, **kwargs)
    assert short.finished and [s["rows"] for s in short.manifest["shards"]][-1] == 42
    # a kill between refilling the last shard (now 50 rows) and updating the manifest (42 rows)
    before = stored_rows(short, HOOK_Z)
    for name in short.manifest["shards"][-1]["files"].values():
        (tmp_path / name).write_bytes((full_store.directory / name).read_bytes())
    np.testing.assert_array_equal(stored_rows(ActivationStore(tmp_path), HOOK_Z), before)
    harvest(model, tokens, tmp_path, (RESID, HOOK_Z), **kwargs)
    assert store_files(tmp_path) == store_files(full_store.directory)
    harvest(model, tokens, tmp_path, (RESID, HOOK_Z), **kwargs)  # nothing left to do
    assert store_files(tmp_path) == store_files(full_store.directory)


def test_batches_cover_every_row_once_per_epoch(full_store):
    source = full_store.source(HOOK_Z)
    everything = stored_rows(full_store, HOOK_Z)
    iterator = core.data.batches(source, 32, seed=3, num_epochs=2)
    epochs = [[next(iterator)["activations"] for _ in range(12)] for _ in range(2)]
    with pytest.raises(StopIteration):
        next(iterator)
    def sort_rows(rows):
        return rows[np.lexsort(rows.T[::-1])]

    for epoch in epochs:
        rows = np.concatenate(epoch)
        assert rows.shape == everything.shape and rows.dtype == np.float32
        np.testing.assert_array_equal(sort_rows(rows), sort_rows(everything))
    first, second = (np.concatenate(e) for e in epochs)
    assert not np.array_equal(first, everything) and not np.array_equal(first, second)

    iterator = core.data.batches(source, 32, seed=3, num_epochs=2)
    for _ in range(5):
        next(iterator)
    state = iterator.get_state()
    resumed = core.data.batches(source, 32, seed=3, num_epochs=2)
    resumed.set_state(state)
    np.testing.assert_array_equal(next(resumed)["activations"], epochs[0][5])


def test_mean_norm_and_input_scale(full_store):
    rows = stored_rows(full_store, RESID).astype(np.float64)
    mean_norm = np.linalg.norm(rows, axis=1).mean()
    np.testing.assert_allclose(full_store.mean_norm(RESID), mean_norm, rtol=1e-10)
    scale = full_store.input_scale(RESID)
    np.testing.assert_allclose(np.linalg.norm(scale * rows, axis=1).mean(), 8.0, rtol=1e-10)


def test_errors(model, tokens, full_store, tmp_path):
    kwargs = dict(shard_rows=SHARD_ROWS, progress=False)
    with pytest.raises(ValueError, match="unknown capture point"):
        harvest(model, tokens, tmp_path / "a", "blocks.7.hook_resid_post", **kwargs)
    with pytest.raises(ValueError, match="no per-token rows"):
        harvest(model, tokens, tmp_path / "a", "blocks.0.attn.hook_pattern", **kwargs)
    with pytest.raises(ValueError, match="dtype="):
        harvest(model, tokens, tmp_path / "a", RESID, dtype="float16", **kwargs)
    with pytest.raises(ValueError, match=r"batches\[1\]: shape"):
        harvest(model, [tokens[0], tokens[1][:, :8]], tmp_path / "a", RESID, **kwargs)
    with pytest.raises(ValueError, match="at least one batch"):
        harvest(model, [], tmp_path / "a", RESID, **kwargs)
    with pytest.raises(TypeError, match="model"):
        harvest(object(), tokens, tmp_path / "a", RESID, **kwargs)

    different = dict(shard_rows=SHARD_ROWS, description={"corpus": "random"}, progress=False)
    with pytest.raises(ValueError, match="different configuration.*dtype"):
        harvest(model, tokens, full_store.directory, (RESID, HOOK_Z), dtype="bfloat16",
                **different)
    other = gpt.GPT(gpt.preset("tiny"), nnx.Rngs(1))
    with pytest.raises(ValueError, match="model parameters differ"):
        harvest(other, tokens, full_store.directory, (RESID, HOOK_Z), **different)
    with pytest.raises(ValueError, match="more than the 2 given"):
        harvest(model, tokens[:2], full_store.directory, (RESID, HOOK_Z), **different)

    broken = gpt.GPT(gpt.preset("tiny"), nnx.Rngs(0))
    broken.W_E[...] = broken.W_E[...].at[7].set(jnp.nan)
    nan_tokens = tokens.copy()
    nan_tokens[2, 0, 0] = 7
    with pytest.raises(ValueError, match=r"batches\[2\]: non-finite"):
        harvest(broken, nan_tokens, tmp_path / "nan", RESID, **kwargs)

    with pytest.raises(FileNotFoundError, match="no such directory"):
        ActivationStore(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        ActivationStore(tmp_path / "empty")
    with pytest.raises(ValueError, match="name one"):
        full_store.source()
    with pytest.raises(ValueError, match="not in this store"):
        full_store.source("blocks.1.hook_resid_post")
    with pytest.raises(IndexError):
        full_store.source(RESID)[384]
