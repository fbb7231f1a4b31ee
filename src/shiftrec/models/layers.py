"""The torch building blocks every sequence model shares: one post-LN transformer block, one
weight init, and the right- to left-alignment of scoring histories.

This module imports torch at the top: only the net modules (sasrec_net, shiftaware_net,
transfer_net) import it, and they are imported when a torch model is built, so `import
shiftrec` and the non-torch models stay free of torch.

Parameter names (qkv, out, ln1, ff1, ff2, ln2) are those of every checkpoint saved so far; they
must not change (saved models load by name).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INIT_STD = 0.02
LN_EPS = 1e-12


def init_weights(m: nn.Module, embeddings: bool = True) -> None:
    """RecBole's init, for `module.apply`: N(0, 0.02) weights, zero biases, zero padding rows.

    embeddings=False leaves nn.Embedding alone (the transfer model initialises its own)."""
    if isinstance(m, nn.Linear) or (embeddings and isinstance(m, nn.Embedding)):
        nn.init.normal_(m.weight, 0.0, INIT_STD)
    if isinstance(m, nn.Linear) and m.bias is not None:
        nn.init.zeros_(m.bias)
    if embeddings and isinstance(m, nn.Embedding) and m.padding_idx is not None:
        with torch.no_grad():
            m.weight[m.padding_idx].zero_()


def init_embeddings(m: nn.Module) -> None:
    init_weights(m, embeddings=True)


def init_linear(m: nn.Module) -> None:
    init_weights(m, embeddings=False)


class TransformerBlock(nn.Module):
    """Post-LN block: x = LN(x + drop(attn(x))); x = LN(x + drop(ff2(gelu(ff1(x))))).

    forward(x, mask): mask None is causal attention; a bool mask (True = may attend) or a float
    mask (added to the attention logits, -inf = masked) is used as given. ff_dropout adds the
    dropout between the feed-forward layers that the transfer model has always used.
    """

    def __init__(self, hidden: int, heads: int, inner: int, dropout: float, attn_dropout: float,
                 ff_dropout: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.attn_dropout = attn_dropout
        self.ff_dropout = ff_dropout
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.ln1 = nn.LayerNorm(hidden, eps=LN_EPS)
        self.ff1 = nn.Linear(hidden, inner)
        self.ff2 = nn.Linear(inner, hidden)
        self.ln2 = nn.LayerNorm(hidden, eps=LN_EPS)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, w, h = x.shape
        q, k, v = self.qkv(x).view(b, w, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        p = self.attn_dropout if self.training else 0.0
        if mask is None:
            a = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            if mask.dtype != torch.bool:
                mask = mask.to(q.dtype)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        a = a.transpose(1, 2).reshape(b, w, h)
        x = self.ln1(x + self.drop(self.out(a)))
        f = F.gelu(self.ff1(x))
        if self.ff_dropout:
            f = self.drop(f)
        return self.ln2(x + self.drop(self.ff2(f)))


def left_align(seq: torch.Tensor, max_len: int, times: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Right-aligned, left-padded (B, L) histories -> (aligned (B, W), times, lengths).

    Keeps the last max_len items, trims the all-padding columns (W = the longest history) and
    moves each row left by its padding, so position 0 is the oldest item. Padding positions of
    `times` repeat the row's last real time (never attended causally, but finite)."""
    seq = seq[:, -max_len:]
    lens = (seq > 0).sum(1)
    w = max(int(lens.max()) if len(lens) else 1, 1)
    seq = seq[:, -w:]
    ar = torch.arange(w, device=seq.device)
    idx = (ar[None, :] + (w - lens)[:, None]) % w
    valid = ar[None, :] < lens[:, None]
    aligned = torch.where(valid, seq.gather(1, idx), 0)
    t = None
    if times is not None:
        times = times[:, -max_len:][:, -w:]
        t = torch.where(valid, times.gather(1, idx), 0)
        last = t.gather(1, (lens - 1).clamp(min=0)[:, None])
        t = torch.where(valid, t, last)
    return aligned, t, lens
