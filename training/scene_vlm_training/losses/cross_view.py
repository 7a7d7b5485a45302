"""ROSS3D's cross-view reconstruction: rebuild masked frames from the other frames.

On every ``mask_every_n_steps``-th optimizer step (4 in ROSS3D), ``mask_ratio`` (25%) of each
eligible sample's frames have their pre-computed image features replaced by one learnable mask
token before the language model (Qwen2-VL still gives those positions their M-RoPE positions),
so the hidden states at a masked frame's positions can only come from the *other* frames. The
denoiser rebuilds that frame's VAE latents from those hidden states. Never on grounding samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import torch

from .reconstruction import ReconstructionHead


def is_mask_step(optimizer_step: int, every_n_steps: int) -> bool:
    """True on optimizer steps 0, n, 2n, ... (``every_n_steps`` = 4 in ROSS3D)."""
    return int(optimizer_step) % int(every_n_steps) == 0


def choose_masked_frames(n_frames: int, ratio: float, generator: torch.Generator) -> list[int]:
    """Sorted indices of ``round(ratio * n)`` frames (at least 1, at most n - 1; none when n < 2)."""
    if n_frames < 2:
        return []
    k = min(n_frames - 1, max(1, int(math.floor(ratio * n_frames + 0.5))))
    perm = torch.randperm(n_frames, generator=generator, device=generator.device).tolist()
    return sorted(perm[:k])


def apply_frame_mask(features: Sequence[torch.Tensor], masked: Sequence[int], mask_token: torch.Tensor
                     ) -> list[torch.Tensor]:
    """Replace whole images' features by the mask token.

    Args:
        features: per image (T_i, H) pre-computed visual features (merger output).
        masked: indices into ``features`` to replace.
        mask_token: (H,) learnable token.
    Returns:
        New list; masked entries are ``mask_token`` broadcast to (T_i, H) (so gradients reach it).
    """
    masked_set = set(int(i) for i in masked)
    out = []
    for i, f in enumerate(features):
        if i in masked_set:
            out.append(mask_token.to(f.dtype).unsqueeze(0).expand(f.shape[0], -1))
        else:
            out.append(f)
    return out


def cross_view_loss(head: ReconstructionHead, frame_hidden: Sequence[torch.Tensor], target_latents: torch.Tensor,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Loss of rebuilding K frames, each from the hidden states at its own (masked) positions.

    Args:
        frame_hidden: K tensors (T_k, H): LM last hidden states at frame k's visual tokens.
        target_latents: (K, N, C) VAE latent tokens of those frames' raw images.
    """
    if len(frame_hidden) != target_latents.shape[0]:
        raise ValueError(f"{len(frame_hidden)} frames of hidden states but {target_latents.shape[0]} targets")
    memory = torch.nn.utils.rnn.pad_sequence(list(frame_hidden), batch_first=True)  # (K, M, H)
    lengths = torch.tensor([h.shape[0] for h in frame_hidden], device=memory.device)
    padding = torch.arange(memory.shape[1], device=memory.device)[None, :] >= lengths[:, None]
    return head(memory, padding, target_latents, None, generator)
