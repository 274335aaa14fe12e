"""Orders, ring tables, step counts and masks of P01 NAR and its baselines."""

import math

import numpy as np
import pytest

from nar_jax import order


@pytest.mark.parametrize("shape", [(16, 16), (3, 5), (6, 2), (1, 4), (4, 16, 16), (2, 3, 4)])
def test_ring_sizes_cover_grid_once(shape):
    sizes = order.ring_sizes(shape)
    assert sizes.sum() == math.prod(shape)
    assert len(sizes) == order.num_rings(shape)
    perm = order.ring_major_permutation(shape)
    assert np.array_equal(np.sort(perm), np.arange(math.prod(shape)))  # every token once
    rings = order.ring_index(shape)[perm]
    assert np.all(np.diff(rings) >= 0)
    inv = order.inverse_permutation(perm)
    assert np.array_equal(perm[inv], np.arange(perm.size))
    plan = order.nar_plan(shape)
    targets = np.concatenate([[plan.prefill_target]] + [
        ph.target_raster[ph.target_raster < plan.num_tokens] for ph in plan.phases
    ])
    assert np.array_equal(np.sort(targets), np.arange(plan.num_tokens))


def test_ring_sizes_image_profile():
    assert order.ring_sizes((4, 4)).tolist() == [1, 2, 3, 4, 3, 2, 1]
    assert order.ring_sizes((2, 4)).tolist() == [1, 2, 2, 2, 1]


def test_within_ring_order_is_by_row():
    perm = order.ring_major_permutation((3, 3))
    coords = order.grid_coords((3, 3))[perm]
    assert coords.tolist()[:6] == [[0, 0], [0, 1], [1, 0], [0, 2], [1, 1], [2, 0]]


@pytest.mark.parametrize(
    "kind, shape, k, expected",
    [
        ("nar", (16, 16), None, 31),
        ("nar", (32, 32), None, 63),
        ("nar", (24, 24), None, 47),
        ("nar", (4, 16, 16), None, 34),
        ("nar", (8, 20), None, 27),
        ("raster", (16, 16), None, 256),
        ("raster", (8, 20), None, 160),
        ("par", (16, 16), 4, 67),
        ("par", (16, 16), 16, 31),
        ("par", (8, 20), 4, 43),
    ],
)
def test_step_counts(kind, shape, k, expected):
    assert order.decode_steps(kind, shape, k) == expected
    if len(shape) == 2 or kind == "nar":
        assert order.make_plan(kind, shape, k=k).num_steps == expected


@pytest.mark.parametrize("bucket", [1, 3, 4])
def test_bucketed_nar_plan_keeps_steps_and_targets(bucket):
    flat, narrow = order.nar_plan((6, 9)), order.nar_plan((6, 9), bucket=bucket)
    assert narrow.num_steps == flat.num_steps == 14
    stack = lambda p, f: np.concatenate([  # noqa: E731
        np.pad(getattr(ph, f), [(0, 0), (0, 6 - getattr(ph, f).shape[1])] + [(0, 0)] * (
            getattr(ph, f).ndim - 2), constant_values=-7) for ph in p.phases])
    for field in ("feed_raster", "target_raster", "source"):
        a, b = stack(flat, field), stack(narrow, field)
        keep = b != -7
        assert np.array_equal(a[keep], b[keep])
    widths = [ph.feed_raster.shape[1] for ph in narrow.phases]
    assert all(w % bucket == 0 or w == 6 for w in widths)
    with pytest.raises(ValueError, match="bucket"):
        order.nar_plan((3, 3), bucket=0)


def test_nar_plan_one_prefill_plus_rings_minus_one():
    plan = order.nar_plan((5, 3))
    assert len(plan.phases) == 1
    assert plan.phases[0].steps == order.num_rings((5, 3)) - 1
    assert plan.phases[0].feed_raster.shape[1] == order.ring_sizes((5, 3)).max()
    real = (~plan.phases[0].feed_pad).sum(1)
    assert np.array_equal(real, order.ring_sizes((5, 3))[:-1])


