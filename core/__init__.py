"""The shared layer: mesh and sharding, checkpoints, the training loop, data, config, tables.

Parameters are placed explicitly by :func:`core.mesh.create_sharded` through one logical-axis
rule table, so Flax's eager variable sharding (which needs a mesh at construction time) is
turned off: a model with logical names then also builds unsharded on one device.
"""

import flax

flax.config.update("flax_always_shard_variable", False)
