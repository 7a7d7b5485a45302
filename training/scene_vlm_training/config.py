"""Typed configuration: nested dataclasses read from YAML/JSON, validated before any work starts.

Every section is a frozen dataclass; :func:`from_dict` builds one from a mapping and rejects unknown
keys (with the known ones listed, so a typo in a YAML file fails at start, not after an hour of
training), wrong types and out-of-range values. :func:`save_config` writes the resolved config as
YAML beside every checkpoint and every data build; :func:`load_config` reads it back.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypeVar, Union

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the dotted key path."""


# ----------------------------------------------------------------------------------------------- build-data


@dataclass(frozen=True)
class SyntheticSource:
    """Our synthetic rooms (``datasets.synthetic``) with their generated, verified questions.

    ``seeds``: one scene per seed; ``n_frames``: rendered frames per scene (one loop of the room);
    ``width``/``height``: render size (px); ``max_questions_per_task``: per scene and task.
    """

    seeds: tuple[int, ...] = (0,)
    n_frames: int = 60
    width: int = 320
    height: int = 240
    max_questions_per_task: int = 20


@dataclass(frozen=True)
class BenchmarkSource:
    """Benchmark annotations (ScanRefer, Multi3DRefer, ScanQA, SQA3D, Scan2Cap) over ScanNet scans.

    ``kind``: a ``scene_vlm_ros.datasets.benchmarks`` kind or ``"auto"``; ``annotations``: the
    annotation file; ``scans_dir``: folder of exported ScanNet scans (``<scans_dir>/<scene_id>/``);
    ``frame_step``: keep every n-th frame of a scan; ``max_frames``: per scan (None: all);
    ``scenes``: restrict to these scene ids (empty: all scenes in the annotations).
    """

    kind: str = "auto"
    annotations: str = ""
    scans_dir: str = ""
    frame_step: int = 20
    max_frames: Optional[int] = None
    scenes: tuple[str, ...] = ()


@dataclass(frozen=True)
class VisionOnlySource:
    """Scans without text: reconstruction-only samples (ROSS3D's semi-supervised data).

    ``scan_dirs``: ScanNet-layout scan directories; ``synthetic_seeds``: synthetic rooms used
    without their questions; ``samples_per_scan``: prompts per scan.
    """

    scan_dirs: tuple[str, ...] = ()
    synthetic_seeds: tuple[int, ...] = ()
    frame_step: int = 20
    max_frames: Optional[int] = None
    samples_per_scan: int = 1
    n_frames: int = 60
    width: int = 320
    height: int = 240


@dataclass(frozen=True)
class BuildDataConfig:
    """``scene-vlm-train build-data``: which scans, how prompts are rendered, where shards go.

    ``prompt_profile``: a ``scene_vlm_ros.vlm.prompts`` profile name; ``n_frames``/``image_size_px``
    override the profile's when set; ``instances``: ``ground_truth`` or ``reconstruction``
    (see ``datasets.snapshot_builder``); ``iou_threshold``: Chat-Scene's target-instance rule;
    ``view_target_px``/``bev_target_px``: side (px) of the square reconstruction targets (raw frames
    and raw BEV); ROSS3D reconstructs views at 216 px and the BEV at 432 px.
    """

    output_dir: str = "data/train"
    seed: int = 0
    prompt_profile: str = "default"
    n_frames: Optional[int] = None
    image_size_px: Optional[int] = None
    instances: str = "ground_truth"
    iou_threshold: float = 0.75
    view_target_px: int = 224
    bev_target_px: int = 432
    synthetic: Optional[SyntheticSource] = None
    benchmarks: tuple[BenchmarkSource, ...] = ()
    vision_only: Optional[VisionOnlySource] = None

    def validate(self) -> BuildDataConfig:
        if self.instances not in ("ground_truth", "reconstruction"):
            raise ConfigError(f"instances must be 'ground_truth' or 'reconstruction', got {self.instances!r}")
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ConfigError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if self.view_target_px < 16 or self.bev_target_px < 16:
            raise ConfigError("view_target_px and bev_target_px must be >= 16")
        from scene_vlm_ros.vlm.prompts import get_profile

        try:
            get_profile(self.prompt_profile)
        except ValueError as exc:
            raise ConfigError(f"prompt_profile: {exc}") from exc
        if self.synthetic is None and not self.benchmarks and self.vision_only is None:
            raise ConfigError("no source configured: set synthetic, benchmarks and/or vision_only")
        for i, b in enumerate(self.benchmarks):
            if not b.annotations or not b.scans_dir:
                raise ConfigError(f"benchmarks[{i}]: both 'annotations' and 'scans_dir' are required")
        return self


# ----------------------------------------------------------------------------------------------- fit


@dataclass(frozen=True)
class LoraConfig:
    """LoRA adapters through peft on the language model (single-GPU users); off by default."""

    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelConfig:
    """The Qwen2-VL-family model (a local checkpoint directory; nothing is downloaded).

    ``freeze_vision``: vision tower + merger frozen (GPT4Scene freezes the whole visual module);
    ``gradient_checkpointing``: recompute the LM's layers in backward; ``attn_implementation``:
    ``sdpa``, ``eager`` or ``flash_attention_2`` (the 7B recipe).
    """

    base_model_dir: str = ""
    freeze_vision: bool = True
    gradient_checkpointing: bool = False
    attn_implementation: str = "sdpa"
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass(frozen=True)
class HeadsConfig:
    """ROSS3D's reconstruction heads (training only; never exported into the model directory).

    ``vae_dir``: a diffusers AutoencoderKL directory (frozen teacher; FLUX.1's VAE in ROSS3D);
    ``latent_patch``: latent cells grouped p x p into one token (2 in ROSS3D: 16 ch -> 64);
    denoiser ``depth``/``width``/``num_heads`` (ROSS3D: 3 / 1024 / 16); ``num_train_timesteps``
    of the cosine schedule; ``mask_every_n_steps``/``mask_ratio``: cross-view masking (every 4th
    optimizer step, 25% of frames); ``w_view``/``w_bev``: loss weights.
    """

    enabled: bool = True
    vae_dir: str = ""
    latent_patch: int = 2
    depth: int = 3
    width: int = 1024
    num_heads: int = 16
    num_train_timesteps: int = 1000
    mask_every_n_steps: int = 4
    mask_ratio: float = 0.25
    w_view: float = 1.0
    w_bev: float = 1.0


