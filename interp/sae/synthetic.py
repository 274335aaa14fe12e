"""Synthetic activations with a planted dictionary (flat, superposed-hierarchical, or P13's tree).

Flat: ``x = c D`` with ``D [n_atoms, d]`` random unit atoms and sparse non-negative codes
(each atom active with probability ``p``, magnitude ``U(low, high)``).

Superposed hierarchy (:func:`hierarchical_dictionary` / :func:`hierarchical_data`): parents
``P [n_parents, d]``, each with children drawn in the orthogonal complement of that parent; every
token is ``a p_i + b c_ij``. With more atoms than dimensions the children of one parent overlap
the other parents, so a linear read-out confuses them while matching pursuit (which removes the
parent first) does not: the encoder-only explaining-away check.

P13 tree (:func:`tree_dictionary` / :func:`tree_data`), the synthetic hierarchy of the MP-SAE
authors' code (github.com/mpsae/MP-SAE, built on the Matryoshka-SAE toy): ``n_parents`` parents,
each with ``n_children`` mutually exclusive children, plus ``n_flat`` features without children;
features are a perturbed orthonormal basis, so children are exactly orthogonal to every parent
(conditional orthogonality) while features of one level share a cosine ``level_cosine``. Each
token activates exactly one top-level feature (a parent w.p. ``parent_probability`` each, else a
flat one); an active parent activates one child w.p. ``1 - no_child_probability`` (uniform among
its children); every active feature has magnitude ``1.5 + 0.25 N(0, 1)``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from interp.sae.autoencoder import SAEStat, unit_rows


def random_dictionary(key: jax.Array, n_atoms: int, d: int) -> jax.Array:
    """``n_atoms`` random unit vectors in ``R^d`` (rows)."""
    return unit_rows(jax.random.normal(key, (n_atoms, d)))


def flat_sparse_data(key: jax.Array, dictionary: jax.Array, n: int, p: float,
                     low: float = 0.5, high: float = 1.5) -> tuple[jax.Array, jax.Array]:
    """``(x [n, d], codes [n, n_atoms])`` with each atom active independently w.p. ``p``."""
    if not 0 < p <= 1:
        raise ValueError(f"p={p!r}: expected 0 < p <= 1")
    k_on, k_mag = jax.random.split(key)
    on = jax.random.bernoulli(k_on, p, (n, dictionary.shape[0]))
    codes = on * jax.random.uniform(k_mag, on.shape, minval=low, maxval=high)
    return codes @ dictionary, codes


def hierarchical_dictionary(key: jax.Array, n_parents: int, n_children: int, d: int,
                            sibling_similarity: float = 0.0) -> tuple[jax.Array, jax.Array]:
    """``(parents [P, d], children [P, C, d])``, every child unit and orthogonal to its parent
    (superposed: children are random in the parent's complement, not orthogonal to other parents).

    Siblings share a common direction so that their cosine is about ``sibling_similarity``.
    """
    if not 0 <= sibling_similarity < 1:
        raise ValueError(f"sibling_similarity={sibling_similarity!r}: expected 0 <= s < 1")
    k_p, k_c, k_s = jax.random.split(key, 3)
    parents = random_dictionary(k_p, n_parents, d)
    shared = random_dictionary(k_s, n_parents, d)[:, None]
    unique = random_dictionary(k_c, n_parents * n_children, d).reshape(n_parents, n_children, d)
    raw = jnp.sqrt(sibling_similarity) * shared + jnp.sqrt(1 - sibling_similarity) * unique
    raw = raw - jnp.einsum("pcd,pd->pc", raw, parents)[..., None] * parents[:, None]
    return parents, unit_rows(raw)


def hierarchical_data(key: jax.Array, parents: jax.Array, children: jax.Array, n: int,
                      children_per_token: int = 1, parent_range=(1.5, 2.0),
                      child_range=(0.5, 1.0)) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(x [n, d], parent index [n], child indices [n, children_per_token])`` with
    ``x = a p_i + sum_j b_j c_ij``: one parent and distinct children of it per token."""
    if not 0 < children_per_token <= children.shape[1]:
        raise ValueError(f"children_per_token={children_per_token!r}: expected 1.."
                         f"{children.shape[1]}")
    k_p, k_c, k_a, k_b = jax.random.split(key, 4)
    i = jax.random.randint(k_p, (n,), 0, parents.shape[0])
    _, j = jax.lax.top_k(jax.random.uniform(k_c, (n, children.shape[1])), children_per_token)
    a = jax.random.uniform(k_a, (n, 1), minval=parent_range[0], maxval=parent_range[1])
    b = jax.random.uniform(k_b, (n, children_per_token, 1), minval=child_range[0],
                           maxval=child_range[1])
    return a * parents[i] + jnp.sum(b * children[i[:, None], j], axis=1), i, j


def _mixing_weight(m: int, cosine: float) -> float:
    """``t`` with pairwise cosine ``cosine`` between the unit rows of ``(1 - t) I + t 11^T``."""
    if m < 2 or cosine == 0:
        return 0.0
    a = (m - 1) * cosine - (m - 2)
    return cosine / 2 if a == 0 else (1 - (1 - a * cosine) ** 0.5) / a


def tree_dictionary(key: jax.Array, n_parents: int = 3, n_children: int = 3, n_flat: int = 8,
                    d: int | None = None, level_cosine: float = 0.1):
    """P13's tree: ``(atoms [n, d], parent index [P], child index [P, C], flat index [F])``.

    ``n = P (1 + C) + F``; parent ``i`` is row ``i (1 + C)`` and its children the ``C`` rows after
    it; flat features come last (the authors' order). Rows start from a random orthonormal basis
    of ``R^d`` (``d`` defaults to ``n``); parents and flat features are mixed among themselves and
    each sibling group among itself so that any two features of one level have cosine
    ``level_cosine`` (the authors' "correlation" levels 0, 0.1, ..., 0.8), while every child stays
    exactly orthogonal to every parent and flat feature.
    """
    for name, value in (("n_parents", n_parents), ("n_children", n_children)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name}={value!r}: expected a positive integer")
    if not isinstance(n_flat, int) or n_flat < 0:
        raise ValueError(f"n_flat={n_flat!r}: expected a non-negative integer")
    n = n_parents * (1 + n_children) + n_flat
    d = n if d is None else d
    if d < n:
        raise ValueError(f"d={d!r}: expected d >= number of features {n}")
    if not 0 <= level_cosine < 1:
        raise ValueError(f"level_cosine={level_cosine!r}: expected 0 <= level_cosine < 1")
    parent_index = np.arange(n_parents) * (1 + n_children)
    child_index = parent_index[:, None] + 1 + np.arange(n_children)
    flat_index = n_parents * (1 + n_children) + np.arange(n_flat)
    mixing = np.zeros((n, n))
    for group in (np.concatenate([parent_index, flat_index]), *child_index):
        t = _mixing_weight(len(group), level_cosine)
        mixing[np.ix_(group, group)] = (1 - t) * np.eye(len(group)) + t
    q, _ = jnp.linalg.qr(jax.random.normal(key, (d, d)))
    atoms = unit_rows(jnp.asarray(mixing, q.dtype) @ q.T[:n])
    return atoms, jnp.asarray(parent_index), jnp.asarray(child_index), jnp.asarray(flat_index)


@functools.partial(jax.jit, static_argnames="n")
def _sample_tree(key, atoms, top_features, child_index, top_probabilities, child_probability,
                 magnitude_mean, magnitude_std, n):
    n_parents = child_index.shape[0]
    k_top, k_child, k_has, k_mag = jax.random.split(key, 4)
    top = jax.random.choice(k_top, top_features.shape[0], (n,), p=top_probabilities)
    child = jax.random.randint(k_child, (n,), 0, child_index.shape[1])
    has_child = (top < n_parents) & jax.random.bernoulli(k_has, child_probability, (n,))
    rows = jnp.arange(n)
    on = jnp.zeros((n, atoms.shape[0]), atoms.dtype).at[rows, top_features[top]].set(1.0)
    child_feature = child_index[jnp.minimum(top, n_parents - 1), child]
    on = on.at[rows, child_feature].add(has_child.astype(on.dtype))
    codes = on * (magnitude_mean + magnitude_std * jax.random.normal(k_mag, on.shape, on.dtype))
    return codes @ atoms, codes


def tree_data(key: jax.Array, atoms: jax.Array, parent_index: jax.Array, child_index: jax.Array,
              flat_index: jax.Array, n: int, parent_probability: float = 0.2,
              no_child_probability: float = 0.4, magnitude_mean: float = 1.5,
              magnitude_std: float = 0.25) -> tuple[jax.Array, jax.Array]:
    """``(x [n, d], codes [n, n_features])`` sampled from P13's tree (see the module docstring).

    One top-level feature per token: each parent w.p. ``parent_probability``, the flat features
    share the rest uniformly; an active parent turns on one of its children w.p.
    ``1 - no_child_probability``. Defaults are the authors' (mean L0 1.36).
    """
    n_parents, n_flat = parent_index.shape[0], flat_index.shape[0]
    flat_mass = 1 - n_parents * parent_probability
    if not (parent_probability > 0 and flat_mass >= -1e-9 and (n_flat > 0 or flat_mass < 1e-9)):
        raise ValueError(f"parent_probability={parent_probability!r}: expected 0 < p and "
                         f"n_parents * p <= 1 (= 1 when there are no flat features)")
    if not 0 <= no_child_probability <= 1:
        raise ValueError(f"no_child_probability={no_child_probability!r}: expected in [0, 1]")
    top_probabilities = jnp.concatenate([
        jnp.full((n_parents,), parent_probability),
        jnp.full((n_flat,), max(flat_mass, 0.0) / max(n_flat, 1))])
    return _sample_tree(key, atoms, jnp.concatenate([parent_index, flat_index]), child_index,
                        top_probabilities, 1 - no_child_probability, magnitude_mean,
                        magnitude_std, n)


def randomize_parameters(model, key: jax.Array, scale: float = 0.3) -> None:
    """Perturb every parameter of an SAE in place (decoder rows stay unit norm; a BatchTopK
    threshold is set positive) so exact maps (folding, save/load) are checked away from init."""
    params = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    leaves = [leaf + scale * jax.random.normal(k, leaf.shape, leaf.dtype)
              for leaf, k in zip(leaves, keys)]
    nnx.update(model, jax.tree.unflatten(treedef, leaves))
    model.W_dec[...] = unit_rows(model.W_dec[...])
    threshold = getattr(model, "threshold", None)
    if isinstance(threshold, SAEStat):
        threshold[...] = jnp.asarray(0.2, threshold[...].dtype)
