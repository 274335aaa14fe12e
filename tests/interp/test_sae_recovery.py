"""Planted-dictionary recovery: every SAE variant finds the atoms of synthetic sparse codes."""

import jax
import pytest
from flax import nnx

import core  # noqa: F401
from interp.sae import (BatchTopKSAE, GatedSAE, JumpReLUSAE, MatchingPursuitSAE, ReLUSAE,
                        TopKSAE)
from interp.sae.metrics import dictionary_recovery, fvu
from interp.sae.synthetic import flat_sparse_data, random_dictionary
from interp.sae.training import estimate_input_scale, sae_optimizer, train_on_array

D_IN, N_ATOMS, D_SAE = 32, 64, 128


@pytest.fixture(scope="module")
def planted():
    dictionary = random_dictionary(jax.random.key(1), N_ATOMS, D_IN)
    x, _ = flat_sparse_data(jax.random.key(2), dictionary, 16384, 3 / N_ATOMS)
    return dictionary, x * estimate_input_scale(x)


VARIANTS = [
    (ReLUSAE, {"l1_coefficient": 1.0}),
    (TopKSAE, {"k": 3}),
    (BatchTopKSAE, {"k": 3}),
    (JumpReLUSAE, {"l0_coefficient": 1.0, "threshold_init": 0.5, "bandwidth": 0.5}),
    (GatedSAE, {"l1_coefficient": 3.0}),
    (MatchingPursuitSAE, {"k": 3}),
]


@pytest.mark.parametrize("cls,kwargs", VARIANTS, ids=[c.__name__ for c, _ in VARIANTS])
def test_planted_dictionary_recovered(planted, cls, kwargs):
    dictionary, x = planted
    model = cls(D_IN, D_SAE, rngs=nnx.Rngs(0), dead_steps=200, **kwargs)
    before = float(dictionary_recovery(model.W_dec[...], dictionary))
    history = train_on_array(model, x, sae_optimizer(3e-3), steps=2000, batch_size=256)
    assert float(history["loss"][-100:].mean()) < float(history["loss"][:100].mean())
    recovery = float(dictionary_recovery(model.W_dec[...], dictionary))
    assert before < 0.7
    assert recovery > 0.95, f"{cls.__name__}: mean max cosine {recovery:.3f}"
    held_out = x[:2000]
    assert float(fvu(held_out, model(held_out))) < 0.3
