"""Multi-head self-attention mixing global attention (class and distillation tokens)
with 2-D sliding-window attention (patch tokens), as the patent describes.

Sequence layout is [cls, patch_0 .. patch_{N-1}, dist]. The class and
distillation tokens are global queries: they attend to every token. Each patch
token attends to the two special tokens and to the patch tokens inside a
(2r+1)x(2r+1) window around it on the patch grid. Both parts are computed in
one masked attention: a query's row of the mask selects its keys, so the two
parts come out already in sequence order and share one output projection.
Weights outside the allowed set are exactly zero (masked before the softmax).

Two implementations give the same result: "masked" (one SDPA call, cost O(L^2)) and
"gather" (special-token rows by SDPA, patch rows over their (2r+1)^2 gathered neighbours
plus the two special tokens, cost O(L*(2r+1)^2)). Which is faster depends on the grid size:
bench/scaling.py measures it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def global_window_mask(grid: tuple[int, int], radius: int | None) -> torch.Tensor:
    """Boolean (L, L) mask, True where query i may attend to key j.

    L = rows*cols + 2. `radius=None` gives plain global attention (all True).
    """
    rows, cols = grid
    n = rows * cols
    length = n + 2
    if radius is None:
        return torch.ones(length, length, dtype=torch.bool)
    r = torch.arange(rows).repeat_interleave(cols)
    c = torch.arange(cols).repeat(rows)
    local = ((r[:, None] - r[None, :]).abs() <= radius) & ((c[:, None] - c[None, :]).abs() <= radius)
    mask = torch.zeros(length, length, dtype=torch.bool)
    mask[0, :] = True  # class token: global query
    mask[-1, :] = True  # distillation token: global query
    mask[:, 0] = True  # every token sees the class token
    mask[:, -1] = True  # every token sees the distillation token
    mask[1:-1, 1:-1] = local
    return mask


class GlobalWindowAttention(nn.Module):
    """Masked multi-head attention whose mask is fixed by the patch grid (cached as a buffer)."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        grid: tuple[int, int],
        radius: int | None,
        attn_dropout: float = 0.0,
        impl: str = "masked",
    ) -> None:
        super().__init__()
        if impl == "gather" and radius is None:
            impl = "masked"  # plain global attention has nothing to gather
        self.impl = impl
        self.grid = grid
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.attn_dropout = attn_dropout
        self.radius = radius
        mask = global_window_mask(grid, radius)
        self.register_buffer("mask", mask, persistent=False)
        # The same mask as an additive bias (0 / -inf), built once: SDPA would otherwise turn a
        # boolean mask into this on every call (a measurable share of CPU time, bench/).
        bias = torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
        self.register_buffer("bias", bias, persistent=False)
        # Plain global attention needs no mask at all: let SDPA take its unmasked fast path.
        self._full = bool(mask.all())

    def _split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, length, d = x.shape
        qkv = self.qkv(x).reshape(b, length, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        q, k, v = self._split_heads(x)
        if self.impl == "gather":
            out = self._gathered(q, k, v)
            return self.proj(out.transpose(1, 2).reshape(b, length, d))
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=None if self._full else self.bias,
            dropout_p=self.attn_dropout if self.training else 0.0,
        )
        return self.proj(out.transpose(1, 2).reshape(b, length, d))

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Explicit (B, heads, L, L) attention weights, for inspection and tests."""
        q, k, _ = self._split_heads(x)
        scores = (q @ k.transpose(-2, -1)) / self.head_dim**0.5
        scores = scores.masked_fill(~self.mask, float("-inf"))
        return scores.softmax(dim=-1)

    def _gathered(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Same maths as the masked path without the L x L score matrix (dropout not applied)."""
        assert self.radius is not None
        b, heads, length, hd = q.shape
        rows, cols = self.grid
        n, size = rows * cols, 2 * self.radius + 1
        special = torch.tensor([0, length - 1], device=q.device)
        # special-token rows: global attention over every token
        out_special = F.scaled_dot_product_attention(q[:, :, special], k, v)
        # patch rows: the two special keys + the (2r+1)^2 window, gathered with unfold
        def neighbourhood(t: torch.Tensor) -> torch.Tensor:
            grid = t[:, :, 1:-1].reshape(b * heads, rows, cols, hd).permute(0, 3, 1, 2)
            cols_ = F.unfold(grid, size, padding=self.radius)  # (BH, hd*size^2, N)
            return cols_.reshape(b * heads, hd, size * size, n).permute(0, 3, 2, 1)  # (BH, N, size^2, hd)

        k_loc, v_loc = neighbourhood(k), neighbourhood(v)
        valid = F.unfold(torch.ones(1, 1, rows, cols, device=q.device), size, padding=self.radius)[0].T > 0.5  # (N, size^2)
        qp = q[:, :, 1:-1].reshape(b * heads, n, hd) * hd**-0.5
        k_sp, v_sp = k[:, :, special].reshape(b * heads, 2, hd), v[:, :, special].reshape(b * heads, 2, hd)
        s_sp = qp @ k_sp.transpose(1, 2)  # (BH, N, 2)
        s_loc = (qp.unsqueeze(2) * k_loc).sum(-1).masked_fill(~valid, float("-inf"))  # (BH, N, size^2)
        w = torch.cat([s_sp, s_loc], dim=-1).softmax(-1)
        out_p = w[..., :2] @ v_sp + (w[..., 2:].unsqueeze(-1) * v_loc).sum(2)  # (BH, N, hd)
        out_p = out_p.reshape(b, heads, n, hd)
        return torch.cat([out_special[:, :, :1], out_p, out_special[:, :, 1:]], dim=2)
