"""TensorFlow / Keras adapter for pytconv (see README)."""
