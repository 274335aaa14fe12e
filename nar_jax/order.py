"""P01 NAR: Neighboring Autoregressive Modeling for Efficient Visual Generation — orders and masks.

Generation orders of a token grid and everything a static-shape decoder needs, as numpy tables:

* NAR ("next-neighbour"): ring(p) = sum of coordinates (i + j for images, t + i + j for video).
  Rings are decoded one per step; inside a ring tokens are ordered by raster index (= by row for
  images, by frame then row for video, as the official code does). Training uses the
  proximity-aware mask ``ring(key) <= ring(query)`` over the raster sequence.
* Raster (LlamaGen): one token per step, causal mask.
* PAR-kX (Wang et al. 2024): the grid is cut into k = s x s equal regions; the first token of each
  region is generated one at a time (k steps), then one token of every region per step (N/k - 1
  steps), k - 1 learned transition tokens bridge the two phases, attention is causal across steps
  and bidirectional inside a step.

Every order is described by one :class:`SequencePlan`: the teacher-forced input sequence
(condition, then tokens in generation order), a step id per position (attention allowed iff
``step[key] <= step[query]``), and the decode schedule as phases of equal-width padded steps
(contiguous cache blocks), each target merged from one or more (slot, head) sources.

Deviations: PAR's transition tokens get no rotary position (identity rotation) and the condition
tokens likewise; PAR's region split needs k to be a square and both sides divisible by sqrt(k).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

ORDERS = ("nar", "raster", "par")


def check_grid(shape) -> tuple[int, ...]:
    """Validate a grid shape ``(h, w)`` or ``(t, h, w)`` of positive ints."""
    if not isinstance(shape, (tuple, list)) or len(shape) not in (2, 3):
        raise ValueError(f"shape={shape!r}: expected (h, w) or (t, h, w)")
    if not all(isinstance(s, (int, np.integer)) and s > 0 for s in shape):
        raise ValueError(f"shape={shape!r}: expected positive integer sizes")
    return tuple(int(s) for s in shape)


def grid_coords(shape) -> np.ndarray:
    """Coordinates ``[N, ndim]`` of every token in raster order."""
    shape = check_grid(shape)
    return np.stack(np.unravel_index(np.arange(math.prod(shape)), shape), axis=-1)


def ring_index(shape) -> np.ndarray:
    """Ring (Manhattan distance from the origin) of every token, in raster order: ``[N]``."""
    return grid_coords(shape).sum(-1)


def num_rings(shape) -> int:
    shape = check_grid(shape)
    return sum(shape) - len(shape) + 1


def ring_sizes(shape) -> np.ndarray:
    """Tokens per ring: 1, 2, ..., min side, ..., 2, 1 for an image grid."""
    return np.bincount(ring_index(shape), minlength=num_rings(shape))


def ring_major_permutation(shape) -> np.ndarray:
    """``perm[i]`` = raster index of the i-th token in ring-major (ring, then raster) order."""
    return np.argsort(ring_index(shape), kind="stable")


def inverse_permutation(perm) -> np.ndarray:
    perm = np.asarray(perm)
    if perm.ndim != 1 or not np.array_equal(np.sort(perm), np.arange(perm.size)):
        raise ValueError(f"perm: expected a permutation of 0..n-1, got {perm!r}")
    inv = np.empty_like(perm)
    inv[perm] = np.arange(perm.size)
    return inv


def _check_par_k(shape, k: int) -> int:
    shape = check_grid(shape)
    if len(shape) != 2:
        raise ValueError(f"shape={shape}: PAR orders are defined for image grids (h, w)")
    s = math.isqrt(k) if isinstance(k, (int, np.integer)) and k > 0 else 0
    if s * s != k or shape[0] % s or shape[1] % s:
        raise ValueError(
            f"k={k!r}: PAR needs a square number of regions whose side divides h and w={shape}"
        )
    return s


def par_order(shape, k: int) -> np.ndarray:
    """Raster indices in PAR-kX generation order: region first tokens, then group by group."""
    s = _check_par_k(shape, k)
    h, w = shape
    rh, rw = h // s, w // s
    order = []
    for p in range(rh * rw):  # position inside a region, region-raster
        for r in range(k):  # region, raster over the s x s regions
            i = (r // s) * rh + p // rw
            j = (r % s) * rw + p % rw
            order.append(i * w + j)
    return np.asarray(order)


def decode_steps(order: str, shape, k: int | None = None) -> int:
    """Model forward passes to generate a grid: raster N, PAR-kX k + N/k - 1, NAR rings."""
    shape = check_grid(shape)
    n = math.prod(shape)
    if order == "raster":
        return n
    if order == "par":
        _check_par_k(shape, k)
        return k + n // k - 1
    if order == "nar":
        return num_rings(shape)
    raise ValueError(f"order={order!r}: expected one of {ORDERS}")


def nar_attention_mask(shape, cond_len: int = 1) -> np.ndarray:
    """Proximity-aware mask ``[L, L]`` over ``[cond..., x_0 ... x_{N-1}]`` in raster order."""
    step = np.concatenate([np.arange(-cond_len, 0), ring_index(shape)])
    return step[None, :] <= step[:, None]


def raster_attention_mask(n: int, cond_len: int = 1) -> np.ndarray:
    """Causal mask ``[L, L]`` of LlamaGen over ``[cond..., x_0 ... x_{N-1}]``."""
    if n <= 0 or cond_len <= 0:
        raise ValueError(f"n={n}, cond_len={cond_len}: expected positive sizes")
    return np.tril(np.ones((cond_len + n, cond_len + n), dtype=bool))


@dataclasses.dataclass(frozen=True, eq=False)
class Phase:
    """Decode steps of equal width ``S`` slots and ``T`` targets (padded, static shapes).

    Per step ``s``: the fed block starts at cache position ``offset[s]``; slot ``j`` feeds image
    token ``feed_raster[s, j]`` (or transition token ``feed_transition[s, j]`` when >= 0) at
    rotary position ``feed_rope[s, j]`` / absolute position ``feed_abs[s, j]``; queries see keys
    ``< key_end[s]``. Target ``t`` is raster token ``target_raster[s, t]`` (``N`` = padding) and
    its logits are the mean over heads ``d`` of the output of slot ``source[s, t, d]`` (-1 = none).
    """

    offset: np.ndarray
    key_end: np.ndarray
    feed_raster: np.ndarray
    feed_transition: np.ndarray
    feed_rope: np.ndarray
    feed_abs: np.ndarray
    target_raster: np.ndarray
    source: np.ndarray

    @property
    def steps(self) -> int:
        return int(self.offset.shape[0])

    @property
    def feed_pad(self) -> np.ndarray:
        """``[steps, S]`` True where a fed slot is padding (beyond the step's tokens)."""
        width = self.feed_raster.shape[1]
        return np.arange(width)[None, :] >= (self.key_end - self.offset)[:, None]


@dataclasses.dataclass(frozen=True, eq=False)
class SequencePlan:
    """Teacher-forced sequence, mask and decode schedule of one order on one grid.

    Sequence positions ``[0, cond_len)`` hold the condition. ``feed_raster[p]`` is the image token
    at position p (-1 otherwise), ``feed_transition[p]`` the PAR transition token (-1 otherwise),
    ``step[p]`` its step id (mask: ``step[key] <= step[query]``), ``rope[p]`` its (row, col) for
    2D RoPE ((-1, -1) = no rotation), ``abs_pos[p]`` its index in a learned position table
    (condition i -> i, raster token r -> cond_len + r). Heads: head d predicts the neighbour along
    grid axis ``ndim - 1 - d``; single-head orders predict from head 0 (the per-position targets
    are :func:`nar_jax.loss.plan_targets`).
    """

    order: str
    shape: tuple[int, ...]
    cond_len: int
    num_heads: int
    feed_raster: np.ndarray
    feed_transition: np.ndarray
    step: np.ndarray
    rope: np.ndarray
    abs_pos: np.ndarray
    prefill_target: int
    phases: tuple[Phase, ...]
    num_transition: int = 0

    @property
    def length(self) -> int:
        return int(self.step.shape[0])

    @property
    def num_tokens(self) -> int:
        return math.prod(self.shape)

    @property
    def cache_length(self) -> int:
        """Cache rows: the sequence plus room for the widest padded block write."""
        return self.length + max((p.feed_raster.shape[1] for p in self.phases), default=0)

    @property
    def num_steps(self) -> int:
        return 1 + sum(p.steps for p in self.phases)

    def mask(self) -> np.ndarray:
        return self.step[None, :] <= self.step[:, None]


def _positions(shape, cond_len, feed_raster):
    coords = grid_coords(shape)
    rope = np.full((feed_raster.size, 2), -1, dtype=np.int32)
    img = feed_raster >= 0
    if len(shape) == 2:
        rope[img] = coords[feed_raster[img]]
    abs_pos = np.where(img, cond_len + feed_raster, np.arange(feed_raster.size))
    abs_pos[cond_len:][~img[cond_len:]] = cond_len + math.prod(shape)  # transition: spare row
    return rope, abs_pos.astype(np.int32)


def nar_plan(shape, cond_len: int = 1, bucket: int | None = None) -> SequencePlan:
    """NAR in ring-major layout: one step per ring, merged dimension-oriented heads.

    ``bucket=None``: one scan whose steps all have R = max ring size slots (fed ring and
    targets padded to R). ``bucket=b``: a step's width is max(fed ring, next ring) rounded up
    to a multiple of b; consecutive steps of equal width share a scan, so less padded work is
    done (still rings - 1 decode steps, several scans in one compiled function).
    """
    shape = check_grid(shape)
    if cond_len <= 0:
        raise ValueError(f"cond_len={cond_len}: expected a positive number of condition tokens")
    if bucket is not None and (not isinstance(bucket, (int, np.integer)) or bucket <= 0):
        raise ValueError(f"bucket={bucket!r}: expected None or a positive integer")
    n, ndim = math.prod(shape), len(shape)
    perm = ring_major_permutation(shape)
    rings = ring_index(shape)
    sizes = ring_sizes(shape)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    big = int(sizes.max())
    feed_raster = np.concatenate([np.full(cond_len, -1), perm])
    step = np.concatenate([np.arange(-cond_len, 0), rings[perm]])
    rope, abs_pos = _positions(shape, cond_len, feed_raster)
    coords = grid_coords(shape)
    slot_of = np.empty(n, dtype=np.int64)  # raster -> slot inside its ring
    slot_of[perm] = np.arange(n) - offsets[rings[perm]]

    n_dec = len(sizes) - 1
    f_raster = np.zeros((n_dec, big), np.int32)
    f_rope = np.full((n_dec, big, 2), -1, np.int32)
    f_abs = np.zeros((n_dec, big), np.int32)
    t_raster = np.full((n_dec, big), n, np.int32)
    source = np.full((n_dec, big, ndim), -1, np.int32)
    for c in range(n_dec):
        pos = cond_len + offsets[c] + np.arange(sizes[c])
        f_raster[c, : sizes[c]] = feed_raster[pos]
        f_rope[c, : sizes[c]] = rope[pos]
        f_abs[c, : sizes[c]] = abs_pos[pos]
        targets = perm[offsets[c + 1] : offsets[c + 1] + sizes[c + 1]]
        t_raster[c, : sizes[c + 1]] = targets
        for t, r in enumerate(targets):
            for d in range(ndim):
                axis = ndim - 1 - d
                if coords[r, axis] > 0:
                    src = coords[r].copy()
                    src[axis] -= 1
                    source[c, t, d] = slot_of[np.ravel_multi_index(src, shape)]
    width = lambda m: big if bucket is None else min(big, -(-m // bucket) * bucket)  # noqa: E731
    keys = [width(max(sizes[c], sizes[c + 1])) for c in range(n_dec)]
    phases = []
    start = 0
    for c in range(1, n_dec + 1):
        if c == n_dec or keys[c] != keys[start]:
            rows, w = slice(start, c), keys[start]
            phases.append(Phase(
                offset=(cond_len + offsets[rows]).astype(np.int32),
                key_end=(cond_len + offsets[rows] + sizes[rows]).astype(np.int32),
                feed_raster=f_raster[rows, :w],
                feed_transition=np.full((c - start, w), -1, np.int32),
                feed_rope=f_rope[rows, :w],
                feed_abs=f_abs[rows, :w],
                target_raster=t_raster[rows, :w],
                source=source[rows, :w],
            ))
            start = c
    return SequencePlan(
        "nar", shape, cond_len, ndim, feed_raster, np.full(feed_raster.size, -1),
        step, rope, abs_pos, 0, tuple(phases),
    )


def _single_head_plan(order, shape, cond_len, gen, groups, n_transition):
    """Shared builder of raster and PAR: ``groups`` = list of (fed positions, predicted rasters)."""
    n = math.prod(shape)
    feed_raster = np.full(cond_len + n + n_transition, -1)
    feed_transition = np.full_like(feed_raster, -1)
    step = np.empty_like(feed_raster)
    step[:cond_len] = np.arange(-cond_len, 0)
    phases_raw: dict[int, list] = {}
    for s, (items, targets) in enumerate(groups):
        for pos, kind, value in items:
            (feed_raster if kind == "token" else feed_transition)[pos] = value
            step[pos] = s
        if targets is not None:
            phases_raw.setdefault(len(items), []).append((items, targets))
    rope, abs_pos = _positions(shape, cond_len, feed_raster)
    phases = []
    for width, steps in phases_raw.items():
        k = len(steps)
        off = np.array([it[0][0] for it, _ in steps], np.int32)
        sl = off[:, None] + np.arange(width)
        phases.append(
            Phase(
                offset=off,
                key_end=off + width,
                feed_raster=np.maximum(feed_raster[sl], 0).astype(np.int32),
                feed_transition=feed_transition[sl].astype(np.int32),
                feed_rope=rope[sl],
                feed_abs=abs_pos[sl],
                target_raster=np.array([t for _, t in steps], np.int32).reshape(k, width),
                source=np.broadcast_to(np.arange(width, dtype=np.int32)[None, :, None],
                                       (k, width, 1)).copy(),
            )
        )
    return SequencePlan(
        order, tuple(shape), cond_len, 1, feed_raster, feed_transition, step, rope, abs_pos,
        int(gen[0]), tuple(phases), n_transition,
    )


def raster_plan(shape, cond_len: int = 1) -> SequencePlan:
    """LlamaGen raster order: x_p predicts x_{p+1}; N - 1 one-token decode steps after prefill."""
    shape = check_grid(shape)
    if cond_len <= 0:
        raise ValueError(f"cond_len={cond_len}: expected a positive number of condition tokens")
    n = math.prod(shape)
    groups = [([(cond_len + p, "token", p)], [p + 1] if p + 1 < n else None) for p in range(n)]
    return _single_head_plan("raster", shape, cond_len, np.arange(n), groups, 0)


def par_plan(shape, k: int, cond_len: int = 1) -> SequencePlan:
    """PAR-kX: k sequential region-first tokens, k - 1 transition tokens, then groups of k."""
    _check_par_k(shape, k)
    shape = check_grid(shape)
    if cond_len <= 0:
        raise ValueError(f"cond_len={cond_len}: expected a positive number of condition tokens")
    n = math.prod(shape)
    gen = par_order(shape, k)
    n_groups = n // k
    groups = []
    pos = cond_len
    for j in range(k - 1):  # sequential phase: x_{o_j} predicts x_{o_{j+1}}
        groups.append(([(pos, "token", gen[j])], [gen[j + 1]]))
        pos += 1
    # transition step: x_{o_{k-1}} and M_1..M_{k-1} predict group 1 (region r from slot r)
    items = [(pos, "token", gen[k - 1])] + [(pos + m, "transition", m - 1) for m in range(1, k)]
    groups.append((items, list(gen[k : 2 * k]) if n_groups > 1 else None))
    pos += k
    for g in range(1, n_groups):  # group g predicts group g + 1, region by region
        items = [(pos + r, "token", gen[g * k + r]) for r in range(k)]
        nxt = list(gen[(g + 1) * k : (g + 2) * k]) if g + 1 < n_groups else None
        groups.append((items, nxt))
        pos += k
    return _single_head_plan("par", shape, cond_len, gen, groups, k - 1)


def make_plan(order: str, shape, cond_len: int = 1, k: int | None = None,
              bucket: int | None = None) -> SequencePlan:
    """The plan of ``order``; ``k`` = PAR's regions, ``bucket`` = NAR's scan-width rounding."""
    if order == "nar":
        return nar_plan(shape, cond_len, bucket)
    if order == "raster":
        return raster_plan(shape, cond_len)
    if order == "par":
        return par_plan(shape, k, cond_len)
    raise ValueError(f"order={order!r}: expected one of {ORDERS}")
