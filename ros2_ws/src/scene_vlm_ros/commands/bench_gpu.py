"""GPU latency of one grounding query at Qwen2-VL-7B scale (random weights, real architecture).

No checkpoint can be downloaded where this project is built and tested, yet the number users care
about is how long a ``/scene_query`` takes with a 7B model on their GPU. Latency depends on the
architecture and the token counts, not on the weight values, so this builds Qwen2-VL-7B-Instruct's
architecture from its public configuration with random bf16 weights and times the same work a
real query does: image preprocessing of N marked frames plus one BEV (longer side capped at
512 px like GPT4Scene), the vision tower, prefill of the whole prompt and a short greedy answer.

The token ids of the text are random (the tokenizer is not part of the measured path and costs
well under a millisecond); the image placeholder, vision start/end ids and ``mm_token_type_ids``
are laid out exactly as Qwen2-VL's processor lays them out, so M-RoPE and the vision merge run
for real.

Run: ``python -m scene_vlm_ros.commands.bench_gpu [--n 20] [--frames 8] [--image-px 512] [--json out.json]``.
Without CUDA it prints why it skipped and exits 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..vlm.backends.transformers_backend import cap_image_side

logger = logging.getLogger(__name__)

#: Qwen2-VL-7B-Instruct's published config.json values (text decoder and vision tower).
QWEN2VL_7B_TEXT = {
    "vocab_size": 152064,
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "max_position_embeddings": 32768,
    "max_window_layers": 28,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}
QWEN2VL_7B_VISION = {
    "depth": 32,
    "embed_dim": 1280,
    "hidden_size": 3584,
    "num_heads": 16,
    "mlp_ratio": 4,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "hidden_act": "quick_gelu",
}
QWEN2VL_7B_TOKENS = {
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
}
#: Qwen2-VL-7B-Instruct's preprocessor_config.json pixel budget per image.
QWEN2VL_MIN_PIXELS = 56 * 56
QWEN2VL_MAX_PIXELS = 28 * 28 * 1280

# Rough text lengths of our grounding prompt (system line, frame/BEV captions, question, chat tags).
_PROMPT_PREFIX_TOKENS = 48
_PROMPT_SUFFIX_TOKENS = 40


def qwen2vl_7b_config() -> Any:
    """A ``transformers.Qwen2VLConfig`` with Qwen2-VL-7B-Instruct's sizes (8.3B parameters)."""
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(text_config=dict(QWEN2VL_7B_TEXT), vision_config=dict(QWEN2VL_7B_VISION), **QWEN2VL_7B_TOKENS)


def synthetic_views(
    frames: int, frame_hw: tuple[int, int] = (480, 640), bev_px: int = 512, seed: int = 0
) -> list[np.ndarray]:
    """``frames`` camera-sized RGB images plus one square BEV, uint8 (H, W, 3); content is noise.

    Content does not change the cost; sizes do: 640x480 frames and a square BEV, as the node sends.
    """
    rng = np.random.default_rng(seed)
    views = [rng.integers(0, 256, (*frame_hw, 3), dtype=np.uint8) for _ in range(frames)]
    views.append(rng.integers(0, 256, (bev_px, bev_px, 3), dtype=np.uint8))
    return views


