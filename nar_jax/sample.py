"""P01 NAR: Neighboring Autoregressive Modeling for Efficient Visual Generation — decoding.

One static-shape decoder for the three orders of :mod:`nar_jax.order` (NAR, raster-AR, PAR-kX):
a prefill on the condition tokens, then one ``lax.scan`` per phase of equal-width steps (NAR:
exactly rings - 1 steps of R = max ring size padded slots, or a few scans of narrower widths
with ``nar_plan(..., bucket=b)``; raster: N - 1 steps of one token;
PAR-kX: k - 1 one-token steps, then N/k - 1 steps of k slots). The KV cache (per block
``[batch, L_cache, heads, head_dim]``, ours, since Flax's decode cache takes one query at a
time) is written one padded block per step with ``dynamic_update_slice``; queries see keys below
the block's end (= ring(key) <= ring(query) in the ring-major layout). Each target's logits are
the mean of its available heads' logits (NAR's merge; a single head for raster/PAR), then
classifier-free guidance ``u + s (c - u)`` on the batch ``[cond; uncond]``, then temperature /
top-k / top-p sampling. Tokens come back in raster order. Compiled once per (batch, grid).

Deviation: guidance is applied at every step (the official ``cfg_interval`` option, off by
default, is not implemented); temperature 0 means greedy (argmax).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nar_jax.model import Transformer, check_compatible
from nar_jax.order import SequencePlan


def filter_logits(logits, top_k: int = 0, top_p: float = 1.0):
    """Set logits outside the top-k / nucleus (top-p) set to -inf (at least one token kept)."""
    neg = jnp.finfo(logits.dtype).min
    if top_k > 0:
        kth = jax.lax.top_k(logits, min(top_k, logits.shape[-1]))[0][..., -1:]
        logits = jnp.where(logits < kth, neg, logits)
    if top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
        cum = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        remove = cum > top_p
        remove = jnp.concatenate([jnp.zeros_like(remove[..., :1]), remove[..., :-1]], axis=-1)
        cutoff = jnp.min(jnp.where(remove, jnp.inf, sorted_logits), axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, neg, logits)
    return logits


def sample_logits(key, logits, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
    """Draw token ids from ``logits [..., V]``; ``temperature == 0`` is greedy."""
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1)
    logits = filter_logits(logits / temperature, top_k, top_p)
    return jax.random.categorical(key, logits, axis=-1)


def _check_sampling(temperature, top_k, top_p):
    if temperature < 0 or top_k < 0 or not 0.0 < top_p <= 1.0:
        raise ValueError(
            f"temperature={temperature}, top_k={top_k}, top_p={top_p}: expected temperature >= 0,"
            " top_k >= 0 and 0 < top_p <= 1"
        )


def make_decode_fn(
    graphdef,
    plan: SequencePlan,
    *,
    cfg: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    teacher_forced: bool = False,
    return_logits: bool = False,
):
    """The pure decode function ``f(state, labels, key, cfg_scale, teacher) -> (tokens, logits)``.

    ``tokens [B, N]`` in raster order; ``logits [B, N, V]`` (merged, guided) when
    ``return_logits`` else None. With ``teacher_forced`` the given ``teacher [B, N]`` tokens are
    fed instead of samples (the returned tokens are then the teacher's).
    """
    _check_sampling(temperature, top_k, top_p)
    n = plan.num_tokens
    cl = plan.cond_len
    length = plan.cache_length
    phases = [
        {
            "offset": ph.offset, "key_end": ph.key_end, "feed_raster": ph.feed_raster,
            "feed_transition": ph.feed_transition, "feed_rope": ph.feed_rope,
            "feed_abs": ph.feed_abs, "target_raster": ph.target_raster, "source": ph.source,
        }
        for ph in plan.phases
    ]
    first_step = np.cumsum([1] + [ph.steps for ph in plan.phases])

    def decode(state, labels, key, cfg_scale, teacher=None):
        model: Transformer = nnx.merge(graphdef, state)
        c = model.config
        batch = labels.shape[0]
        rope_kind = c.position == "rope2d"

        def guide(merged):  # [nb, T, V] -> [B, T, V]
            if not cfg:
                return merged
            cond, uncond = merged[:batch], merged[batch:]
            return uncond + cfg_scale * (cond - uncond)

        def choose(step, guided, canvas, out, targets):
            if teacher_forced:
                new = canvas
            else:
                toks = sample_logits(jax.random.fold_in(key, step), guided, temperature, top_k,
                                     top_p)
                new = canvas.at[:, targets].set(toks.astype(canvas.dtype))
            if return_logits:
                out = out.at[:, targets].set(guided)
            return new, out

        all_labels = labels
        if cfg:
            all_labels = jnp.concatenate([labels, jnp.full_like(labels, c.num_classes)])
        nb = all_labels.shape[0]
        cache = model.init_cache(nb, length)
        pos = plan.rope[:cl] if rope_kind else plan.abs_pos[:cl]
        mask = np.arange(length)[None, :] <= np.arange(cl)[:, None]
        logits, cache = model(model.embed_labels(all_labels), pos, mask, cache=cache)
        merged = logits[:, :, cl - 1].mean(0)[:, None]
        if teacher_forced:
            canvas = jnp.concatenate([teacher, jnp.zeros((batch, 1), teacher.dtype)], axis=1)
        else:
            canvas = jnp.zeros((batch, n + 1), jnp.int32)
        out = jnp.zeros((batch, n + 1, c.vocab_size), jnp.float32) if return_logits else None
        canvas, out = choose(0, guide(merged), canvas, out, np.array([plan.prefill_target]))

        for ph, step0 in zip(phases, first_step[:-1]):
            n_heads = ph["source"].shape[-1]
            width = ph["feed_raster"].shape[1]

            def body(carry, row, n_heads=n_heads, width=width):
                cache, canvas, out = carry
                x = model.embed_tokens(canvas[:, row["feed_raster"]], row["feed_transition"])
                if cfg:
                    x = jnp.concatenate([x, x])
                pos = row["feed_rope"] if rope_kind else row["feed_abs"]
                mask = jnp.broadcast_to(jnp.arange(length)[None, :] < row["key_end"],
                                        (width, length))
                logits, cache = model(x, pos, mask, cache=cache, write_index=row["offset"])
                src = row["source"]
                got = logits[jnp.arange(n_heads)[None, :], :, jnp.maximum(src, 0)]
                w = (src >= 0).astype(jnp.float32)
                merged = (got * w[..., None, None]).sum(1) / jnp.maximum(w.sum(1), 1)[:, None, None]
                canvas, out = choose(row["step"], guide(merged.transpose(1, 0, 2)), canvas, out,
                                     row["target_raster"])
                return (cache, canvas, out), None

            xs = {k: jnp.asarray(v) for k, v in ph.items()}
            xs["step"] = jnp.arange(step0, step0 + ph["offset"].shape[0])
            (cache, canvas, out), _ = jax.lax.scan(body, (cache, canvas, out), xs)
        return canvas[:, :n], (out[:, :n] if return_logits else None)

    return decode


class Sampler:
    """Compiled decoder of one plan; ``sampler(model, labels, key, cfg_scale)`` -> tokens [B, N].

    The jitted function is built once; it retraces only for a new batch size.
    """

    def __init__(self, model: Transformer, plan: SequencePlan, *, cfg: bool = False,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
        check_compatible(model.config, plan.shape, plan.num_heads, plan.num_transition,
                         int(plan.abs_pos.max()))
        self.plan = plan
        self.cfg = cfg
        graphdef = nnx.graphdef(model)
        kw = dict(cfg=cfg, temperature=temperature, top_k=top_k, top_p=top_p)
        self._sample = jax.jit(make_decode_fn(graphdef, plan, **kw))
        self._teacher = jax.jit(
            make_decode_fn(graphdef, plan, teacher_forced=True, return_logits=True, **kw)
        )

    def _check_labels(self, model, labels):
        labels = jnp.asarray(labels)
        if labels.ndim != 1 or labels.shape[0] == 0 or not jnp.issubdtype(labels.dtype,
                                                                            jnp.integer):
            raise ValueError(f"labels: expected a non-empty [B] integer array, got {labels.shape}")
        n = model.config.num_classes
        if int(labels.min()) < 0 or int(labels.max()) > n:
            raise ValueError(f"labels: expected classes in [0, {n}] ({n} = null class)")
        return labels

    def __call__(self, model: Transformer, labels, key, cfg_scale: float = 1.0):
        labels = self._check_labels(model, labels)
        if not self.cfg and cfg_scale != 1.0:
            raise ValueError(f"cfg_scale={cfg_scale}: this sampler was built with cfg=False")
        tokens, _ = self._sample(nnx.state(model), labels, key, jnp.float32(cfg_scale))
        return tokens

    def teacher_forced_logits(self, model: Transformer, labels, tokens, cfg_scale: float = 1.0):
        """Merged (guided) logits ``[B, N, V]`` when the given raster ``tokens`` are fed."""
        labels = self._check_labels(model, labels)
        tokens = jnp.asarray(tokens)
        if tokens.shape != (labels.shape[0], self.plan.num_tokens):
            raise ValueError(
                f"tokens: expected shape {(labels.shape[0], self.plan.num_tokens)}, "
                f"got {tokens.shape}"
            )
        _, logits = self._teacher(
            nnx.state(model), labels, jax.random.key(0), jnp.float32(cfg_scale), tokens
        )
        return logits

    @property
    def compiled_count(self) -> int:
        """Number of compiled variants of the sampling function (1 per batch size)."""
        return self._sample._cache_size()
