"""TransformersBackend through its real loading path, on a tiny random Qwen2-VL built locally.

The checkpoint is written by ``vlm/backends/tiny.py`` (no hub here) in the standard Hugging Face
layout, loaded with ``AutoProcessor`` / ``AutoModelForImageTextToText`` and decoded greedily.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from scene_vlm_ros.vlm.backends.tiny import build_tiny_qwen2vl
from scene_vlm_ros.vlm.backends.transformers_backend import (
    MessageFormatError,
    TransformersBackend,
    cap_image_side,
    normalise_messages,
)
from scene_vlm_ros.vlm.types import GenerationRequest, GenerationTimeout, ModelError, ModelUnavailableError, Task

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny_qwen2vl"), seed=0)


@pytest.fixture(scope="session")
def backend(tiny_dir: Path) -> TransformersBackend:
    b = TransformersBackend(tiny_dir, device="cpu", max_new_tokens=8)
    b.load()
    return b


def _messages(seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {"role": "system", "content": [{"type": "text", "text": "You are a robot that knows the room."}]},
        {
            "role": "user",
            "content": [
                {"type": "image", "image": rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)},
                {"type": "image", "image": rng.integers(0, 256, (112, 84, 3), dtype=np.uint8)},
                {"type": "text", "text": 'Share the ID of the object that best fits the description "the chair".'},
            ],
        },
    ]


def _request(max_new_tokens: int = 8, seed: int = 0) -> GenerationRequest:
    return GenerationRequest(
        messages=_messages(seed), task=Task.GROUNDING, question="the chair", max_new_tokens=max_new_tokens
    )


class _CountingEvent(threading.Event):
    """An event whose ``is_set`` turns True on its ``set_on``-th poll, counting every poll."""

    def __init__(self, set_on: int | None) -> None:
        super().__init__()
        self.polls = 0
        self.set_on = set_on

    def is_set(self) -> bool:
        self.polls += 1
        return self.set_on is not None and self.polls >= self.set_on


# ------------------------------------------------------------------ the checkpoint itself


def test_tiny_checkpoint_has_the_standard_layout(tiny_dir: Path) -> None:
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2_vl"
    assert config["text_config"]["hidden_size"] == 64 and config["vision_config"]["depth"] == 2
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (tiny_dir / name).is_file(), name
    assert (tiny_dir / "chat_template.jinja").is_file() or (tiny_dir / "chat_template.json").is_file()


def test_same_seed_gives_same_weights(tiny_dir: Path, tmp_path: Path) -> None:
    again = build_tiny_qwen2vl(tmp_path / "again", seed=0)
    assert (again / "model.safetensors").read_bytes() == (tiny_dir / "model.safetensors").read_bytes()


# ------------------------------------------------------------------ inputs


def test_inputs_carry_both_images_and_mm_token_type_ids(backend: TransformersBackend) -> None:
    inputs = backend.build_inputs(_messages())
    grid = inputs["image_grid_thw"]
    assert tuple(grid.shape) == (2, 3)
    image_token_id = backend._model.config.image_token_id
    n_placeholders = int((inputs["input_ids"] == image_token_id).sum())
    # One placeholder per 2x2-merged patch, for both images together.
    assert n_placeholders == int(grid.prod(dim=1).sum()) // 4
    assert int((inputs["mm_token_type_ids"] == 1).sum()) == n_placeholders
    assert inputs["pixel_values"].shape[0] == int(grid.prod(dim=1).sum())
    text = backend._processor.tokenizer.decode(inputs["input_ids"][0])
    assert "the chair" in text and text.count("<|vision_start|>") == 2
    assert text.rstrip().endswith("<|im_start|>assistant")


def test_cap_image_side_uses_nearest_and_keeps_aspect() -> None:
    image = np.zeros((768, 1024, 3), np.uint8)
    image[:, 512:] = (255, 0, 0)
    capped = cap_image_side(image, 512)
    assert capped.shape == (384, 512, 3)
    # Nearest resampling: no blended colours at the boundary.
    assert {tuple(c) for c in capped.reshape(-1, 3)} == {(0, 0, 0), (255, 0, 0)}
    small = np.zeros((100, 50, 3), np.uint8)
    assert cap_image_side(small, 512) is small


def test_bad_messages_raise_message_format_error() -> None:
    with pytest.raises(MessageFormatError, match="uint8"):
        normalise_messages([{"role": "user", "content": [{"type": "image", "image": np.zeros((4, 4, 3))}]}])
    with pytest.raises(MessageFormatError, match="role"):
        normalise_messages([{"role": "robot", "content": "hi"}])
    with pytest.raises(MessageFormatError, match="non-empty"):
        normalise_messages([])
    assert normalise_messages([{"role": "user", "content": "hi"}])[0]["content"] == [{"type": "text", "text": "hi"}]


# ------------------------------------------------------------------ generation


def test_generate_returns_text_and_is_greedy(backend: TransformersBackend) -> None:
    first = backend.generate(_request(), timeout_s=30.0)
    second = backend.generate(_request(), timeout_s=30.0)
    assert isinstance(first, str)
    assert first == second  # greedy decoding is deterministic
    assert "<|im_end|>" not in first and "<|image_pad|>" not in first  # only new tokens, specials skipped


def test_max_new_tokens_bounds_decoding_steps(backend: TransformersBackend) -> None:
    never = _CountingEvent(set_on=None)
    backend.generate(_request(max_new_tokens=3), timeout_s=30.0, cancel=never)
    # Two polls before decoding, then at most one per generated token.
    assert 3 <= never.polls <= 2 + 3


def test_preset_cancel_raises_timeout(backend: TransformersBackend) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(GenerationTimeout, match="cancel"):
        backend.generate(_request(), timeout_s=30.0, cancel=cancel)


def test_tiny_timeout_raises_timeout(backend: TransformersBackend) -> None:
    with pytest.raises(GenerationTimeout, match="timeout"):
        backend.generate(_request(), timeout_s=0.0)


def test_cancel_during_decoding_is_honoured_by_stopping_criteria(backend: TransformersBackend) -> None:
    cancel = _CountingEvent(set_on=3)  # clear for the two pre-checks, set at the first decoding step
    with pytest.raises(GenerationTimeout, match=r"cancelled after [1-9]"):
        backend.generate(_request(max_new_tokens=8), timeout_s=30.0, cancel=cancel)
    assert cancel.polls == 3


def test_bad_image_surfaces_as_model_error(backend: TransformersBackend) -> None:
    request = _request()
    request.messages[1]["content"][0]["image"] = np.zeros((10, 10, 4), np.uint8)
    with pytest.raises(ModelError, match="shape"):
        backend.generate(request, timeout_s=30.0)


def test_generate_before_load_and_after_unload(tiny_dir: Path) -> None:
    b = TransformersBackend(tiny_dir, device="cpu")
    assert not b.loaded
    with pytest.raises(ModelUnavailableError, match="load"):
        b.generate(_request(), timeout_s=5.0)
    b.load()
    assert b.loaded and isinstance(b.generate(_request(max_new_tokens=2), timeout_s=30.0), str)
    b.unload()
    assert not b.loaded
    with pytest.raises(ModelUnavailableError):
        b.generate(_request(), timeout_s=5.0)


def test_legacy_flat_layout_loads_and_generates(tiny_dir: Path, tmp_path: Path) -> None:
    """The layout of Qwen2-VL checkpoints saved by transformers 4.4x (GPT4Scene's release).

    Flat text config with ``rope_scaling: {type: mrope}``, ``preprocessor_config.json`` with
    min/max_pixels, and ``chat_template.json``.
    """
    legacy = tmp_path / "legacy"
    shutil.copytree(tiny_dir, legacy)
    config = json.loads((legacy / "config.json").read_text())
    text = config.pop("text_config")
    rope = text.pop("rope_parameters")
    text.pop("model_type")
    text.pop("layer_types")
    config.update(text)
    config["rope_scaling"] = {"type": "mrope", "mrope_section": rope["mrope_section"]}
    config["rope_theta"] = rope["rope_theta"]
    config["vision_config"].pop("rope_parameters")
    (legacy / "config.json").write_text(json.dumps(config))
    processor_config = json.loads((legacy / "processor_config.json").read_text())
    (legacy / "processor_config.json").unlink()
    image_cfg = processor_config["image_processor"]
    size = image_cfg.pop("size")
    image_cfg.update(min_pixels=size["shortest_edge"], max_pixels=size["longest_edge"])
    image_cfg["processor_class"] = "Qwen2VLProcessor"
    (legacy / "preprocessor_config.json").write_text(json.dumps(image_cfg))
    template = (legacy / "chat_template.jinja").read_text()
    (legacy / "chat_template.jinja").unlink()
    (legacy / "chat_template.json").write_text(json.dumps({"chat_template": template}))

    b = TransformersBackend(legacy, device="cpu", max_new_tokens=4)
    b.load()
    reference = TransformersBackend(tiny_dir, device="cpu", max_new_tokens=4)
    reference.load()
    # Same weights, same processor settings -> the same greedy answer.
    assert b.generate(_request(), timeout_s=30.0) == reference.generate(_request(), timeout_s=30.0)


def test_qwen2_5_vl_family_loads_and_generates(tmp_path: Path) -> None:
    ckpt = build_tiny_qwen2vl(tmp_path / "tiny25", seed=0, model_type="qwen2_5_vl")
    assert json.loads((ckpt / "config.json").read_text())["model_type"] == "qwen2_5_vl"
    b = TransformersBackend(ckpt, device="cpu", max_new_tokens=4)
    b.load()
    assert type(b._model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    inputs = b.build_inputs(_messages())
    assert int((inputs["mm_token_type_ids"] == 1).sum()) == int(inputs["image_grid_thw"].prod(dim=1).sum()) // 4
    assert isinstance(b.generate(_request(), timeout_s=30.0), str)


# ------------------------------------------------------------------ load failures


def _copy(tiny_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "ckpt"
    shutil.copytree(tiny_dir, target)
    return target


def test_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError, match="does not exist.*download"):
        TransformersBackend(tmp_path / "nope").load()


def test_missing_config(tiny_dir: Path, tmp_path: Path) -> None:
    ckpt = _copy(tiny_dir, tmp_path)
    (ckpt / "config.json").unlink()
    with pytest.raises(ModelUnavailableError, match="no config.json"):
        TransformersBackend(ckpt).load()


def test_corrupt_config(tiny_dir: Path, tmp_path: Path) -> None:
    ckpt = _copy(tiny_dir, tmp_path)
    (ckpt / "config.json").write_text('{"model_type": "qwen2_vl", ')
    with pytest.raises(ModelUnavailableError, match="not valid JSON"):
        TransformersBackend(ckpt).load()


def test_unsupported_model_type(tiny_dir: Path, tmp_path: Path) -> None:
    ckpt = _copy(tiny_dir, tmp_path)
    config = json.loads((ckpt / "config.json").read_text())
    config["model_type"] = "llava"
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelUnavailableError, match=r"'llava' is not supported.*qwen2_vl"):
        TransformersBackend(ckpt).load()


def test_missing_weights(tiny_dir: Path, tmp_path: Path) -> None:
    ckpt = _copy(tiny_dir, tmp_path)
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(ModelUnavailableError, match="no weights"):
        TransformersBackend(ckpt).load()


def test_missing_shard(tiny_dir: Path, tmp_path: Path) -> None:
    ckpt = _copy(tiny_dir, tmp_path)
    (ckpt / "model.safetensors").rename(ckpt / "model-00001-of-00002.safetensors")
    shards = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    index = {"metadata": {}, "weight_map": shards}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelUnavailableError, match="missing 1 of 2 weight shards"):
        TransformersBackend(ckpt).load()


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_weights(tiny_dir: Path, tmp_path: Path, damage: str) -> None:
    ckpt = _copy(tiny_dir, tmp_path)
    weights = ckpt / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00" * 1024)
    with pytest.raises(ModelUnavailableError, match="corrupt or incomplete"):
        TransformersBackend(ckpt).load()


def test_weights_missing_a_tensor_are_refused(tiny_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    ckpt = _copy(tiny_dir, tmp_path)
    state = load_file(ckpt / "model.safetensors")
    dropped = sorted(k for k in state if "layers.1." in k)[0]
    del state[dropped]
    save_file(state, ckpt / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelUnavailableError, match="1 missing"):
        TransformersBackend(ckpt).load()


def test_missing_tokenizer(tiny_dir: Path, tmp_path: Path) -> None:
    ckpt = _copy(tiny_dir, tmp_path)
    (ckpt / "tokenizer.json").unlink()
    with pytest.raises(ModelUnavailableError, match="tokenizer"):
        TransformersBackend(ckpt).load()


def test_cuda_requested_without_cuda(tiny_dir: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here; the failure path needs a CPU-only host")
    with pytest.raises(ModelUnavailableError, match="CUDA is not available"):
        TransformersBackend(tiny_dir, device="cuda").load()


def test_4bit_without_cuda(tiny_dir: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here; the failure path needs a CPU-only host")
    with pytest.raises(ModelUnavailableError, match="load_in_4bit needs a CUDA device"):
        TransformersBackend(tiny_dir, load_in_4bit=True).load()


def test_constructor_rejects_bad_settings(tiny_dir: Path) -> None:
    with pytest.raises(ValueError, match="dtype"):
        TransformersBackend(tiny_dir, dtype="int3")
    with pytest.raises(ValueError, match="device"):
        TransformersBackend(tiny_dir, device="tpu")
    with pytest.raises(ValueError, match="max_new_tokens"):
        TransformersBackend(tiny_dir, max_new_tokens=0)


def test_no_trust_remote_code_anywhere() -> None:
    """Loading must never execute code shipped inside a checkpoint."""
    offenders = []
    for root in (REPO_ROOT / "ros2_ws" / "src", REPO_ROOT / "training"):
        for path in root.rglob("*.py") if root.is_dir() else []:
            for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                if re.search(r"trust_remote_code", line) and not re.search(r"trust_remote_code\s*=\s*False", line):
                    offenders.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert not offenders, "trust_remote_code found:\n" + "\n".join(offenders)


# ------------------------------------------------------------------ GPU latency script (CPU-checkable parts)


def test_bench_gpu_skips_cleanly_without_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from scene_vlm_ros.commands import bench_gpu

    if torch.cuda.is_available():
        pytest.skip("CUDA is available; the skip path needs a CPU-only host")
    result = bench_gpu.bench_gpu_latency(n=1)
    assert result["skipped"] is True and "CUDA" in result["reason"]
    assert bench_gpu.main(["--n", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] is True


def test_bench_config_is_qwen2vl_7b() -> None:
    import torch

    from scene_vlm_ros.commands.bench_gpu import qwen2vl_7b_config, random_model

    config = qwen2vl_7b_config()
    text = config.text_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == (
        3584,
        28,
        28,
        4,
    )
    head_dim = text.hidden_size // text.num_attention_heads
    assert 2 * sum(text.rope_parameters["mrope_section"]) == head_dim == 128
    model = random_model(config, "meta", torch.bfloat16)  # shapes only, no memory
    n_params = sum(p.numel() for p in model.parameters())
    assert 8.2e9 < n_params < 8.4e9  # Qwen2-VL-7B-Instruct has 8.29B parameters


def test_bench_loop_runs_on_tiny_model(tiny_dir: Path) -> None:
    import torch
    from transformers import AutoProcessor, Qwen2VLConfig

    from scene_vlm_ros.commands.bench_gpu import random_model, time_grounding_queries

    config = Qwen2VLConfig.from_pretrained(tiny_dir)
    model = random_model(config, "cpu", torch.float32)
    image_processor = AutoProcessor.from_pretrained(tiny_dir, local_files_only=True).image_processor
    stats = time_grounding_queries(
        model, config, image_processor, "cpu", n=2, frames=2, image_px=112, new_tokens=3, warmup=0
    )
    assert stats["images"] == 3 and stats["new_tokens"] == 3
    # 48 prefix + 40 suffix text tokens, per image: start/end markers and a 6-token caption.
    assert stats["prompt_tokens"] == stats["image_tokens"] + 48 + 40 + 3 * (2 + 6)
    assert stats["image_tokens"] > 0 and 0 < stats["p50_ms"] <= stats["p95_ms"]