def build_grounding_inputs(
    views: list[np.ndarray], image_px: int, image_processor: Any, config: Any, seed: int = 0
) -> dict[str, Any]:
    """Processor-equivalent model inputs for one grounding prompt over ``views`` (CPU tensors).

    Returns ``input_ids`` / ``attention_mask`` / ``mm_token_type_ids`` (1, L), ``pixel_values``
    (patches, 3*2*14*14) and ``image_grid_thw`` (n_views, 3). Each image contributes
    ``<|vision_start|>`` + grid_t*grid_h*grid_w/merge^2 image tokens + ``<|vision_end|>``.
    """
    import torch
    from PIL import Image

    pil = [Image.fromarray(cap_image_side(view, image_px), mode="RGB") for view in views]
    pixels = image_processor(images=pil, return_tensors="pt")
    grid = pixels["image_grid_thw"]
    merge = int(config.vision_config.spatial_merge_size) ** 2
    rng = np.random.default_rng(seed)
    text_vocab = int(config.text_config.bos_token_id)  # ids below the special-token block are plain text

    def text(n: int) -> list[int]:
        return rng.integers(0, text_vocab, n).tolist()

    ids: list[int] = text(_PROMPT_PREFIX_TOKENS)
    for thw in grid.tolist():
        n_tokens = int(np.prod(thw)) // merge
        ids += [config.vision_start_token_id] + [config.image_token_id] * n_tokens + [config.vision_end_token_id]
        ids += text(6)  # "Frame 3:" style caption between images
    ids += text(_PROMPT_SUFFIX_TOKENS)
    input_ids = torch.tensor([ids], dtype=torch.long)
    mm_token_type_ids = (input_ids == config.image_token_id).long()
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "mm_token_type_ids": mm_token_type_ids,
        "pixel_values": pixels["pixel_values"],
        "image_grid_thw": grid,
    }


