"""Tasks for :func:`rsa_jax.train.train`: a model, a loss and a data order (see :class:`rsa_jax.train.Task`)."""
