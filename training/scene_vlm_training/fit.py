"""``scene-vlm-train fit``: fine-tuning under ``accelerate`` (one GPU, DDP, DeepSpeed ZeRO-2/3, CPU).

Launch with ``accelerate launch --config_file <one of configs/accelerate/*.yaml> -m
scene_vlm_training.cli fit --config fit.yaml`` (or plain ``scene-vlm-train fit`` for one process).
The VAE teacher is created here, outside ``accelerator.prepare``: it is frozen, never in the
optimizer, and never wrapped by DDP or DeepSpeed.

Checkpoint layout (``<output_dir>/checkpoint-<step>/``)::

    scene_vlm_checkpoint.json    marks the directory as ours (kind, step, format version, base model)
    config.yaml                  the resolved FitConfig
    data_manifest.json           the manifest of the data trained on (frames, image size, prompt profile)
    model_state.safetensors      the Hugging Face model's weights (LoRA adapters unmerged), no head keys
    heads.safetensors            mask token + cross-view and BEV heads, for continued training
    processor/                   the processor used in training
    hf_config/                   the model's config.json and generation_config.json
    accelerate/                  optimizer, scheduler, RNG and engine state for exact resume
"""

from __future__ import annotations

import functools
import json
import logging
import math
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

import torch

from .config import FitConfig, save_config
from .data.dataset import MicroBatchSampler, ResumableOrder, SampleDataset, collate
from .data.store import DataFormatError
from .model.vae import VaeTeacher
from .model.wrapper import HEAD_PREFIXES, HeadGeometry, SceneVLM, check_base_model_dir, load_hf_model
from .step import derive_seed, step_generator, to_device, training_step

logger = logging.getLogger(__name__)

