"""ROSS3D's global-view reconstruction: rebuild the raw BEV from the frames' tokens, every step.

The condition is the LM's hidden states at the *frames'* visual tokens only, never at the BEV
image's own tokens (that would be copying the answer). BEV cells with no geometry (black) are
excluded from the loss: the BEV target is averaged over each latent token's pixel block and only
blocks with mean intensity > 0 count. Never on grounding samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F

from .reconstruction import ReconstructionHead


def nonblack_cell_mask(images: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, 3, S, S) uint8/float images -> (B, h*w) bool: True where the cell's mean intensity > 0."""
    x = images.float().mean(dim=1, keepdim=True)  # (B, 1, S, S)
    cells = F.adaptive_avg_pool2d(x, grid)  # (B, 1, h, w)
    return (cells.flatten(1) > 0)


def global_view_loss(head: ReconstructionHead, frames_hidden: Sequence[torch.Tensor], target_latents: torch.Tensor,
                     cell_mask: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Loss of rebuilding each sample's BEV from all its frames' visual-token hidden states.

    Args:
        frames_hidden: B tensors (M_b, H): hidden states at sample b's frame tokens (not the BEV's).
        target_latents: (B, N, C) VAE latent tokens of the raw BEVs.
        cell_mask: (B, N) True = non-black cell (counted).
    """
    if len(frames_hidden) != target_latents.shape[0]:
        raise ValueError(f"{len(frames_hidden)} samples of hidden states but {target_latents.shape[0]} BEV targets")
    memory = torch.nn.utils.rnn.pad_sequence(list(frames_hidden), batch_first=True)  # (B, M, H)
    lengths = torch.tensor([h.shape[0] for h in frames_hidden], device=memory.device)
    padding = torch.arange(memory.shape[1], device=memory.device)[None, :] >= lengths[:, None]
    return head(memory, padding, target_latents, cell_mask, generator)
