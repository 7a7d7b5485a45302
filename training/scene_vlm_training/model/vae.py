"""The frozen VAE teacher: images -> latent tokens, the reconstruction targets.

A diffusers ``AutoencoderKL`` loaded from a local directory (FLUX.1's VAE in ROSS3D: 16 latent
channels, 8x downsampling; any AutoencoderKL works). It never trains and stays outside the
DeepSpeed engine: the training step calls :meth:`VaeTeacher.encode` under ``no_grad`` and hands the
latents to the model. Latents are ``(mean - shift_factor) * scaling_factor`` of the posterior (the
mean, not a sample, so a target is a fixed function of the image), grouped ``p x p`` into tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


class VaeTeacher:
    """Frozen AutoencoderKL encoder.

    Args:
        vae_dir: a diffusers AutoencoderKL directory (``config.json`` + weights).
        latent_patch: p; p x p latent cells form one token (2 in ROSS3D).
        device: where it runs.
        dtype: its weights' dtype (bf16 on GPUs).
    """

    def __init__(self, vae_dir: str | Path, latent_patch: int = 2, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        from diffusers import AutoencoderKL

        vae_dir = Path(vae_dir)
        config_path = vae_dir / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"{vae_dir} is not a diffusers AutoencoderKL directory (no config.json)")
        cls_name = json.loads(config_path.read_text()).get("_class_name")
        if cls_name != "AutoencoderKL":
            raise ValueError(f"{config_path}: _class_name is {cls_name!r}, expected 'AutoencoderKL'")
        self.vae = AutoencoderKL.from_pretrained(vae_dir, torch_dtype=dtype).to(device).eval()
        self.vae.requires_grad_(False)
        cfg = self.vae.config
        self.downsample = 2 ** (len(cfg.block_out_channels) - 1)
        self.latent_channels = int(cfg.latent_channels)
        self.scaling_factor = float(cfg.scaling_factor)
        self.shift_factor = float(cfg.shift_factor or 0.0)
        self.patch = int(latent_patch)
        self.device, self.dtype = torch.device(device), dtype

    @property
    def token_channels(self) -> int:
        """C of one latent token (latent channels x p^2)."""
        return self.latent_channels * self.patch**2

    def grid(self, image_px: int) -> tuple[int, int]:
        """Token grid (h, w) of a square ``image_px`` image (ValueError unless it divides evenly)."""
        step = self.downsample * self.patch
        if image_px % step:
            raise ValueError(f"target size {image_px} px must be a multiple of {step} (VAE x{self.downsample}, "
                             f"latent patch {self.patch})")
        return image_px // step, image_px // step

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) uint8 RGB -> (B, N, C) float32 latent tokens, row-major cells."""
        x = images.to(self.device, self.dtype) / 127.5 - 1.0
        z = self.vae.encode(x).latent_dist.mean
        z = (z.float() - self.shift_factor) * self.scaling_factor  # (B, c, h, w)
        b, c, h, w = z.shape
        p = self.patch
        z = z.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)  # (B, h/p, w/p, c, p, p)
        return z.reshape(b, (h // p) * (w // p), c * p * p)


def build_tiny_vae(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random AutoencoderKL (x2 downsampling, 4 latent channels) for tests; returns the dir."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(8, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=4, sample_size=32, scaling_factor=0.5, shift_factor=0.1,
    )
    out_dir = Path(out_dir)
    vae.save_pretrained(out_dir)
    return out_dir
