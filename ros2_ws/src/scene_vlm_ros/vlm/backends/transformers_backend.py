"""Hugging Face transformers backend: a local Qwen2-VL / Qwen2.5-VL checkpoint directory.

Loads a standard Hugging Face checkpoint directory (``config.json`` with ``model_type`` ``qwen2_vl``
or ``qwen2_5_vl``, safetensors or ``.bin`` weights, tokenizer files, ``preprocessor_config.json`` or
``processor_config.json``, a chat template). GPT4Scene's released checkpoint
(``alexzyqi/GPT4Scene-qwen2vl_full_sft_mark_32_3D_img512``) is such a Qwen2-VL directory and loads
as is. Only local files are read (``local_files_only=True``) and no remote code is ever executed.

This module imports neither torch nor transformers at import time: the node constructs the
backend cheaply and pays for the heavy imports in ``load()`` (its lifecycle ``configure``).

The messages -> model-inputs conversion lives in :mod:`scene_vlm_ros.vlm.model_inputs`, shared with
the training package (so a fine-tuned model sees exactly the inputs it was trained on) and, for the
numpy-only message helpers re-exported here (:func:`normalise_messages`, :func:`cap_image_side`),
with the HTTP backend.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Optional

from ..model_inputs import MessageFormatError, build_model_inputs, cap_image_side, normalise_messages
from ..types import GenerationRequest, GenerationTimeout, ModelError, ModelUnavailableError, VLMBackend

#: Re-exported: the HTTP backend, tools and tests import the message helpers from here.
__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "MessageFormatError",
    "TransformersBackend",
    "cap_image_side",
    "inspect_checkpoint",
    "normalise_messages",
]

logger = logging.getLogger(__name__)

#: ``config.json`` model types this backend loads, with the family name used in messages.
SUPPORTED_MODEL_TYPES: dict[str, str] = {"qwen2_vl": "Qwen2-VL", "qwen2_5_vl": "Qwen2.5-VL"}

_DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")


# --------------------------------------------------------------------------------------------
# Checkpoint inspection (pure file checks, before any heavy import)
# --------------------------------------------------------------------------------------------

_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def inspect_checkpoint(model_dir: Path) -> dict[str, Any]:
    """Check that ``model_dir`` looks like a loadable Qwen2-VL-family checkpoint; return its config dict.

    Raises:
        ModelUnavailableError: missing directory, missing/corrupt ``config.json``, unsupported
            ``model_type``, no weights (or a missing shard), no tokenizer or image-processor files.
    """
    hint = (
        "download a Qwen2-VL / Qwen2.5-VL checkpoint to a local directory (e.g. "
        "`huggingface-cli download Qwen/Qwen2-VL-7B-Instruct --local-dir <dir>`) and point model_path at it"
    )
    if not model_dir.exists():
        raise ModelUnavailableError(f"model directory {model_dir} does not exist; {hint}")
    if not model_dir.is_dir():
        raise ModelUnavailableError(f"model_path {model_dir} is not a directory; {hint}")
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ModelUnavailableError(f"{model_dir} has no config.json, so it is not a Hugging Face checkpoint; {hint}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelUnavailableError(
            f"{config_path} is not valid JSON ({exc}); the checkpoint is corrupt or partially downloaded, "
            "fetch it again"
        ) from exc
    if not isinstance(config, dict):
        raise ModelUnavailableError(f"{config_path} must hold a JSON object; the checkpoint is corrupt")
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        supported = ", ".join(f"{k} ({v})" for k, v in SUPPORTED_MODEL_TYPES.items())
        raise ModelUnavailableError(
            f"{config_path}: model_type {model_type!r} is not supported by the transformers backend; supported: "
            f"{supported}. Use the 'openai' backend to reach other models through a vLLM server."
        )
    present = [name for name in _WEIGHT_FILES if (model_dir / name).is_file()]
    if not present:
        raise ModelUnavailableError(
            f"{model_dir} has a config.json but no weights (expected one of {', '.join(_WEIGHT_FILES)}); "
            "the download is incomplete"
        )
    for name in present:
        if name.endswith(".index.json"):
            _check_shards(model_dir / name)
    if not ((model_dir / "tokenizer.json").is_file() or (model_dir / "vocab.json").is_file()):
        raise ModelUnavailableError(f"{model_dir} has no tokenizer files (tokenizer.json or vocab.json + merges.txt)")
    if not ((model_dir / "preprocessor_config.json").is_file() or (model_dir / "processor_config.json").is_file()):
        raise ModelUnavailableError(
            f"{model_dir} has no image-processor settings (preprocessor_config.json or processor_config.json)"
        )
    return config


def _check_shards(index_path: Path) -> None:
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        shards = sorted(set(index["weight_map"].values()))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ModelUnavailableError(f"{index_path} is corrupt ({exc}); fetch the checkpoint again") from exc
    missing = [shard for shard in shards if not (index_path.parent / shard).is_file()]
    if missing:
        raise ModelUnavailableError(
            f"{index_path.parent} is missing {len(missing)} of {len(shards)} weight shards ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}); the download is incomplete"
        )


# --------------------------------------------------------------------------------------------
# The backend
# --------------------------------------------------------------------------------------------


class TransformersBackend(VLMBackend):
    """Qwen2-VL / Qwen2.5-VL from a local checkpoint directory, greedy decoding.

    Args:
        model_path: local checkpoint directory (never a hub id: nothing is downloaded).
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        dtype: ``"auto"`` (bfloat16 on CUDA, float32 on CPU), ``"float32"``, ``"bfloat16"``, ``"float16"``.
        load_in_4bit: NF4 weights through bitsandbytes (CUDA only), for 8-16 GB GPUs such as a Jetson Orin.
        max_new_tokens: ceiling on generated tokens; a request's own ``max_new_tokens`` can only lower it.
        max_image_side_px: every image's longer side is capped to this (nearest resampling) before the
            processor sees it; GPT4Scene was trained at 512.

    ``generate()`` calls are serialised by a lock (one model, one forward at a time); a call waiting
    for the lock counts that wait against its own timeout.
    """

    name = "transformers"
    needs_images = True

    def __init__(
        self,
        model_path: str | Path,
        device: str = "auto",
        dtype: str = "auto",
        load_in_4bit: bool = False,
        max_new_tokens: int = 64,
        max_image_side_px: int = 512,
    ) -> None:
        if not str(model_path).strip():
            raise ValueError("model_path is empty; set it to a local Qwen2-VL checkpoint directory")
        if not (device == "auto" or device == "cpu" or device == "cuda" or device.startswith("cuda:")):
            raise ValueError(f"device {device!r} must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype {dtype!r} must be one of {_DTYPES}")
        if int(max_new_tokens) < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if int(max_image_side_px) < 28:
            raise ValueError(f"max_image_side_px must be >= 28 (one merged Qwen2-VL patch), got {max_image_side_px}")
        self.model_path = Path(model_path).expanduser()
        self.device = device
        self.dtype = dtype
        self.load_in_4bit = bool(load_in_4bit)
        self.max_new_tokens = int(max_new_tokens)
        self.max_image_side_px = int(max_image_side_px)
        self._model: Any = None
        self._processor: Any = None
        self._device: Any = None
        self._eos_ids: list[int] = []
        self._pad_id: Optional[int] = None
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- loading

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Load processor and weights; raises ModelUnavailableError with the reason and a fix."""
        if self.loaded:
            return
        config = inspect_checkpoint(self.model_path)
        family = SUPPORTED_MODEL_TYPES[config["model_type"]]
        try:
            import torch
            from transformers import AutoModelForImageTextToText, AutoProcessor
        except ImportError as exc:
            raise ModelUnavailableError(
                f"the transformers backend needs torch and transformers>=5 ({exc}); install requirements.lock"
            ) from exc
        device = self._resolve_device(torch)
        torch_dtype = self._resolve_dtype(torch, device)
        load_kwargs: dict[str, Any] = {"dtype": torch_dtype, "local_files_only": True, "output_loading_info": True}
        if self.load_in_4bit:
            load_kwargs["quantization_config"] = self._quantization_config(torch, device, torch_dtype)
        if device.type == "cuda":
            # device_map places weights straight on the GPU (and is required for bitsandbytes).
            load_kwargs["device_map"] = {"": device.index if device.index is not None else 0}

        started = time.monotonic()
        try:
            processor = AutoProcessor.from_pretrained(self.model_path, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure here means the tokenizer/processor files are unusable
            raise ModelUnavailableError(
                f"could not load the processor (tokenizer + image processor) from {self.model_path}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not (getattr(processor, "chat_template", None) or getattr(processor.tokenizer, "chat_template", None)):
            raise ModelUnavailableError(
                f"{self.model_path} has no chat template (chat_template.jinja, chat_template.json or in "
                "tokenizer_config.json); copy the one from the base model's checkpoint"
            )
        try:
            model, info = AutoModelForImageTextToText.from_pretrained(self.model_path, **load_kwargs)
        except Exception as exc:  # noqa: BLE001 - corrupt weights surface as many different exception types
            raise ModelUnavailableError(
                f"could not load {family} weights from {self.model_path}: {type(exc).__name__}: {exc}. "
                "The weight files are corrupt or incomplete; fetch the checkpoint again"
            ) from exc
        missing = list(info.get("missing_keys") or [])
        mismatched = list(info.get("mismatched_keys") or [])
        if missing or mismatched:
            # transformers would silently initialise these randomly: a fine-tuned model with random
            # layers answers garbage, so refuse it loudly.
            shown = ", ".join(str(k) for k in (missing + mismatched)[:4])
            raise ModelUnavailableError(
                f"{self.model_path}: weights do not match config.json ({len(missing)} missing, {len(mismatched)} "
                f"with the wrong shape, e.g. {shown}); the checkpoint is corrupt or its config belongs to another model"
            )
        if device.type != "cuda":
            model = model.to(device)
        model.eval()

        self._eos_ids = self._collect_eos_ids(model, processor)
        pad_id = processor.tokenizer.pad_token_id
        self._pad_id = int(pad_id) if pad_id is not None else (self._eos_ids[0] if self._eos_ids else None)
        self._model, self._processor, self._device = model, processor, device
        n_params = sum(p.numel() for p in model.parameters())
        logger.info(
            "loaded %s (%.1fM parameters, %s, %s%s) from %s in %.1f s",
            family,
            n_params / 1e6,
            device,
            str(torch_dtype).replace("torch.", ""),
            ", 4-bit" if self.load_in_4bit else "",
            self.model_path,
            time.monotonic() - started,
        )

    def unload(self) -> None:
        """Drop the model and processor and return GPU memory to the allocator."""
        with self._lock:
            was_cuda = self._device is not None and self._device.type == "cuda"
            self._model = None
            self._processor = None
            self._device = None
        if was_cuda:
            import torch

            torch.cuda.empty_cache()

    def _resolve_device(self, torch: Any) -> Any:
        cuda_ok = torch.cuda.is_available()
        if self.device == "auto":
            return torch.device("cuda:0" if cuda_ok else "cpu")
        if self.device.startswith("cuda"):
            if not cuda_ok:
                raise ModelUnavailableError(
                    f"device {self.device!r} was requested but CUDA is not available (torch {torch.__version__}, "
                    f"built for CUDA {torch.version.cuda}); use device 'cpu' or 'auto', or fix the GPU driver"
                )
            dev = torch.device(self.device)
            if dev.index is not None and dev.index >= torch.cuda.device_count():
                raise ModelUnavailableError(
                    f"device {self.device!r} does not exist; {torch.cuda.device_count()} CUDA device(s) visible"
                )
            return dev
        return torch.device("cpu")

    def _resolve_dtype(self, torch: Any, device: Any) -> Any:
        if self.dtype == "auto":
            return torch.bfloat16 if device.type == "cuda" else torch.float32
        table = {
            "float32": torch.float32,
            "fp32": torch.float32,
            "bfloat16": torch.bfloat16,
            "bf16": torch.bfloat16,
            "float16": torch.float16,
            "fp16": torch.float16,
        }
        chosen = table[self.dtype]
        if device.type == "cpu" and chosen == torch.float16:
            logger.warning("float16 on CPU is slow and numerically fragile; prefer dtype 'auto' (float32) there")
        return chosen

    def _quantization_config(self, torch: Any, device: Any, torch_dtype: Any) -> Any:
        if device.type != "cuda":
            raise ModelUnavailableError(
                f"load_in_4bit needs a CUDA device (bitsandbytes kernels), but the device resolved to {device}; "
                "set load_in_4bit false on CPU-only hosts"
            )
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ModelUnavailableError("load_in_4bit needs the bitsandbytes package: pip install bitsandbytes")
        from transformers import BitsAndBytesConfig

        compute = torch_dtype if torch_dtype != torch.float32 else torch.bfloat16
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute)

    @staticmethod
    def _collect_eos_ids(model: Any, processor: Any) -> list[int]:
        ids: list[int] = []
        configured = getattr(model.generation_config, "eos_token_id", None)
        if isinstance(configured, int):
            ids.append(configured)
        elif configured:
            ids.extend(int(i) for i in configured)
        tokenizer = processor.tokenizer
        # ChatML models end a turn with <|im_end|>; stop there even if generation_config.json forgot it.
        for token in ("<|im_end|>", "<|endoftext|>"):
            token_id = tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id not in ids:
                ids.append(token_id)
        return ids

    # ---------------------------------------------------------------- generation

    def build_inputs(self, messages: list[dict[str, Any]]) -> Any:
        """Chat messages -> the processor's BatchFeature (CPU tensors, batch of one).

        Keys: ``input_ids`` / ``attention_mask`` (1, L), ``mm_token_type_ids`` (1, L) (0 text, 1 image,
        2 video; M-RoPE needs it), and with images ``pixel_values`` (patches, C*T*14*14) and
        ``image_grid_thw`` (n_images, 3).
        """
        if self._processor is None:
            raise ModelUnavailableError("TransformersBackend.load() has not been called (or unload() was)")
        config = self._model.config
        return build_model_inputs(
            self._processor,
            messages,
            max_image_side_px=self.max_image_side_px,
            image_token_id=config.image_token_id,
            video_token_id=config.video_token_id,
        )

    def generate(
        self, request: GenerationRequest, *, timeout_s: float, cancel: Optional[threading.Event] = None
    ) -> str:
        """Greedy-decode an answer to ``request.messages``; returns only the newly generated text.

        Raises:
            ModelUnavailableError: not loaded.
            GenerationTimeout: ``timeout_s`` passed or ``cancel`` was set (checked before the forward
                passes and after every generated token; a single prefill is not interruptible).
            ModelError: anything the processor or model raised (including MessageFormatError).
        """
        if not self.loaded:
            raise ModelUnavailableError("TransformersBackend.load() has not been called (or unload() was)")
        deadline = time.monotonic() + float(timeout_s)
        if cancel is not None and cancel.is_set():
            raise GenerationTimeout("generation cancelled before it started")
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise GenerationTimeout(f"model busy with another query for the whole {timeout_s:.1f} s timeout")
        try:
            return self._generate_locked(request, deadline, timeout_s, cancel)
        finally:
            self._lock.release()

    def _generate_locked(
        self, request: GenerationRequest, deadline: float, timeout_s: float, cancel: Optional[threading.Event]
    ) -> str:
        import torch
        from transformers import GenerationConfig, StoppingCriteriaList

        model = self._model
        if model is None:
            raise ModelUnavailableError("the model was unloaded while this query waited")
        started = time.monotonic()
        try:
            inputs = self.build_inputs(request.messages).to(self._device)
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - the processor raises many types for odd input
            raise ModelError(f"preparing model inputs failed: {type(exc).__name__}: {exc}") from exc

        stopper = _deadline_criteria(deadline, cancel)
        if stopper.expired():
            raise GenerationTimeout(self._timeout_message(stopper, timeout_s, 0))
        max_new = max(1, min(self.max_new_tokens, int(request.max_new_tokens or self.max_new_tokens)))
        generation_config = GenerationConfig(
            max_new_tokens=max_new,
            do_sample=False,  # greedy: answers must be reproducible for the same scene and question
            num_beams=1,
            eos_token_id=self._eos_ids or None,
            pad_token_id=self._pad_id,
        )
        prompt_len = int(inputs["input_ids"].shape[1])
        try:
            with torch.inference_mode():
                output = model.generate(
                    **inputs, generation_config=generation_config, stopping_criteria=StoppingCriteriaList([stopper])
                )
        except torch.cuda.OutOfMemoryError as exc:
            raise ModelError(
                f"CUDA out of memory for a {prompt_len}-token prompt; lower the frame count or max_image_side_px, "
                "or set load_in_4bit"
            ) from exc
        except Exception as exc:  # noqa: BLE001 - wrap so the query engine maps it to MODEL_ERROR
            raise ModelError(f"generation failed: {type(exc).__name__}: {exc}") from exc
        new_tokens = output[0, prompt_len:]
        if stopper.reason is not None:
            raise GenerationTimeout(self._timeout_message(stopper, timeout_s, int(new_tokens.shape[0])))
        text = self._processor.tokenizer.decode(new_tokens, skip_special_tokens=True)
        logger.debug(
            "generated %d tokens from a %d-token prompt in %.3f s",
            int(new_tokens.shape[0]),
            prompt_len,
            time.monotonic() - started,
        )
        return text.strip()

    @staticmethod
    def _timeout_message(stopper: Any, timeout_s: float, n_tokens: int) -> str:
        if stopper.reason == "cancelled":
            return f"generation cancelled after {n_tokens} new tokens"
        return f"generation exceeded its {timeout_s:.2f} s timeout after {n_tokens} new tokens"


_DEADLINE_CRITERIA_CLASS: Any = None


def _deadline_criteria(deadline: float, cancel: Optional[threading.Event]) -> Any:
    """A ``transformers.StoppingCriteria`` that stops when a monotonic deadline passes or ``cancel`` is set.

    transformers calls it after every decoding step. It records *why* it stopped in ``.reason`` and
    returns True, so generation ends cleanly (KV cache freed as usual); the backend then raises
    GenerationTimeout instead of returning a truncated answer. The class is defined on first use
    so that importing this module does not import transformers.
    """
    global _DEADLINE_CRITERIA_CLASS
    if _DEADLINE_CRITERIA_CLASS is None:
        import torch
        from transformers import StoppingCriteria

        class DeadlineStoppingCriteria(StoppingCriteria):
            def __init__(self, deadline: float, cancel: Optional[threading.Event]) -> None:
                self.deadline = deadline
                self.cancel = cancel
                self.reason: Optional[str] = None  # "cancelled" | "timeout" once expired

            def expired(self) -> bool:
                if self.cancel is not None and self.cancel.is_set():
                    self.reason = "cancelled"
                elif time.monotonic() >= self.deadline:
                    self.reason = "timeout"
                return self.reason is not None

            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                stop = self.expired()
                return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

        _DEADLINE_CRITERIA_CLASS = DeadlineStoppingCriteria
    return _DEADLINE_CRITERIA_CLASS(deadline, cancel)
