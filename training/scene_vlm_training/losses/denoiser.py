"""A small DiT denoiser (adaLN-Zero) over latent tokens, ROSS3D's reconstruction head.

Input: noisy latent tokens (B, N, C) (one token per p x p group of VAE latent cells), a timestep
(B,), and per-token conditioning (B, N, W) from :class:`~.pooling.AttentionPooler`. The timestep
embedding is *added* to the conditioning, and the sum modulates every block through adaLN-Zero
(shift/scale/gate regressed from it, the regressor zero-initialised so each block starts as the
identity). The output layer is zero-initialised too, so a fresh head predicts eps = 0. Token
positions carry fixed 2D sinusoidal embeddings. ROSS3D: depth 3, width 1024, 16 heads.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_embedding(values: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(...,) float -> (..., dim) [cos | sin] features at geometric frequencies (DDPM/Transformer style)."""
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=values.device) / half)
    args = values.float()[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def grid_position_embedding(height: int, width: int, dim: int) -> torch.Tensor:
    """(height * width, dim) fixed 2D sinusoidal embedding, row-major cells (half rows, half columns)."""
    if dim % 4:
        raise ValueError(f"dim must be divisible by 4 for a 2D embedding, got {dim}")
    rows = torch.arange(height, dtype=torch.float32).repeat_interleave(width)
    cols = torch.arange(width, dtype=torch.float32).repeat(height)
    return torch.cat([sinusoidal_embedding(rows, dim // 2), sinusoidal_embedding(cols, dim // 2)], dim=-1)


class TimestepEmbedding(nn.Module):
    """t (B,) -> (B, W): sinusoidal features through a 2-layer MLP."""

    def __init__(self, width: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_embedding(t, self.freq_dim).to(self.mlp[0].weight.dtype))


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class DiTBlock(nn.Module):
    """Self-attention + MLP, each with adaLN-Zero modulation from the per-token condition c (B, N, W)."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = nn.MultiheadAttention(width, num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x, c: (B, N, W) -> (B, N, W)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=-1)
        h = _modulate(self.norm1(x), shift1, scale1)
        x = x + gate1 * self.attn(h, h, h, need_weights=False)[0]
        x = x + gate2 * self.mlp(_modulate(self.norm2(x), shift2, scale2))
        return x


class DiTDenoiser(nn.Module):
    """Predicts eps (B, N, C) from noisy tokens (B, N, C), t (B,) and condition (B, N, W).

    Args:
        in_channels: C, channels of one latent token (latent channels x patch^2).
        grid: (h, w) token grid, N = h * w.
        width, depth, num_heads: transformer size (ROSS3D: 1024, 3, 16).
    """

    def __init__(self, in_channels: int, grid: tuple[int, int], width: int = 1024, depth: int = 3,
                 num_heads: int = 16) -> None:
        super().__init__()
        self.in_channels, self.grid = int(in_channels), (int(grid[0]), int(grid[1]))
        self.proj_in = nn.Linear(in_channels, width)
        self.register_buffer("pos", grid_position_embedding(self.grid[0], self.grid[1], width), persistent=False)
        self.t_embed = TimestepEmbedding(width)
        self.blocks = nn.ModuleList(DiTBlock(width, num_heads) for _ in range(depth))
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.proj_out = nn.Linear(width, in_channels)
        for layer in (self.ada_out[1], self.proj_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @property
    def n_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if x_t.shape[1:] != (self.n_tokens, self.in_channels):
            raise ValueError(f"x_t must be (B, {self.n_tokens}, {self.in_channels}), got {tuple(x_t.shape)}")
        dtype = self.proj_in.weight.dtype
        x = self.proj_in(x_t.to(dtype)) + self.pos.to(dtype)
        c = cond.to(dtype) + self.t_embed(t)[:, None, :]  # timestep embedding added to the condition
        for block in self.blocks:
            x = block(x, c)
        shift, scale = self.ada_out(c).chunk(2, dim=-1)
        return self.proj_out(_modulate(self.norm_out(x), shift, scale))
