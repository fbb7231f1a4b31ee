"""Training: one generic trainer (phases as data, early stopping, checkpoints, resume, DDP) and batching."""
