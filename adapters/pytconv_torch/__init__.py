"""PyTorch adapter for pytconv (see README)."""
