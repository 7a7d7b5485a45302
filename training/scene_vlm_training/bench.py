"""``scene-vlm-train bench-step``: training-step time and memory with and without the ROSS3D heads.

Builds the Qwen2-VL-7B architecture (the published config values, random weights: no download)
in bf16 on one GPU, with gradient checkpointing, and a sample shaped like ours: ``n_frames``
frames of 4:3 at ``image_px`` plus the square BEV (about 2.5k tokens at 8 frames, 8.6k at 32).
It times forward + backward + an SGD update (a full AdamW state for 8B parameters does not fit
one 80 GB GPU; the 7B recipe shards it with ZeRO-3 over 8 GPUs) for the text loss alone and for
text + cross-view + BEV losses through a FLUX-sized VAE teacher and ROSS3D's heads (width 1024,
depth 3, 16 heads), cycling the optimizer-step index so 1 in 4 steps masks frames as in training.
ROSS3D reports 1.12x time and 1.02x memory for its heads; ``--arch tiny --device cpu`` is a smoke run.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any, Optional

import torch

from .config import HeadsConfig
from .losses.cross_view import choose_masked_frames, is_mask_step
from .losses.global_view import nonblack_cell_mask
from .model.wrapper import HeadGeometry, ReconTargets, SceneVLM, enable_activation_checkpointing

logger = logging.getLogger(__name__)

#: Qwen2-VL-7B-Instruct's architecture (config.json of the released checkpoint).
QWEN2VL_7B_TEXT = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768,
                       rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
                       rms_norm_eps=1e-6, tie_word_embeddings=False)
QWEN2VL_7B_VISION = dict(depth=32, embed_dim=1280, hidden_size=3584, num_heads=16, mlp_ratio=4, patch_size=14,
                         spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
TINY_TEXT = dict(vocab_size=152064, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=32768,
                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]})
TINY_VISION = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                   spatial_merge_size=2, temporal_patch_size=2)
#: FLUX.1-style VAE: 16 latent channels, x8 (random weights; only its cost matters here).
FLUX_LIKE_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=16,
                     norm_num_groups=32)
TINY_VAE = dict(block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4)
IMAGE_TOKEN, VIDEO_TOKEN, VISION_START, VISION_END = 151655, 151656, 151652, 151653


def _grid(height_px: int, width_px: int, patch: int = 14, merge: int = 2) -> tuple[int, int, int]:
    """Qwen2-VL's (t, h, w) patch grid of an image resized to multiples of patch x merge (28 px)."""
    unit = patch * merge
    return 1, max(unit, round(height_px / unit) * unit) // patch, max(unit, round(width_px / unit) * unit) // patch


