"""Retrieval metrics: MindEye's 300-way brain <-> image top-1 and general top-k accuracy.

MindEye/MindEye2 evaluation: draw 300 distinct test items at random, L2-normalise the flattened
brain and image embeddings, take the cosine-similarity matrix, and score top-1 in both directions:
*brain -> image* (``fwd``: each brain embedding's most similar image embedding is its own) and
*image -> brain* (``bwd``); repeat for 30 draws and report the mean with a normal 95 % interval
``mean +- 1.96 * std / sqrt(draws)`` (``np.std``, ``ddof=0``, as the reference). Chance is 1/300.

Deviation: ties are broken pessimistically (an item is correct at ``k`` only if fewer than ``k``
*other* candidates score at least as high), where the reference uses ``torch.argsort`` order; the
two agree whenever similarities are distinct.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from brain.input_checks import as_matrix, check_pair, check_positive_int

Z_95 = 1.959963984540054


def cosine_similarity_matrix(queries, candidates) -> jax.Array:
    """``s[i, j]`` = cosine similarity of flattened ``queries[i]`` and ``candidates[j]``."""
    q = queries / jnp.linalg.norm(queries, axis=1, keepdims=True)
    c = candidates / jnp.linalg.norm(candidates, axis=1, keepdims=True)
    return q @ c.T


def topk_accuracy_from_similarity(similarity: jax.Array, k: int = 1) -> jax.Array:
    """Fraction of rows ``i`` whose own column ``i`` is among the ``k`` highest of row ``i``."""
    n = similarity.shape[0]
    diag = jnp.diag(similarity)
    rivals = (similarity >= diag[:, None]) & ~jnp.eye(n, dtype=bool)
    return (rivals.sum(axis=1) < k).mean()


def topk_accuracy(queries, candidates, k: int = 1) -> jax.Array:
    """Top-``k`` identification of ``candidates[i]`` for ``queries[i]`` among all candidates
    (e.g. THINGS-EEG 200-way zero-shot top-1/top-5), by cosine similarity."""
    queries = as_matrix("queries", queries)
    candidates = as_matrix("candidates", candidates)
    check_pair("queries", queries, "candidates", candidates, same_shape=True)
    k = check_positive_int("k", k)
    return topk_accuracy_from_similarity(cosine_similarity_matrix(queries, candidates), k)


@functools.partial(jax.jit, static_argnames=("n_way", "n_draws", "k"))
def _draws(brain, image, key, n_way, n_draws, k):
    keys = jax.random.split(key, n_draws)

    def one(draw_key):
        idx = jax.random.permutation(draw_key, brain.shape[0])[:n_way]
        s = cosine_similarity_matrix(brain[idx], image[idx])
        return topk_accuracy_from_similarity(s, k), topk_accuracy_from_similarity(s.T, k)

    return jax.vmap(one)(keys)


def _summary(values: jax.Array) -> dict[str, jax.Array]:
    mean = values.mean()
    half = Z_95 * values.std() / jnp.sqrt(values.shape[0])
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "draws": values}


def retrieval(
    brain_embeddings,
    image_embeddings,
    key: jax.Array,
    *,
    n_way: int = 300,
    n_draws: int = 30,
    k: int = 1,
) -> dict[str, dict[str, jax.Array]]:
    """MindEye's n-way retrieval: ``{"brain_to_image": {...}, "image_to_brain": {...}}``.

    Each entry holds ``mean``, ``ci_low``, ``ci_high`` (normal 95 %) and the per-draw ``draws``.
    ``brain_embeddings[i]`` and ``image_embeddings[i]`` belong to the same test item.
    """
    brain = as_matrix("brain_embeddings", brain_embeddings)
    image = as_matrix("image_embeddings", image_embeddings)
    check_pair("brain_embeddings", brain, "image_embeddings", image, same_shape=True)
    n_way, n_draws, k = (check_positive_int(n, v) for n, v in (("n_way", n_way), ("n_draws", n_draws), ("k", k)))
    if n_way > brain.shape[0]:
        raise ValueError(f"n_way={n_way} exceeds the {brain.shape[0]} test items available")
    fwd, bwd = _draws(brain, image, key, n_way, n_draws, k)
    return {"brain_to_image": _summary(fwd), "image_to_brain": _summary(bwd)}
