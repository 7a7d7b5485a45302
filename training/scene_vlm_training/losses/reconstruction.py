"""One reconstruction head: attention pooler + DiT denoiser + the diffusion objective.

Shared by the cross-view and the global-view (BEV) losses, which differ in *what* is rebuilt (a
masked frame / the raw BEV), from *which* hidden states, and which cells count.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .denoiser import DiTDenoiser
from .diffusion import CosineNoiseSchedule, masked_mse
from .pooling import AttentionPooler


class ReconstructionHead(nn.Module):
    """Denoising loss of target latents (B, N, C) conditioned on LM hidden states (B, M, H).

    Args:
        hidden_size: H of the language model.
        latent_channels: C of one latent token.
        grid: (h, w) latent-token grid of the target (N = h * w).
        width, depth, num_heads: denoiser size; the pooler uses the same width and heads.
        num_train_timesteps: cosine schedule length (1000).
    """

    def __init__(self, hidden_size: int, latent_channels: int, grid: tuple[int, int], width: int, depth: int,
                 num_heads: int, num_train_timesteps: int = 1000) -> None:
        super().__init__()
        self.pooler = AttentionPooler(hidden_size, width, grid[0] * grid[1], num_heads)
        self.denoiser = DiTDenoiser(latent_channels, grid, width, depth, num_heads)
        self.schedule = CosineNoiseSchedule(num_train_timesteps)

    def forward(self, memory: torch.Tensor, memory_padding: Optional[torch.Tensor], target: torch.Tensor,
                cell_mask: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None
                ) -> torch.Tensor:
        """Scalar fp32 loss.

        Args:
            memory: (B, M, H) hidden states; memory_padding: (B, M) True = padding.
            target: (B, N, C) clean latents x_0.
            cell_mask: (B, N) True = cell counted in the loss.
            generator: draws t and eps (the step's seeded generator).
        """
        cond = self.pooler(memory, memory_padding)  # (B, N, W)
        x_t, t, eps = self.schedule.sample(target, generator)
        pred = self.denoiser(x_t, t, cond)  # (B, N, C)
        return masked_mse(pred, eps, cell_mask)