@dataclass(frozen=True)
class OptimConfig:
    """AdamW + cosine schedule with linear warmup (GPT4Scene: 5e-6, warmup 0.1; ROSS3D: 1e-5, 0.03)."""

    lr: float = 1e-5
    heads_lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_ratio: float = 0.03
    max_grad_norm: float = 1.0


@dataclass(frozen=True)
class FitConfig:
    """``scene-vlm-train fit``.

    ``data_dir``: a build-data output; ``output_dir``: checkpoints, logs, the resolved config;
    ``micro_batch_size`` per device and ``grad_accum_steps`` (global batch = micro x accum x world);
    ``max_steps`` optimizer steps (None: ``epochs`` over the data); ``mixed_precision``: ``bf16`` on
    GPUs, ``no`` on CPU; ``save_every_steps``/``keep_last`` checkpoints; ``log_every_steps``.
    """

    data_dir: str = ""
    output_dir: str = "runs/train"
    seed: int = 0
    micro_batch_size: int = 1
    grad_accum_steps: int = 1
    epochs: float = 1.0
    max_steps: Optional[int] = None
    mixed_precision: str = "bf16"
    save_every_steps: int = 500
    keep_last: int = 2
    log_every_steps: int = 10
    dataloader_workers: int = 2
    model: ModelConfig = field(default_factory=ModelConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def validate(self) -> FitConfig:
        if not self.data_dir:
            raise ConfigError("data_dir is required (a build-data output directory)")
        if not self.model.base_model_dir:
            raise ConfigError("model.base_model_dir is required (a local Qwen2-VL checkpoint directory)")
        if self.heads.enabled and not self.heads.vae_dir:
            raise ConfigError("heads.vae_dir is required when heads.enabled (a diffusers AutoencoderKL directory)")
        if self.dataloader_workers < 0:
            raise ConfigError("dataloader_workers must be >= 0 (0: load in the training process)")
        if self.micro_batch_size < 1 or self.grad_accum_steps < 1:
            raise ConfigError("micro_batch_size and grad_accum_steps must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError("max_steps must be >= 1 (or null for epochs)")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ConfigError(f"mixed_precision must be 'no', 'bf16' or 'fp16', got {self.mixed_precision!r}")
        if self.model.attn_implementation not in ("sdpa", "eager", "flash_attention_2"):
            raise ConfigError(f"model.attn_implementation {self.model.attn_implementation!r} is not supported")
        h = self.heads
        if h.width % h.num_heads:
            raise ConfigError(f"heads.width ({h.width}) must be divisible by heads.num_heads ({h.num_heads})")
        if not 0.0 < h.mask_ratio < 1.0 or h.mask_every_n_steps < 1 or h.latent_patch < 1:
            raise ConfigError("heads.mask_ratio must be in (0, 1), mask_every_n_steps and latent_patch >= 1")
        if h.w_view < 0 or h.w_bev < 0:
            raise ConfigError("heads.w_view and heads.w_bev must be >= 0")
        if not 0.0 <= self.optim.warmup_ratio < 1.0 or self.optim.lr <= 0:
            raise ConfigError("optim.lr must be > 0 and optim.warmup_ratio in [0, 1)")
        if self.save_every_steps < 1 or self.log_every_steps < 1 or self.keep_last < 1:
            raise ConfigError("save_every_steps, log_every_steps and keep_last must be >= 1")
        return self


# ----------------------------------------------------------------------------------------------- generic I/O


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    """``value`` as type ``tp`` (dataclasses, Optional, tuple[...], scalars); ConfigError when it does not fit."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-5" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, bool):  # YAML 1.1 reads a bare no/yes as a boolean (mixed_precision: no)
            return "yes" if value else "no"
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported config type {_type_name(tp)}")


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys, wrong types -> :class:`ConfigError`."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)} in {cls.__name__}; "
            f"known keys: {', '.join(names)}"
        )
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(config: Any) -> dict:
    """Plain dict of a config dataclass (tuples as lists), for YAML/JSON."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(config)


def read_mapping(path: str | Path) -> dict:
    """A YAML or JSON file's top-level mapping (ConfigError when missing or not a mapping)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config keys")
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """``["optim.lr=1e-5", "max_steps=10"]`` applied onto a nested mapping (values parsed as YAML)."""
    data = json.loads(json.dumps(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: Optional[list[str]] = None) -> T:
    """Read, override, build and validate a config of type ``cls`` (FitConfig or BuildDataConfig)."""
    data = read_mapping(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    config = from_dict(cls, data)
    validate = getattr(config, "validate", None)
    return validate() if validate is not None else config


def save_config(config: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (sorted keys: the same config gives the same bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=True), encoding="utf-8")
    return path
