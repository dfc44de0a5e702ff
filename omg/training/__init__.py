"""Training pieces that are plain PyTorch: optimiser and schedule builders, the training step, state."""
