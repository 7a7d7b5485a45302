"""Attention pooling with learned queries: LM hidden states -> one condition vector per target cell.

ROSS3D conditions its denoiser on the language model's last hidden states at visual-token
positions. A non-affine LayerNorm first brings the LM's states (whose scale grows with depth) to
unit scale; then N learned queries (one per target latent token) attend over them.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn


class AttentionPooler(nn.Module):
    """(B, M, H) memory (+ (B, M) padding mask) -> (B, N, W) conditions.

    Args:
        hidden_size: H of the language model.
        width: W of the denoiser.
        n_queries: N, the target's token count.
        num_heads: attention heads (W must be divisible by it).
    """

    def __init__(self, hidden_size: int, width: int, n_queries: int, num_heads: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.queries = nn.Parameter(torch.randn(n_queries, width) * 0.02)
        self.attn = nn.MultiheadAttention(width, num_heads, kdim=hidden_size, vdim=hidden_size, batch_first=True)

    def forward(self, memory: torch.Tensor, padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """memory (B, M, H); padding_mask (B, M) True = padding (ignored). Returns (B, N, W)."""
        dtype = self.queries.dtype
        mem = self.norm(memory.to(dtype))
        q = self.queries.unsqueeze(0).expand(mem.shape[0], -1, -1)
        out, _ = self.attn(q, mem, mem, key_padding_mask=padding_mask, need_weights=False)
        return out
