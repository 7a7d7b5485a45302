"""``scene-vlm-train export``: a fit checkpoint -> a model directory the node loads as is.

The output is a standard Hugging Face Qwen2-VL directory (``config.json``, ``model.safetensors``
without any reconstruction-head key, the processor used in training with its chat template,
``generation_config.json``) plus ``scene_vlm_export.json``: frames per prompt, image size, prompt
profile and a hash of its templates (the prompt version), the training config and data manifest.
LoRA adapters are merged into the weights. The heads (mask token, cross-view and BEV heads) go to
a separate ``<out>-heads/`` directory for continued training; the node never sees them.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from . import SAMPLE_FORMAT_VERSION
from .config import FitConfig, load_config, to_dict
from .fit import read_checkpoint_marker
from .model.wrapper import HEAD_PREFIXES

logger = logging.getLogger(__name__)

# The node reads this file (scene_vlm_ros.vlm.prompts.export_prompt_settings): one name, one version hash.
from scene_vlm_ros.vlm.prompts import EXPORT_METADATA, prompt_version  # noqa: E402, F401


def _load_weights(ckpt: Path, cfg: FitConfig) -> Any:
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(ckpt / "hf_config", local_files_only=True)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    state = load_file(str(ckpt / "model_state.safetensors"))
    heads = [k for k in state if k.startswith(HEAD_PREFIXES)]
    if heads:
        raise ValueError(f"{ckpt}: model_state.safetensors holds head keys ({heads[:2]}); the checkpoint is corrupt")
    if cfg.model.lora.enabled:
        from peft import LoraConfig, get_peft_model

        lora = cfg.model.lora
        pattern = r".*language_model.*\.(" + "|".join(lora.target_modules) + r")$"
        peft_model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                      target_modules=pattern, bias="none"))
        missing, unexpected = model.load_state_dict(state, strict=False)
        model = peft_model.merge_and_unload()
    else:
        missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ValueError(f"{ckpt}: weights do not fit the model config ({len(missing)} missing, e.g. {missing[:2]}; "
                         f"{len(unexpected)} unexpected, e.g. {unexpected[:2]})")
    return model


def export_checkpoint(ckpt: str | Path, out: str | Path) -> Path:
    """Write the node-loadable model directory ``out`` (and ``<out>-heads/``); returns ``out``.

    Raises:
        CheckpointError: ``ckpt`` is not a complete checkpoint of ours.
        FileExistsError: ``out`` exists and is not empty.
    """
    ckpt, out = Path(ckpt), Path(out)
    meta = read_checkpoint_marker(ckpt)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"export directory {out} exists and is not empty; choose a new one")
    cfg = load_config(FitConfig, ckpt / "config.yaml")
    manifest = json.loads((ckpt / "data_manifest.json").read_text())
    model = _load_weights(ckpt, cfg)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    from transformers import AutoProcessor

    AutoProcessor.from_pretrained(ckpt / "processor", local_files_only=True).save_pretrained(out)
    _check_no_head_keys(out)
    metadata = {
        "format": "scene_vlm_ros.model", "format_version": 1,
        "n_frames": int(manifest["n_frames"]), "image_size_px": int(manifest["image_size_px"]),
        "prompt_profile": manifest["prompt_profile"], "prompt_version": prompt_version(manifest["prompt_profile"]),
        "sample_format_version": SAMPLE_FORMAT_VERSION, "step": int(meta["step"]),
        "base_model_dir": meta.get("base_model_dir"), "config": to_dict(cfg), "data_manifest": manifest,
    }
    (out / EXPORT_METADATA).write_text(json.dumps(metadata, indent=1, sort_keys=True) + "\n")
    if (ckpt / "heads.safetensors").is_file():
        heads_dir = out.parent / f"{out.name}-heads"
        heads_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ckpt / "heads.safetensors", heads_dir / "heads.safetensors")
        shutil.copy2(ckpt / "config.yaml", heads_dir / "config.yaml")
    logger.info("exported step %d of %s to %s", meta["step"], ckpt, out)
    return out


def _check_no_head_keys(out: Path) -> None:
    from safetensors import safe_open

    for path in sorted(out.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            bad = [k for k in f.keys() if k.startswith(HEAD_PREFIXES)]
        if bad:
            raise RuntimeError(f"{path} holds reconstruction-head keys {bad[:2]}; refusing to export")