def random_model(config: Any, device: Any, dtype: Any, seed: int = 0) -> Any:
    """A randomly initialised ``Qwen2VLForConditionalGeneration`` for ``config``, built on ``device`` in eval mode.

    Built directly on the target device in the target dtype: at 7B scale the random parameters
    never touch host memory (16 GB in bf16).
    """
    import torch
    from transformers import Qwen2VLForConditionalGeneration

    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2VLForConditionalGeneration._from_config(config, dtype=dtype)
    return model.eval()


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def time_grounding_queries(
    model: Any,
    config: Any,
    image_processor: Any,
    device: Any,
    *,
    n: int,
    frames: int,
    image_px: int,
    new_tokens: int,
    warmup: int = 2,
) -> dict[str, Any]:
    """Time ``warmup + n`` grounding queries end to end on ``model``; statistics over the last ``n``.

    End to end = image preprocessing + host-to-device copy + ``generate`` (vision tower, prefill,
    ``new_tokens`` greedy decoding steps). Prefill alone (one forward over the prompt) is timed
    separately after each query. Works on any device; CUDA is synchronised around each timer.

    Returns:
        ``n``, ``frames``, ``images``, ``image_px``, ``prompt_tokens``, ``image_tokens``, ``new_tokens``,
        and milliseconds: ``p50_ms``, ``p95_ms``, ``mean_ms``, ``preprocess_p50_ms``, ``prefill_p50_ms``.
    """
    import torch
    from transformers import GenerationConfig

    def sync() -> None:
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)

    eos = config.text_config.eos_token_id
    generation_config = GenerationConfig(
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,  # random weights might emit EOS early; force the same work every run
        do_sample=False,
        num_beams=1,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    views = synthetic_views(frames)
    totals_ms: list[float] = []
    preprocess_ms: list[float] = []
    prefill_ms: list[float] = []
    prompt_len = image_tokens = 0
    for run in range(warmup + n):
        sync()
        t0 = time.perf_counter()
        inputs = build_grounding_inputs(views, image_px, image_processor, config, seed=run)
        inputs = {k: v.to(device) for k, v in inputs.items()}
        sync()
        t1 = time.perf_counter()
        with torch.inference_mode():
            output = model.generate(**inputs, generation_config=generation_config)
        sync()
        t2 = time.perf_counter()
        with torch.inference_mode():
            model(**inputs, use_cache=False, logits_to_keep=1)
        sync()
        t3 = time.perf_counter()
        prompt_len = int(inputs["input_ids"].shape[1])
        image_tokens = int(inputs["mm_token_type_ids"].sum())
        if int(output.shape[1]) - prompt_len != new_tokens:
            raise RuntimeError(f"expected {new_tokens} new tokens, got {int(output.shape[1]) - prompt_len}")
        if run >= warmup:
            totals_ms.append((t2 - t0) * 1e3)
            preprocess_ms.append((t1 - t0) * 1e3)
            prefill_ms.append((t3 - t2) * 1e3)
    return {
        "n": n,
        "frames": frames,
        "images": frames + 1,
        "image_px": image_px,
        "prompt_tokens": prompt_len,
        "image_tokens": image_tokens,
        "new_tokens": new_tokens,
        "p50_ms": round(_percentile(totals_ms, 50), 2),
        "p95_ms": round(_percentile(totals_ms, 95), 2),
        "mean_ms": round(float(np.mean(totals_ms)), 2),
        "preprocess_p50_ms": round(_percentile(preprocess_ms, 50), 2),
        "prefill_p50_ms": round(_percentile(prefill_ms, 50), 2),
    }


def bench_gpu_latency(n: int = 20, frames: int = 8, image_px: int = 512, new_tokens: int = 8, warmup: int = 2) -> dict:
    """Time ``n`` end-to-end grounding queries on a random-weight Qwen2-VL-7B (bf16, CUDA).

    Args:
        n: timed queries (after ``warmup`` untimed ones).
        frames: marked video frames per query (640x480 each); one 512x512 BEV is added.
        image_px: longer-side cap for every image (GPT4Scene: 512).
        new_tokens: generated tokens per query, forced (``min_new_tokens``) so runs are comparable.

    Returns:
        ``{"skipped": True, "reason": ...}`` without CUDA; otherwise latency statistics in
        milliseconds (``p50_ms``, ``p95_ms``, ``mean_ms``, ``preprocess_p50_ms``, ``prefill_p50_ms``),
        prompt sizes and ``peak_mem_gb``, the GPU name and library versions.
    """
    if n < 1 or frames < 0 or image_px < 28 or new_tokens < 1 or warmup < 0:
        raise ValueError("need n >= 1, frames >= 0, image_px >= 28, new_tokens >= 1, warmup >= 0")
    try:
        import torch
        import transformers
        from transformers import Qwen2VLImageProcessor
    except ImportError as exc:
        return {"skipped": True, "reason": f"torch/transformers not importable: {exc}"}
    if not torch.cuda.is_available():
        return {"skipped": True, "reason": "CUDA is not available; run this on a GPU host (bf16 needs ~17 GB)"}

    device = torch.device("cuda:0")
    config = qwen2vl_7b_config()
    started = time.monotonic()
    model = random_model(config, device, torch.bfloat16)
    build_s = time.monotonic() - started
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("built Qwen2-VL-7B architecture (%.2fB params) in %.1f s", n_params / 1e9, build_s)

    image_processor = Qwen2VLImageProcessor(min_pixels=QWEN2VL_MIN_PIXELS, max_pixels=QWEN2VL_MAX_PIXELS)
    timings = time_grounding_queries(
        model,
        config,
        image_processor,
        device,
        n=n,
        frames=frames,
        image_px=image_px,
        new_tokens=new_tokens,
        warmup=warmup,
    )
    result = {
        "skipped": False,
        "model": "Qwen2-VL-7B-Instruct architecture, random weights",
        "params_b": round(n_params / 1e9, 3),
        "dtype": "bfloat16",
        "attn_implementation": str(getattr(model.config, "_attn_implementation", "unknown")),
        "gpu": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        **timings,
        "peak_mem_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2),
        "build_s": round(build_s, 1),
    }
    del model
    torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; prints the result as JSON (and writes it to ``--json`` if given)."""
    parser = argparse.ArgumentParser(
        prog="python -m scene_vlm_ros.commands.bench_gpu", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--n", type=int, default=20, help="timed queries")
    parser.add_argument("--frames", type=int, default=8, help="marked frames per query (plus one BEV)")
    parser.add_argument("--image-px", type=int, default=512, help="longer-side cap per image, px")
    parser.add_argument("--new-tokens", type=int, default=8, help="generated tokens per query")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up queries")
    parser.add_argument("--json", type=Path, default=None, help="also write the result to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = bench_gpu_latency(
        n=args.n, frames=args.frames, image_px=args.image_px, new_tokens=args.new_tokens, warmup=args.warmup
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    if result.get("skipped"):
        print(f"bench_gpu skipped: {result['reason']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
