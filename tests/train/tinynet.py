"""A tiny trainable module for trainer tests: predicts the next item from the last one (+ dropout)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, n_items: int, dim: int = 8, dropout: float = 0.2) -> None:
        super().__init__()
        self.emb = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.mix = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, n_items + 1)
        self.drop = nn.Dropout(dropout)

    def _hidden(self, items: torch.Tensor) -> torch.Tensor:
        return self.drop(torch.tanh(self.mix(self.emb(items))))

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        seq, labels = batch["seq"], batch["labels"]
        m = labels > 0
        logits = self.out(self._hidden(seq[m]))
        return F.cross_entropy(logits, labels[m])

    def score_all(self, seq: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        s = self.out(self._hidden(seq[:, -1]))
        s[:, 0] = float("-inf")
        return s
