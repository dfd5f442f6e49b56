"""jaxprune: pruning for JAX/Flax, large language models first."""