CHECKPOINT_MARKER = "scene_vlm_checkpoint.json"
CHECKPOINT_KIND = "scene_vlm_training.checkpoint"
CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A directory is not a checkpoint written by ``scene-vlm-train fit`` (or is incomplete)."""


def read_checkpoint_marker(ckpt: Path) -> dict[str, Any]:
    """The checkpoint's marker (CheckpointError naming what is wrong when it is not ours)."""
    ckpt = Path(ckpt)
    if not ckpt.is_dir():
        raise CheckpointError(f"checkpoint directory {ckpt} does not exist")
    marker = ckpt / CHECKPOINT_MARKER
    if not marker.is_file():
        raise CheckpointError(
            f"{ckpt} is not a scene-vlm-train checkpoint (no {CHECKPOINT_MARKER}); pass a "
            "<output_dir>/checkpoint-<step> directory written by `scene-vlm-train fit`"
        )
    try:
        meta = json.loads(marker.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{marker} is corrupt ({exc})") from exc
    if meta.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(f"{marker}: kind {meta.get('kind')!r} is not {CHECKPOINT_KIND!r}")
    if int(meta.get("format_version", -1)) > CHECKPOINT_FORMAT:
        raise CheckpointError(f"{ckpt}: checkpoint format {meta.get('format_version')} is newer than this package")
    for name in ("config.yaml", "model_state.safetensors", "data_manifest.json", "processor", "hf_config"):
        if not (ckpt / name).exists():
            raise CheckpointError(f"{ckpt} is incomplete: {name} is missing (interrupted while saving?)")
    return meta


def latest_checkpoint(output_dir: Path) -> Optional[Path]:
    """The newest complete checkpoint under ``output_dir`` (None when there is none)."""
    found = []
    for p in Path(output_dir).glob("checkpoint-*"):
        try:
            found.append((int(read_checkpoint_marker(p)["step"]), p))
        except (CheckpointError, KeyError, ValueError):
            continue
    return max(found)[1] if found else None


def _accelerator(cfg: FitConfig) -> Any:
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    mixed = cfg.mixed_precision
    if not torch.cuda.is_available() and mixed == "fp16":
        raise ValueError("mixed_precision fp16 needs a GPU; use 'bf16' or 'no' on CPU")
    project = ProjectConfiguration(project_dir=cfg.output_dir, logging_dir=str(Path(cfg.output_dir) / "logs"))
    acc = Accelerator(gradient_accumulation_steps=cfg.grad_accum_steps, mixed_precision=mixed,
                      log_with="tensorboard", project_config=project, step_scheduler_with_optimizer=False)
    if acc.state.deepspeed_plugin is not None:
        ds = acc.state.deepspeed_plugin.deepspeed_config
        # No dataloader goes through accelerate (our order is resumable by construction), so the
        # per-device batch that DeepSpeed's "auto" would read from it is set here.
        ds["train_micro_batch_size_per_gpu"] = cfg.micro_batch_size
        ds["gradient_accumulation_steps"] = cfg.grad_accum_steps
        ds["gradient_clipping"] = cfg.optim.max_grad_norm
    return acc


def _param_groups(model: SceneVLM, cfg: FitConfig) -> list[dict[str, Any]]:
    heads, lm = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (heads if name.startswith(HEAD_PREFIXES) else lm).append(p)
    groups = [{"params": lm, "lr": cfg.optim.lr, "weight_decay": cfg.optim.weight_decay}]
    if heads:
        groups.append({"params": heads, "lr": cfg.optim.heads_lr, "weight_decay": cfg.optim.weight_decay})
    return groups


def total_steps(cfg: FitConfig, order: ResumableOrder) -> int:
    """Optimizer steps of the run: ``max_steps`` or ``epochs`` over the rank's micro-batches."""
    if cfg.max_steps is not None:
        return int(cfg.max_steps)
    return max(1, math.ceil(cfg.epochs * order.per_epoch / cfg.grad_accum_steps))


class Trainer:
    """Everything ``fit`` sets up, so tests can run steps and probes on the real objects."""

    def __init__(self, cfg: FitConfig) -> None:
        from transformers import AutoProcessor, get_cosine_schedule_with_warmup

        self.cfg = cfg.validate()
        self.accelerator = acc = _accelerator(cfg)
        base = Path(cfg.model.base_model_dir)
        check_base_model_dir(base)
        self.processor = AutoProcessor.from_pretrained(base, local_files_only=True)
        # Under DeepSpeed bf16 the engine keeps fp32 master weights in the optimizer, so the model is
        # loaded in bf16 (half the host memory per rank for a 7B model); otherwise weights stay fp32
        # and autocast runs the matmuls in bf16.
        deepspeed_bf16 = acc.state.deepspeed_plugin is not None and cfg.mixed_precision == "bf16"
        hf = load_hf_model(cfg.model, dtype=torch.bfloat16 if deepspeed_bf16 else torch.float32)
        self.dataset = SampleDataset(cfg.data_dir, self.processor, hf.config.image_token_id, hf.config.video_token_id)
        self.pad_id = int(self.processor.tokenizer.pad_token_id or 0)
        self.teacher: Optional[VaeTeacher] = None
        token_channels, view_grid, bev_grid = 4, (1, 1), (1, 1)
        if cfg.heads.enabled:
            vae_dtype = torch.bfloat16 if cfg.mixed_precision == "bf16" and torch.cuda.is_available() else torch.float32
            self.teacher = VaeTeacher(cfg.heads.vae_dir, cfg.heads.latent_patch, acc.device, vae_dtype)
            m = self.dataset.manifest
            token_channels = self.teacher.token_channels
            view_grid = self.teacher.grid(int(m["view_target_px"]))
            bev_grid = self.teacher.grid(int(m["bev_target_px"]))
        # The new parameters (mask token, heads) are initialised from the run's seed: two runs with
        # the same config start from the same weights.
        torch.manual_seed(derive_seed(cfg.seed, 0x5EED))
        self.model = SceneVLM(hf, cfg.heads, HeadGeometry(token_channels, view_grid, bev_grid))
        if not cfg.heads.enabled:
            for name, p in self.model.named_parameters():
                if name.startswith(HEAD_PREFIXES):
                    p.requires_grad_(False)
        self.order = ResumableOrder(len(self.dataset), cfg.micro_batch_size, cfg.seed, acc.process_index,
                                    acc.num_processes)
        self.total_steps = total_steps(cfg, self.order)
        optimizer = torch.optim.AdamW(_param_groups(self.model, cfg), betas=cfg.optim.betas)
        self.scheduler = get_cosine_schedule_with_warmup(
            optimizer, int(round(cfg.optim.warmup_ratio * self.total_steps)), self.total_steps)
        self.model, self.optimizer = acc.prepare(self.model, optimizer)
        acc.register_for_checkpointing(self.scheduler)
        self.step = 0
        self._loader: Optional[Any] = None
        self._loader_k = -1

    # ---------------------------------------------------------------- data

    def micro_batch(self, k: int) -> dict[str, Any]:
        """Collated micro-batch ``k`` of this rank, on the device."""
        items = [self.dataset[i] for i in self.order.batch(k)]
        return to_device(collate(items, self.pad_id), self.accelerator.device)

    def _next_micro_batch(self, k: int) -> dict[str, Any]:
        """Micro-batch ``k`` from the prefetching loader (restarted at ``k`` after a resume or a jump)."""
        if self.cfg.dataloader_workers == 0:
            return self.micro_batch(k)
        if self._loader is None or self._loader_k != k:
            loader = torch.utils.data.DataLoader(
                self.dataset, batch_sampler=MicroBatchSampler(self.order, k), num_workers=self.cfg.dataloader_workers,
                collate_fn=functools.partial(collate, pad_token_id=self.pad_id), persistent_workers=False,
                prefetch_factor=2,
            )
            self._loader, self._loader_k = iter(loader), k
        batch = next(self._loader)
        self._loader_k = k + 1
        return to_device(batch, self.accelerator.device)

    # ---------------------------------------------------------------- steps

    def train_step(self) -> dict[str, float]:
        """One optimizer step (``grad_accum_steps`` micro-batches); returns the mean of its loss dicts."""
        acc, cfg = self.accelerator, self.cfg
        sums: dict[str, float] = defaultdict(float)
        for micro in range(cfg.grad_accum_steps):
            batch = self._next_micro_batch(self.step * cfg.grad_accum_steps + micro)
            generator = step_generator(cfg.seed, self.step, micro, acc.process_index)
            with acc.accumulate(self.model):
                with acc.autocast():
                    loss, logs = training_step(self.model, self.teacher, batch, cfg.heads, self.step, generator)
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(self.model.parameters(), cfg.optim.max_grad_norm)
                self.optimizer.step()
                if acc.sync_gradients:
                    self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            sums["loss"] += float(loss.detach())
            for k, v in logs.items():
                sums[k] += v
        self.step += 1
        out = {k: v / cfg.grad_accum_steps for k, v in sums.items()}
        out["lr"] = float(self.scheduler.get_last_lr()[0])
        return out

    # ---------------------------------------------------------------- checkpoints

    def save_checkpoint(self) -> Path:
        """Write ``checkpoint-<step>`` (every rank takes part: ZeRO-3 gathers weights); returns its path."""
        from safetensors.torch import save_file

        acc, cfg = self.accelerator, self.cfg
        ckpt = Path(cfg.output_dir) / f"checkpoint-{self.step:07d}"
        acc.save_state(str(ckpt / "accelerate"))
        state = acc.get_state_dict(self.model)  # full weights on the main process (gathered under ZeRO-3)
        if acc.is_main_process:
            model_sd = {k.removeprefix("hf."): v.detach().cpu().contiguous() for k, v in state.items()
                        if k.startswith("hf.")}
            head_sd = {k: v.detach().cpu().contiguous() for k, v in state.items() if k.startswith(HEAD_PREFIXES)}
            _save_untied(save_file, model_sd, ckpt / "model_state.safetensors")
            save_file(head_sd, str(ckpt / "heads.safetensors"))
            save_config(cfg, ckpt / "config.yaml")
            (ckpt / "data_manifest.json").write_text(json.dumps(self.dataset.manifest, indent=1, sort_keys=True))
            self.processor.save_pretrained(ckpt / "processor")
            hf = acc.unwrap_model(self.model).hf
            hf.config.save_pretrained(ckpt / "hf_config")
            hf.generation_config.save_pretrained(ckpt / "hf_config")
            meta = {"kind": CHECKPOINT_KIND, "format_version": CHECKPOINT_FORMAT, "step": self.step,
                    "base_model_dir": str(cfg.model.base_model_dir), "lora": cfg.model.lora.enabled,
                    "heads": cfg.heads.enabled, "saved_at_unix_s": round(time.time(), 3)}
            # The marker goes last: a directory without it is an interrupted save, never loaded.
            (ckpt / CHECKPOINT_MARKER).write_text(json.dumps(meta, indent=1, sort_keys=True))
            self._prune()
        acc.wait_for_everyone()
        return ckpt

    def _prune(self) -> None:
        ckpts = sorted(Path(self.cfg.output_dir).glob("checkpoint-*"))
        for old in ckpts[: max(0, len(ckpts) - self.cfg.keep_last)]:
            shutil.rmtree(old, ignore_errors=True)

    def load_checkpoint(self, ckpt: Path) -> None:
        """Restore model, optimizer, scheduler and step from ``ckpt`` for exact continuation."""
        meta = read_checkpoint_marker(ckpt)
        self.accelerator.load_state(str(Path(ckpt) / "accelerate"))
        self.step = int(meta["step"])
        logger.info("resumed from %s at step %d", ckpt, self.step)


def _save_untied(save_file: Any, state: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors refuses tensors that share memory (tied embeddings): store each once, cloned."""
    seen: dict[int, str] = {}
    out = {}
    for k, v in state.items():
        ptr = v.data_ptr()
        out[k] = v.clone() if ptr in seen else v
        seen.setdefault(ptr, k)
    save_file(out, str(path))


def fit(cfg: FitConfig, resume: Optional[str] = None, progress: bool = True,
        stop_after_steps: Optional[int] = None) -> dict[str, Any]:
    """Train; returns ``{"steps", "last_checkpoint", "history"}`` (history = per-step loss dicts).

    ``resume``: ``"latest"`` or a checkpoint directory. ``stop_after_steps`` ends the run early
    (after saving a checkpoint) as an interruption would; tests use it to check exact resume.
    """
    from tqdm import tqdm

    if not Path(cfg.data_dir).is_dir():
        raise DataFormatError(f"data_dir {cfg.data_dir} does not exist; run `scene-vlm-train build-data` first")
    trainer = Trainer(cfg)
    acc = trainer.accelerator
    out_dir = Path(cfg.output_dir)
    if acc.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
    if resume:
        ckpt = latest_checkpoint(out_dir) if resume == "latest" else Path(resume)
        if ckpt is None:
            raise CheckpointError(f"--resume latest: no complete checkpoint under {out_dir}")
        trainer.load_checkpoint(ckpt)
    acc.init_trackers("scene_vlm_train")
    history: list[dict[str, float]] = []
    last: Optional[Path] = None
    end = trainer.total_steps if stop_after_steps is None else min(trainer.total_steps, int(stop_after_steps))
    bar = tqdm(total=trainer.total_steps, initial=trainer.step, desc="fit", unit="step",
               disable=not (progress and acc.is_local_main_process))
    while trainer.step < end:
        logs = trainer.train_step()
        history.append({"step": trainer.step, **logs})
        bar.update(1)
        bar.set_postfix({k: f"{logs[k]:.3f}" for k in ("loss", "text", "view", "bev") if k in logs})
        if trainer.step % cfg.log_every_steps == 0 or trainer.step == end:
            keys = sorted(logs)
            # Every rank takes part in the reduction; the logged values are means over ranks.
            means = acc.reduce(torch.tensor([logs[k] for k in keys], device=acc.device), reduction="mean")
            acc.log({f"train/{k}": float(v) for k, v in zip(keys, means.tolist())}, step=trainer.step)
        if trainer.step % cfg.save_every_steps == 0 or trainer.step == end:
            last = trainer.save_checkpoint()
    bar.close()
    acc.end_training()
    return {"steps": trainer.step, "last_checkpoint": str(last) if last else None, "history": history}
