"""One training step: seeded randomness, VAE targets, the model's ``(loss, loss_dict)``.

All randomness of a micro-step (which frames are masked, diffusion timesteps and noise, dropout)
is derived from ``(seed, optimizer_step, micro_step, rank)``, so a run resumed from a checkpoint
at step s repeats the uninterrupted run's steps s, s+1, ... exactly.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from .config import HeadsConfig
from .losses.cross_view import choose_masked_frames, is_mask_step
from .losses.global_view import nonblack_cell_mask
from .model.vae import VaeTeacher
from .model.wrapper import ReconTargets, SceneVLM


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (numpy SeedSequence: well mixed, platform independent)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


def step_generator(seed: int, optimizer_step: int, micro_step: int, rank: int = 0) -> torch.Generator:
    """CPU generator for one micro-step; also reseeds torch's global RNG (dropout) from the same parts."""
    s = derive_seed(seed, optimizer_step, micro_step, rank)
    torch.manual_seed(s)
    return torch.Generator(device="cpu").manual_seed(s)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors (and lists of tensors) of a collated batch moved to ``device``."""
    out: dict[str, Any] = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            out[k] = v.to(device)
        elif isinstance(v, list) and v and torch.is_tensor(v[0]):
            out[k] = [t.to(device) for t in v]
        else:
            out[k] = v
    return out


def recon_targets(batch: dict[str, Any], teacher: VaeTeacher, heads: HeadsConfig, optimizer_step: int,
                  generator: torch.Generator, force_mask: bool = False) -> ReconTargets:
    """Choose the masked frames (only on mask steps, only for reconstruction samples) and encode targets.

    Shapes: ``batch["view_targets"]`` B tensors (F_b, 3, S, S) uint8; ``batch["bev_target"]`` (B, 3, S', S').
    """
    masking = force_mask or is_mask_step(optimizer_step, heads.mask_every_n_steps)
    masked: list[list[int]] = []
    for views, recon in zip(batch["view_targets"], batch["recon"]):
        masked.append(choose_masked_frames(int(views.shape[0]), heads.mask_ratio, generator)
                      if masking and recon else [])
    chosen = [views[f] for views, fs in zip(batch["view_targets"], masked) for f in fs]
    if not chosen:  # a stand-in target: the view head still runs, with weight 0
        chosen = [batch["view_targets"][0][0]]
    view_latents = teacher.encode(torch.stack(chosen))
    bev_latents = teacher.encode(batch["bev_target"])
    side = int(round(bev_latents.shape[1] ** 0.5))
    cells = nonblack_cell_mask(batch["bev_target"], (side, side)).to(bev_latents.device)
    return ReconTargets(masked, view_latents, bev_latents, cells)


def training_step(model: SceneVLM, teacher: Optional[VaeTeacher], batch: dict[str, Any], heads: HeadsConfig,
                  optimizer_step: int, generator: torch.Generator, force_mask: bool = False
                  ) -> tuple[torch.Tensor, dict[str, float]]:
    """``(loss, loss_dict)`` of one micro-batch; text only when ``teacher`` is None (heads disabled)."""
    targets = None
    if teacher is not None and heads.enabled:
        targets = recon_targets(batch, teacher, heads, optimizer_step, generator, force_mask)
    return model(batch, targets, generator)


@torch.no_grad()
def probe_losses(model: SceneVLM, teacher: VaeTeacher, batch: dict[str, Any], heads: HeadsConfig,
                 seed: int = 1234) -> dict[str, float]:
    """Losses on a fixed batch with fixed masks, timesteps and noise (masking forced on).

    The same probe before and after training measures whether each loss went down, free of the
    noise that random timesteps add to single training-step losses.
    """
    was_training = model.training
    model.eval()
    try:
        _, logs = training_step(model, teacher, batch, heads, 0, step_generator(seed, 0, 0), force_mask=True)
    finally:
        model.train(was_training)
    return logs
