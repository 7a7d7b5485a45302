"""Text loss on the answer tokens only (labels are IGNORE_INDEX everywhere else).

The LM head is applied only at the positions that predict a supervised token, so a 8k-token
prompt with a 5-token answer never materialises an (L, vocab) logits tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scene_vlm_ros.vlm.model_inputs import IGNORE_INDEX


def answer_token_loss(hidden: torch.Tensor, labels: torch.Tensor, lm_head: nn.Module
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean next-token cross-entropy (fp32) over supervised tokens, and their count.

    Args:
        hidden: (B, L, H) last hidden states of the language model.
        labels: (B, L) token ids to predict, :data:`IGNORE_INDEX` where unsupervised; position t is
            predicted from the hidden state at t - 1.
        lm_head: maps (N, H) -> (N, V).

    Returns:
        ``(loss, n_tokens)``: a scalar (0 with a graph through ``hidden`` when nothing is
        supervised, so every rank runs the same backward) and an int64 scalar.
    """
    if hidden.shape[:2] != labels.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} and labels {tuple(labels.shape)} disagree on (B, L)")
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX  # (B, L-1)
    n = keep.sum()
    h = hidden[:, :-1][keep]  # (N, H)
    if h.shape[0] == 0:
        return hidden.sum() * 0.0, n
    logits = lm_head(h).float()  # (N, V)
    return F.cross_entropy(logits, targets[keep]), n
