"""ShiftAware's nn.Module (imports torch: imported only when a ShiftAware net is built; see
shiftaware.py for the model). Buffers hold the data-side tables (item topics, trend and flow)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shiftrec.models.layers import LN_EPS, TransformerBlock, init_embeddings, left_align
from shiftrec.models.shiftaware_features import DAY, N_FEATURES, GateMode


class ShiftAwareNet(nn.Module):
    def __init__(self, n_items: int, n_topics: int, n_trend_rows: int, cfg: Any) -> None:
        super().__init__()
        H, NB = cfg.hidden, cfg.n_time_buckets
        self.cfg = cfg
        self.n_items = n_items
        self.max_len = cfg.max_len
        self.item_emb = nn.Embedding(n_items + 1, H, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, H)
        self.ln = nn.LayerNorm(H, eps=LN_EPS)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([TransformerBlock(H, cfg.heads, cfg.inner, cfg.dropout,
                                                      cfg.attn_dropout) for _ in range(cfg.layers)])
        self.apply(init_embeddings)
        if cfg.gap_emb:
            self.gap_emb = nn.Embedding(NB, H)
            nn.init.zeros_(self.gap_emb.weight)  # starts as plain SASRec
        if cfg.time_bias:
            self.time_bias = nn.Parameter(torch.zeros(cfg.heads, NB))
        K = cfg.n_priors
        if K:
            # trend weights start at softplus(gate_init), signed topic weights at 0
            init = torch.zeros(K)
            init[:cfg.n_trend] = cfg.gate_init / cfg.gate_scale
            if cfg.gate == GateMode.SHIFT:
                self.gate = nn.Linear(N_FEATURES + H, K)
                nn.init.zeros_(self.gate.weight)
                with torch.no_grad():
                    self.gate.bias.copy_(init)
            else:
                self.gate_const = nn.Parameter(init)
        # data-side tables (saved with the weights)
        self.register_buffer("item_topic", torch.zeros(n_items + 1, dtype=torch.long))
        self.register_buffer("trend_log", torch.zeros(cfg.n_trend, n_trend_rows, n_items + 1))
        self.register_buffer("trend_origin", torch.zeros(2, dtype=torch.long))  # t0, bucket s
        self.register_buffer("flow", torch.zeros(n_topics, n_topics))  # log P(next | topic)
        self.n_topics = n_topics

    def tbucket(self, dt: torch.Tensor) -> torch.Tensor:
        """Bucket of elapsed seconds (torch twin of shiftaware.time_buckets)."""
        nb = self.cfg.n_time_buckets
        dtf = dt.clamp(min=0).double()
        b = 2 + torch.floor(torch.log2(1.0 + dtf / self.cfg.time_unit_s))
        b = torch.where(dtf == 0, torch.ones_like(b), b)
        return b.clamp(max=nb - 2).long()

    # ------------------------------------------------------------------ encoder
    def encode(self, seq: torch.Tensor, times: torch.Tensor | None) -> torch.Tensor:
        """Left-aligned (B, W) items (+ times) -> (B, W, H), causal."""
        b, w = seq.shape
        dev = seq.device
        pos = torch.arange(w, device=dev)
        x = self.item_emb(seq) + self.pos_emb(pos)[None]
        if self.cfg.gap_emb:
            x = x + self.gap_emb(self.gap_buckets(seq, times))
        x = self.drop(self.ln(x))
        mask = None
        if self.cfg.time_bias and times is not None:
            dt = times[:, :, None] - times[:, None, :]  # (B, p, j): t_p - t_j
            bias = self.time_bias[:, self.tbucket(dt)].permute(1, 0, 2, 3)  # (B, heads, W, W)
            causal = torch.ones(w, w, dtype=torch.bool, device=dev).tril()
            mask = bias.masked_fill(~causal, float("-inf"))
        for blk in self.blocks:
            x = blk(x, mask)
        return x

    def gap_buckets(self, seq: torch.Tensor, times: torch.Tensor | None) -> torch.Tensor:
        if times is None:
            return torch.full_like(seq, self.cfg.n_time_buckets - 1)
        gap = torch.zeros_like(times)
        gap[:, 1:] = times[:, 1:] - times[:, :-1]
        out = self.tbucket(gap)
        out[:, 0] = 0
        return out

    # ------------------------------------------------------------------ shift features
    def topic_mass(self, seq: torch.Tensor, half_lives: tuple[float, ...]) -> list[torch.Tensor]:
        """Event-decayed topic mass at every position (B, W, T), causal, per half-life."""
        w = seq.shape[1]
        dev = seq.device
        onehot = F.one_hot(self.item_topic[seq], self.n_topics).float() * (seq > 0)[..., None].float()
        age = (torch.arange(w, device=dev)[:, None] - torch.arange(w, device=dev)[None, :]).float()
        causal = age >= 0
        out = []
        for hl in half_lives:
            d = torch.where(causal, torch.exp2(-age.clamp(min=0) / hl), torch.zeros_like(age))
            out.append(torch.einsum("pj,bjt->bpt", d, onehot))
        return out

    def profiles(self, seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fast- and slow-decay topic distributions at every position (B, W, T), causal."""
        T = self.n_topics
        fast, slow = [(mass + 1.0 / T) / (mass.sum(-1, keepdim=True) + 1.0) for mass in
                      self.topic_mass(seq, (self.cfg.fast_half_life, self.cfg.slow_half_life))]
        return fast, slow

    def features(self, seq: torch.Tensor, times: torch.Tensor | None,
                 fast: torch.Tensor, slow: torch.Tensor) -> torch.Tensor:
        """(B, W, 6) history features at every position (the model-based ones are added at
        the predicting positions by `model_features`)."""
        w = seq.shape[1]
        m = 0.5 * (fast + slow)
        jsd = 0.5 * ((fast * (fast / m).log2()).sum(-1) + (slow * (slow / m).log2()).sum(-1))
        logT = math.log(max(self.n_topics, 2))
        ent_s = -(slow * slow.log()).sum(-1) / logT
        ent_f = -(fast * fast.log()).sum(-1) / logT
        n = torch.log1p(torch.arange(w, device=seq.device).float())[None].expand_as(jsd) \
            / math.log(self.cfg.max_len + 1)
        if times is None:
            gap = torch.zeros_like(jsd)
        else:
            g = torch.zeros_like(times)
            g[:, 1:] = times[:, 1:] - times[:, :-1]
            gap = torch.log1p(g.clamp(min=0).float() / DAY) / 5.0
        top = fast.max(-1).values
        return torch.stack([jsd, ent_s, ent_f, n, gap, top], -1)

    def model_features(self, logits: torch.Tensor, fast: torch.Tensor, slow: torch.Tensor
                       ) -> torch.Tensor:
        """(n, 3): how much of the transformer's own prediction stays in the user's topics
        (expected slow / fast profile probability of the predicted topic) and the entropy of
        its predicted topic mix. `logits` (n, n_items) over real items, used detached."""
        p = torch.softmax(logits.detach().float(), -1)
        mass = p.new_zeros((len(p), self.n_topics)).index_add_(1, self.item_topic[1:], p)
        ent = -(mass * (mass + 1e-12).log()).sum(-1) / math.log(max(self.n_topics, 2))
        return torch.stack([(mass * slow).sum(-1), (mass * fast).sum(-1), ent], -1)

    def gate_weights(self, h: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """Prior weights (..., K): trend weights >= 0 (softplus); topic weights are signed
        (a user on the move is pushed *away* from the recent topics)."""
        if self.cfg.gate == GateMode.SHIFT:
            raw = self.cfg.gate_scale * self.gate(torch.cat([feats, h], -1))
        else:
            raw = (self.cfg.gate_scale * self.gate_const).expand(*h.shape[:-1], -1)
        nt = self.cfg.n_trend
        if nt == raw.shape[-1]:
            return F.softplus(raw)
        return torch.cat([F.softplus(raw[..., :nt]), raw[..., nt:]], -1)

    def trend_rows(self, times: torch.Tensor | None, shape: torch.Size) -> torch.Tensor:
        """Row index of the trend table for each time (0 = global: no time known)."""
        if times is None:
            return torch.zeros(shape, dtype=torch.long, device=self.trend_origin.device)
        t0, bsec = self.trend_origin[0], self.trend_origin[1]
        k = torch.div(times - t0, bsec, rounding_mode="floor")
        k = torch.where(times - t0 < 0, torch.zeros_like(k), k)
        return k.clamp(0, self.trend_log.shape[1] - 1)

    def prior_logits(self, seq: torch.Tensor, times: torch.Tensor | None, h: torch.Tensor,
                     sel: tuple[torch.Tensor, ...] | torch.Tensor, logits: torch.Tensor,
                     full: bool) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Weighted sum of the prior log-probabilities at the selected positions.

        `sel` indexes (B, W) positions (a boolean mask or (rows, cols)); `h` is the hidden
        state and `logits` (n, n_items) the transformer's item logits at those positions.
        Returns (n, n_items [+1 if full]) or None, gate weights (n, K), features (n, F).
        """
        fast_all, slow_all = self.profiles(seq)
        hist = self.features(seq, times, fast_all, slow_all)[sel]
        fast, slow = fast_all[sel], slow_all[sel]
        feats = torch.cat([hist, self.model_features(logits, fast, slow)], -1)
        if not self.cfg.n_priors:
            return None, h.new_zeros((len(h), 0)), feats
        wts = self.gate_weights(h, feats)
        cols = slice(0, None) if full else slice(1, None)
        out = None
        k = 0
        if self.cfg.trend_prior:
            rows = self.trend_rows(None if times is None else times, seq.shape)[sel]
            for j in range(self.cfg.n_trend):
                term = wts[:, k:k + 1] * self.trend_log[j][rows][:, cols]
                out = term if out is None else out + term
                k += 1
        it = self.item_topic[cols]
        if self.cfg.topic_prior:
            term = wts[:, k:k + 1] * fast.log()[:, it]
            out = term if out is None else out + term
            k += 1
        if self.cfg.flow_prior:
            nxt = fast @ self.flow.exp()  # (n, T): P(next topic | recent profile)
            term = wts[:, k:k + 1] * nxt.log()[:, it]
            out = term if out is None else out + term
        return out, wts, feats

    # ------------------------------------------------------------------ trainer API
    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        seq, labels = batch["seq"], batch["labels"]
        times = batch.get("times")
        h = self.encode(seq, times)
        m = labels > 0
        hs = h[m]
        logits = hs @ self.item_emb.weight[1:].T
        prior, _, _ = self.prior_logits(seq, times, hs, m, logits, full=False)
        if prior is not None:
            logits = logits + prior
        if self.cfg.shift_weight == 1.0:
            return F.cross_entropy(logits, labels[m] - 1)
        ce = F.cross_entropy(logits, labels[m] - 1, reduction="none")
        w = torch.where(self.shifted_targets(seq, labels)[m], self.cfg.shift_weight, 1.0)
        return (w * ce).sum() / w.sum()

    def shifted_targets(self, seq: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, W) bool: the label's topic is outside the dominant topics of the prefix (the
        evaluation's shifted slice, with the event-decayed slow profile)."""
        with torch.no_grad():
            (mass,) = self.topic_mass(seq, (self.cfg.slow_half_life,))
            share = mass / mass.sum(-1, keepdim=True).clamp(min=1e-12)
            srt, order = share.sort(-1, descending=True)
            need = ((srt.cumsum(-1) < self.cfg.dominant_coverage - 1e-9).sum(-1) + 1
                    ).clamp(max=self.cfg.dominant_max)
            rank = order.argsort(-1)
            dom = (rank < need[..., None]) & (share > 0)
            tt = self.item_topic[labels]
            return ~dom.gather(-1, tt[..., None])[..., 0]

    def _left(self, seq: torch.Tensor, times: torch.Tensor | None
              ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        return left_align(seq, self.max_len, times)

    def score_all(self, seq: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        scores, _, _ = self.score_parts(seq, times)
        return scores

    def score_parts(self, seq: torch.Tensor, times: torch.Tensor | None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(scores (B, n_items + 1), gate weights (B, K), features (B, N_FEATURES))."""
        aligned, t, lens = self._left(seq, times)
        h = self.encode(aligned, t)
        rows = torch.arange(len(seq), device=seq.device)
        last = (lens - 1).clamp(min=0)
        hl = h[rows, last]
        scores = hl @ self.item_emb.weight.T
        prior, wts, feats = self.prior_logits(aligned, t, hl, (rows, last), scores[:, 1:],
                                              full=True)
        if prior is not None:
            scores = scores + prior
        scores[:, 0] = float("-inf")
        return scores, wts, feats
