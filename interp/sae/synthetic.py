"""Synthetic activations with a planted dictionary, flat or hierarchical, for recovery tests.

Flat: ``x = c D`` with ``D [n_atoms, d]`` random unit atoms and sparse non-negative codes
(each atom active with probability ``p``, magnitude ``U(low, high)``).
Hierarchical (P13's setting): parents ``P [n_parents, d]``; each parent has children drawn in
the orthogonal complement of that parent (children of one parent are not orthogonal to each
other). A token activates one parent with a large coefficient and one of its children with a
smaller one: ``x = a p_i + b c_ij``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
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
    """``(parents [P, d], children [P, C, d])``, every child unit and orthogonal to its parent.

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