def synthetic_batch(config: Any, n_frames: int, image_px: int, device: torch.device, answer_tokens: int = 8,
                    text_tokens: int = 120, view_px: int = 224, bev_px: int = 432) -> dict[str, Any]:
    """One sample shaped like ours: frames (4:3, longer side ``image_px``) + square BEV, as model inputs."""
    grids = [_grid(image_px * 3 // 4, image_px)] * n_frames + [_grid(image_px, image_px)]
    g = torch.Generator().manual_seed(0)
    ids: list[int] = list(torch.randint(0, 150000, (text_tokens // 2,), generator=g).tolist())
    types: list[int] = [0] * len(ids)
    for t, h, w in grids:
        n = t * h * w // 4
        ids += [VISION_START] + [IMAGE_TOKEN] * n + [VISION_END]
        types += [0] + [1] * n + [0]
    tail = torch.randint(0, 150000, (text_tokens // 2 + answer_tokens,), generator=g).tolist()
    ids += tail
    types += [0] * len(tail)
    input_ids = torch.tensor([ids], device=device)
    labels = torch.full_like(input_ids, -100)
    labels[0, -answer_tokens:] = input_ids[0, -answer_tokens:]
    grid_thw = torch.tensor(grids, device=device)
    n_patches = int(grid_thw.prod(dim=1).sum())
    patch_dim = 3 * 2 * 14 * 14
    return {
        "input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels,
        "mm_token_type_ids": torch.tensor([types], device=device),
        "pixel_values": torch.randn(n_patches, patch_dim, generator=g).to(device, torch.bfloat16),
        "image_grid_thw": grid_thw, "image_counts": [len(grids)], "recon": [True],
        "view_targets": [torch.randint(0, 256, (n_frames, 3, view_px, view_px), generator=g,
                                       dtype=torch.uint8).to(device)],
        "bev_target": torch.randint(0, 256, (1, 3, bev_px, bev_px), generator=g, dtype=torch.uint8).to(device),
    }


def _vae(spec: dict, device: torch.device, dtype: torch.dtype) -> Any:
    from diffusers import AutoencoderKL

    n = len(spec["block_out_channels"])
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                        up_block_types=("UpDecoderBlock2D",) * n, **spec).to(device, dtype).eval()
    vae.requires_grad_(False)
    return vae


def _encode(vae: Any, images: torch.Tensor, patch: int = 2) -> torch.Tensor:
    with torch.no_grad():
        z = vae.encode(images.to(vae.dtype) / 127.5 - 1.0).latent_dist.mean.float()
    b, c, h, w = z.shape
    z = z[:, :, : h // patch * patch, : w // patch * patch]
    h, w = h // patch, w // patch
    return z.reshape(b, c, h, patch, w, patch).permute(0, 2, 4, 1, 3, 5).reshape(b, h * w, c * patch * patch)


def _targets(batch: dict[str, Any], vae: Any, heads: HeadsConfig, step: int, gen: torch.Generator) -> ReconTargets:
    views = batch["view_targets"][0]
    masked = choose_masked_frames(views.shape[0], heads.mask_ratio, gen) if is_mask_step(step, 4) else []
    view_latents = _encode(vae, views[masked] if masked else views[:1])
    bev_latents = _encode(vae, batch["bev_target"])
    side = int(round(bev_latents.shape[1] ** 0.5))
    return ReconTargets([masked], view_latents, bev_latents, nonblack_cell_mask(batch["bev_target"], (side, side)))


def bench_step(arch: str = "qwen2-vl-7b", n_frames: int = 8, image_px: int = 512, steps: int = 5,
               device: str = "cuda", out: Optional[Path] = None, warmup: int = 2) -> dict[str, Any]:
    """Measure; returns (and writes to ``out`` as JSON) the figures. ValueError without the device."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("bench-step needs a CUDA GPU for the 7B architecture (none is visible); "
                         "use --arch tiny --device cpu for a smoke run")
    big = arch == "qwen2-vl-7b"
    dtype = torch.bfloat16 if (big or dev.type == "cuda") else torch.float32
    text, vision, vae_spec = (QWEN2VL_7B_TEXT, QWEN2VL_7B_VISION, FLUX_LIKE_VAE) if big else (
        TINY_TEXT, TINY_VISION, TINY_VAE)
    config = Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=IMAGE_TOKEN,
                           video_token_id=VIDEO_TOKEN, vision_start_token_id=VISION_START,
                           vision_end_token_id=VISION_END)
    attn = "sdpa"
    if big and dev.type == "cuda":
        try:
            import flash_attn  # noqa: F401

            attn = "flash_attention_2"
        except ImportError:
            logger.warning("flash-attn is not installed; benchmarking with sdpa")
    torch.manual_seed(0)
    with torch.device(dev):
        hf = Qwen2VLForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation=attn)
    hf.model.visual.requires_grad_(False)
    enable_activation_checkpointing(hf)
    hf.train()
    heads = HeadsConfig(vae_dir="-", width=1024 if big else 32, depth=3 if big else 1, num_heads=16 if big else 2)
    vae = _vae(vae_spec, dev, dtype)
    # ROSS3D's target sizes: views at 224 px (14 x 14 tokens after x8 and 2 x 2), the BEV at 432 (27 x 27).
    view_px, bev_px = (224, 432) if big else (32, 64)
    down = 2 ** (len(vae_spec["block_out_channels"]) - 1) * 2
    geometry = HeadGeometry(vae_spec["latent_channels"] * 4, (view_px // down,) * 2, (bev_px // down,) * 2)
    model = SceneVLM(hf, heads, geometry).to(dev, dtype)
    batch = synthetic_batch(config, n_frames, image_px, dev, view_px=view_px, bev_px=bev_px)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-6)

    def run(with_heads: bool) -> tuple[list[float], float]:
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        times = []
        for step in range(warmup + steps):
            gen = torch.Generator().manual_seed(step)
            t0 = time.perf_counter()
            targets = _targets(batch, vae, heads, step, gen) if with_heads else None
            with torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32):
                loss, _ = model(batch, targets, gen)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if step >= warmup:
                times.append(time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")
        return times, peak

    t_text, m_text = run(False)
    t_heads, m_heads = run(True)
    figures = {
        "arch": arch, "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "dtype": str(dtype).replace("torch.", ""), "attention": attn, "gradient_checkpointing": True,
        "n_frames": n_frames, "image_px": image_px, "tokens_per_sample": int(batch["input_ids"].shape[1]),
        "trainable_params_M": round(sum(p.numel() for p in params) / 1e6, 1),
        "steps_timed": steps, "step_s_text_only": round(statistics.median(t_text), 4),
        "step_s_with_heads": round(statistics.median(t_heads), 4),
        "time_ratio": round(statistics.median(t_heads) / statistics.median(t_text), 3),
        "peak_mem_gib_text_only": round(m_text, 2), "peak_mem_gib_with_heads": round(m_heads, 2),
        "mem_ratio": round(m_heads / m_text, 3) if dev.type == "cuda" else None,
        "optimizer": "SGD (timing only; the recipe uses AdamW under ZeRO-3)",
    }
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(figures, indent=1) + "\n")
    return figures
