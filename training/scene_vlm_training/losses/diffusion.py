"""The diffusion objective of the reconstruction heads: cosine schedule, epsilon prediction, fp32 MSE.

The schedule is diffusers' ``DDPMScheduler`` with ``beta_schedule="squaredcos_cap_v2"`` (the
cosine schedule of Nichol & Dhariwal) over 1000 training steps, as in ROSS3D.
"""

from __future__ import annotations

from typing import Optional

import torch


class CosineNoiseSchedule:
    """Forward noising ``x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps`` with the cosine ``a_t``.

    Args:
        num_train_timesteps: T (1000 in ROSS3D).
    """

    def __init__(self, num_train_timesteps: int = 1000) -> None:
        from diffusers import DDPMScheduler

        self.scheduler = DDPMScheduler(
            num_train_timesteps=int(num_train_timesteps), beta_schedule="squaredcos_cap_v2",
            prediction_type="epsilon",
        )
        self.num_train_timesteps = int(num_train_timesteps)

    def sample(self, x0: torch.Tensor, generator: Optional[torch.Generator] = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw ``t`` (B,) and ``eps`` like ``x0`` (B, N, C); return ``(x_t, t, eps)``.

        Draws happen on the generator's device (CPU generator -> CPU draws, then moved) so the same
        seed gives the same noise whatever the training device.
        """
        gen_device = generator.device if generator is not None else torch.device("cpu")
        t = torch.randint(0, self.num_train_timesteps, (x0.shape[0],), generator=generator, device=gen_device)
        eps = torch.randn(x0.shape, generator=generator, device=gen_device, dtype=torch.float32)
        t, eps = t.to(x0.device), eps.to(x0.device)
        x_t = self.scheduler.add_noise(x0.float(), eps, t)
        return x_t, t, eps


def masked_mse(pred: torch.Tensor, target: torch.Tensor, cell_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Element-wise MSE in fp32, averaged over the kept cells.

    Args:
        pred, target: (B, N, C).
        cell_mask: (B, N) bool, True = counted; None = all. A batch with no kept cell gives 0 with
            a graph through ``pred``.
    """
    err = (pred.float() - target.float()) ** 2  # (B, N, C)
    if cell_mask is None:
        return err.mean()
    w = cell_mask.to(err.dtype).unsqueeze(-1)  # (B, N, 1)
    denom = w.sum() * err.shape[-1]
    if denom.item() == 0:
        return (err * 0.0).sum()
    return (err * w).sum() / denom
