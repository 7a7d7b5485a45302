"""The Hugging Face Qwen2-VL model wrapped (not forked) with ROSS3D's training heads.

:class:`SceneVLM` holds the unmodified ``Qwen2VLForConditionalGeneration`` (or Qwen2.5-VL) as
``self.hf`` plus the training-only parts: the learnable mask token and two
:class:`~scene_vlm_training.losses.reconstruction.ReconstructionHead` (cross-view, BEV). Its forward
computes the image features with the (frozen) vision tower, swaps masked frames' features for the
mask token, runs the language model on the pre-computed features (Qwen2-VL's
``mm_encoder_outputs``, so M-RoPE positions are unchanged) and returns ``(loss, loss_dict)``.
Export saves only ``self.hf``: no head key ever reaches the node's checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..config import HeadsConfig, ModelConfig
from ..losses.cross_view import apply_frame_mask, cross_view_loss
from ..losses.global_view import global_view_loss
from ..losses.reconstruction import ReconstructionHead
from ..losses.text import answer_token_loss

#: State-dict prefixes of the training-only parts (saved as the heads file, never exported).
HEAD_PREFIXES = ("mask_token", "view_head.", "bev_head.")


@dataclass(frozen=True)
class HeadGeometry:
    """Latent-token shapes of the reconstruction targets: channels C and (h, w) grids."""

    token_channels: int
    view_grid: tuple[int, int]
    bev_grid: tuple[int, int]


@dataclass
class ReconTargets:
    """What the training step computed with the VAE teacher for one micro-batch.

    ``masked``: per sample, indices of its frames whose features are masked (empty: none).
    ``view_latents``: (K, N_view, C) latents of the K masked frames in (sample, frame) order, or of
    one stand-in frame when K = 0 (the head then runs with weight 0). ``bev_latents``: (B, N_bev, C);
    ``bev_cells``: (B, N_bev) bool non-black cells.
    """

    masked: list[list[int]]
    view_latents: torch.Tensor
    bev_latents: torch.Tensor
    bev_cells: torch.Tensor


def enable_activation_checkpointing(hf: Any) -> None:
    """Recompute the decoder layers in backward (non-reentrant: works with a frozen vision tower)."""
    kwargs = {"use_reentrant": False}
    if hasattr(hf, "activation_checkpointing_enable"):  # transformers >= 5.x
        hf.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def check_base_model_dir(model_dir: str | Path) -> None:
    """ValueError (prefixed ``model.base_model_dir``) unless the node's backend would accept the directory."""
    from scene_vlm_ros.vlm.backends.transformers_backend import inspect_checkpoint
    from scene_vlm_ros.vlm.types import ModelUnavailableError

    try:
        inspect_checkpoint(Path(model_dir))
    except ModelUnavailableError as exc:
        raise ValueError(f"model.base_model_dir: {exc}") from exc


def load_hf_model(model_cfg: ModelConfig, dtype: torch.dtype = torch.float32) -> Any:
    """The Qwen2-VL-family model from ``model_cfg.base_model_dir`` (local files only), vision frozen if asked."""
    from transformers import AutoModelForImageTextToText

    check_base_model_dir(model_cfg.base_model_dir)
    hf = AutoModelForImageTextToText.from_pretrained(
        model_cfg.base_model_dir, local_files_only=True, dtype=dtype, attn_implementation=model_cfg.attn_implementation,
    )
    if model_cfg.freeze_vision:
        # GPT4Scene freezes the whole visual module (ViT + merger); the LM trains.
        hf.model.visual.requires_grad_(False)
    if model_cfg.gradient_checkpointing:
        enable_activation_checkpointing(hf)
    if model_cfg.lora.enabled:
        from peft import LoraConfig, get_peft_model

        lora = model_cfg.lora
        # Only the language model's projections: the regex keeps the (frozen) vision tower out.
        pattern = r".*language_model.*\.(" + "|".join(lora.target_modules) + r")$"
        get_peft_model(hf, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                      target_modules=pattern, bias="none"))
        # get_peft_model injects the adapters into ``hf`` in place (and freezes the rest).
    return hf