@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (2, 3, 3)])
def test_nar_mask_rule(shape):
    cond = 2
    mask = order.nar_attention_mask(shape, cond)
    rings = order.ring_index(shape)
    n = math.prod(shape)
    img = mask[cond:, cond:]
    assert np.array_equal(img, rings[None, :] <= rings[:, None])
    assert mask[cond:, :cond].all()  # every image token sees the condition
    assert not mask[:cond, cond:].any()  # the condition sees no image token
    assert np.array_equal(mask[:cond, :cond], np.tril(np.ones((cond, cond), bool)))
    # explicit pair: (1, 0) sees (0, 1) (same ring), not (1, 1)
    w = shape[-1]
    if len(shape) == 2:
        assert img[1 * w + 0, 0 * w + 1] and not img[1 * w + 0, 1 * w + 1]
    assert img.sum() < n * n


def test_ring_major_mask_is_block_lower_triangular():
    plan = order.nar_plan((3, 4))
    mask = plan.mask()[1:, 1:]
    sizes = order.ring_sizes((3, 4))
    ends = np.cumsum(sizes)
    starts = ends - sizes
    for s, e in zip(starts, ends):
        assert mask[s:e, :e].all() and not mask[s:e, e:].any()


def test_raster_mask_is_causal():
    mask = order.raster_attention_mask(6, 1)
    assert np.array_equal(mask, np.tril(np.ones((7, 7), bool)))
    plan = order.raster_plan((2, 3))
    assert np.array_equal(plan.mask(), mask)


def test_par_order_and_mask():
    gen = order.par_order((4, 4), 4)
    # region first tokens (0,0), (0,2), (2,0), (2,2), then (0,1) of every region ...
    assert gen[:8].tolist() == [0, 2, 8, 10, 1, 3, 9, 11]
    assert np.array_equal(np.sort(gen), np.arange(16))
    plan = order.par_plan((4, 4), 4)
    assert plan.length == 1 + 16 + 3 and plan.num_transition == 3
    mask = plan.mask()
    # sequential phase is causal; a parallel group is bidirectional and sees all earlier steps
    assert not mask[1, 2] and mask[2, 1]
    group = slice(8, 12)
    assert mask[group, group].all() and mask[group, :8].all() and not mask[group, 12:].any()
    # each parallel step predicts one token per region, from the same region's slot
    ph = plan.phases[1]
    regions = lambda r: (r // 4 // 2) * 2 + (r % 4) // 2  # noqa: E731
    for row in ph.target_raster:
        assert [regions(r) for r in row] == [0, 1, 2, 3]


def test_nar_head_sources_are_left_and_upper_neighbours():
    shape = (3, 4)
    plan = order.nar_plan(shape)
    ph = plan.phases[0]
    coords = order.grid_coords(shape)
    for c in range(ph.steps):
        fed = ph.feed_raster[c]
        for t, r in enumerate(ph.target_raster[c]):
            if r == plan.num_tokens:
                assert (ph.source[c, t] == -1).all()
                continue
            i, j = coords[r]
            right, down = ph.source[c, t]
            assert (right >= 0) == (j > 0) and (down >= 0) == (i > 0)
            if right >= 0:
                assert fed[right] == i * 4 + j - 1
            if down >= 0:
                assert fed[down] == (i - 1) * 4 + j


@pytest.mark.parametrize(
    "call",
    [
        lambda: order.ring_index((0, 3)),
        lambda: order.ring_index((2,)),
        lambda: order.decode_steps("zigzag", (4, 4)),
        lambda: order.decode_steps("par", (6, 6), 4 + 1),
        lambda: order.par_plan((6, 6), 16),
        lambda: order.inverse_permutation([0, 0, 1]),
        lambda: order.nar_plan((2, 2), cond_len=0),
    ],
)
def test_bad_input_raises(call):
    with pytest.raises(ValueError):
        call()