class SceneVLM(nn.Module):
    """Qwen2-VL + mask token + cross-view and BEV reconstruction heads.

    Args:
        hf: the Hugging Face model (``...ForConditionalGeneration``).
        heads: head sizes and loss weights.
        geometry: target latent shapes (from the VAE teacher and the data's target sizes).
    """

    def __init__(self, hf: Any, heads: HeadsConfig, geometry: HeadGeometry) -> None:
        super().__init__()
        self.hf = hf
        self.heads_cfg = heads
        self.geometry = geometry
        hidden = int(hf.config.text_config.hidden_size)
        self.mask_token = nn.Parameter(torch.randn(hidden) * 0.02)
        kw = dict(width=heads.width, depth=heads.depth, num_heads=heads.num_heads,
                  num_train_timesteps=heads.num_train_timesteps)
        self.view_head = ReconstructionHead(hidden, geometry.token_channels, geometry.view_grid, **kw)
        self.bev_head = ReconstructionHead(hidden, geometry.token_channels, geometry.bev_grid, **kw)

    # ---------------------------------------------------------------- helpers

    @property
    def vision_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.hf.model.visual.parameters())

    def image_features(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> list[torch.Tensor]:
        """Per image (T_i, H) features after the merger (no graph when the vision tower is frozen)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.vision_frozen):
            out = self.hf.model.get_image_features(pixel_values, image_grid_thw, return_dict=True)
        return list(out.pooler_output)

    def image_token_spans(self, input_ids: torch.Tensor, image_counts: list[int], image_tokens: list[int]
                          ) -> list[list[torch.Tensor]]:
        """Per sample, per image: the sequence positions (T_i,) of that image's placeholder tokens."""
        image_token_id = int(self.hf.config.image_token_id)
        spans: list[list[torch.Tensor]] = []
        k = 0
        for b, n_img in enumerate(image_counts):
            pos = (input_ids[b] == image_token_id).nonzero(as_tuple=True)[0]
            sizes = image_tokens[k:k + n_img]
            if int(sum(sizes)) != int(pos.numel()):
                raise ValueError(f"sample {b}: {pos.numel()} image placeholders but its images give {sum(sizes)}")
            spans.append(list(torch.split(pos, sizes)))
            k += n_img
        return spans

    # ---------------------------------------------------------------- forward

    def forward(self, batch: dict[str, Any], targets: Optional[ReconTargets] = None,
                generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, dict[str, float]]:
        """``(loss, loss_dict)`` of one micro-batch (see :mod:`scene_vlm_training.data.dataset` for keys).

        ``targets`` None: text loss only (heads disabled). Otherwise both heads always run; a loss
        with nothing to rebuild (no masked frame, only grounding samples) runs with weight 0 so
        every rank's backward touches the same parameters (DDP, ZeRO).
        """
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        features = self.image_features(batch["pixel_values"], batch["image_grid_thw"])
        image_counts: list[int] = batch["image_counts"]
        flat_masked: list[int] = []
        if targets is not None:
            k = 0
            for b, n_img in enumerate(image_counts):
                flat_masked.extend(k + f for f in targets.masked[b])
                k += n_img
        features = apply_frame_mask(features, flat_masked, self.mask_token)
        out = self.hf.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
            mm_token_type_ids=batch["mm_token_type_ids"], image_grid_thw=batch["image_grid_thw"],
            mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=tuple(features))},
        )
        hidden = out.last_hidden_state  # (B, L, H)
        text, n_tokens = answer_token_loss(hidden, batch["labels"], self.hf.lm_head)
        logs = {"text": float(text.detach()), "answer_tokens": float(n_tokens)}
        if targets is None:
            return text, logs

        spans = self.image_token_spans(batch["input_ids"], image_counts, [int(f.shape[0]) for f in features])
        h = self.heads_cfg
        # Cross-view: each masked frame from the hidden states at its own (masked) positions.
        view_hidden = [hidden[b, spans[b][f]] for b in range(len(spans)) for f in targets.masked[b]]
        view_weight = h.w_view if view_hidden else 0.0
        if not view_hidden:
            view_hidden = [hidden[0, spans[0][0]]]
        view = cross_view_loss(self.view_head, view_hidden, targets.view_latents, generator)
        # Global view: the BEV (each sample's last image) from its frames' tokens only.
        recon = [bool(r) for r in batch["recon"]]
        rows = [b for b in range(len(spans)) if recon[b]]
        bev_weight = h.w_bev if rows else 0.0
        rows = rows or [0]
        frames_hidden = [hidden[b, torch.cat(spans[b][:-1])] for b in rows]
        bev = global_view_loss(self.bev_head, frames_hidden, targets.bev_latents[rows], targets.bev_cells[rows],
                               generator)
        mask_anchor = self.mask_token.sum() * 0.0  # keeps the mask token in every step's graph
        loss = text + view_weight * view + bev_weight * bev + mask_anchor
        logs.update({"view": float(view.detach()), "bev": float(bev.detach()), "view_active": float(view_weight > 0),
                     "bev_active": float(bev_weight > 0), "masked_frames": float(len(flat_masked))})
        return loss, logs

    # ---------------------------------------------------------------- state

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        """The training-only parameters (mask token + heads), for the separate heads file."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(HEAD_PREFIXES)}
