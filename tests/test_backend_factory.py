"""make_backend: kinds, parameter checks, lazy heavy imports, load errors surfacing from load()."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scene_vlm_ros.vlm.backends.factory import BACKEND_KINDS, backend_class, make_backend
from scene_vlm_ros.vlm.types import GenerationRequest, ModelUnavailableError, Task, VLMBackend


def test_unknown_kind_lists_the_kinds() -> None:
    with pytest.raises(ValueError, match="unknown VLM backend kind 'llama'.*fallback, transformers, openai"):
        make_backend("llama")


def test_unknown_and_missing_parameters_are_named() -> None:
    with pytest.raises(ValueError, match=r"does not take parameter\(s\) model_pth.*model_path"):
        make_backend("transformers", model_pth="/x")
    with pytest.raises(ValueError, match=r"needs parameter\(s\) model"):
        make_backend("openai", base_url="http://127.0.0.1:1")


def test_construction_is_cheap_and_load_reports_missing_model(tmp_path: Path) -> None:
    backend = make_backend("Transformers", model_path=tmp_path / "not-downloaded")
    assert isinstance(backend, VLMBackend) and not backend.loaded
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        backend.load()


def test_openai_kind_load_reports_unreachable_server() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend = make_backend("openai", base_url=f"http://127.0.0.1:{port}", model="m", timeout_s=2.0)
    with pytest.raises(ModelUnavailableError, match="cannot reach"):
        backend.load()


def test_no_heavy_imports_until_load() -> None:
    """The node must start fast: building model backends must not import torch or transformers."""
    code = (
        "import sys\n"
        "from scene_vlm_ros.vlm.backends.factory import make_backend\n"
        "make_backend('transformers', model_path='/nonexistent')\n"
        "make_backend('openai', base_url='http://127.0.0.1:1', model='m')\n"
        "print(','.join(m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == ""


def test_fallback_kind() -> None:
    pytest.importorskip("scene_vlm_ros.vlm.backends.fallback", reason="fallback backend not written yet")
    backend = make_backend("fallback")
    assert type(backend).__name__ == "FallbackBackend" and isinstance(backend, VLMBackend)


def test_every_kind_maps_to_a_backend_class() -> None:
    for kind in BACKEND_KINDS:
        if kind == "fallback":
            try:
                cls = backend_class(kind)
            except ModuleNotFoundError:
                continue
        else:
            cls = backend_class(kind)
        assert issubclass(cls, VLMBackend)


def test_transformers_kind_loads_and_generates(tmp_path: Path) -> None:
    from scene_vlm_ros.vlm.backends.tiny import build_tiny_qwen2vl

    model_dir = build_tiny_qwen2vl(tmp_path / "tiny", seed=1)
    backend = make_backend("transformers", model_path=str(model_dir), device="cpu", max_new_tokens=4)
    backend.load()
    image = np.full((56, 56, 3), 200, np.uint8)
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Hi"}]}]
    reply = backend.generate(GenerationRequest(messages=messages, task=Task.QA, question="Hi"), timeout_s=30.0)
    assert isinstance(reply, str)


def test_fallback_rejects_parameters() -> None:
    pytest.importorskip("scene_vlm_ros.vlm.backends.fallback", reason="fallback backend not written yet")
    if inspect.signature(backend_class("fallback")).parameters:
        pytest.skip("FallbackBackend takes parameters")
    with pytest.raises(ValueError, match="does not take parameter.*model_path.*accepts: none"):
        make_backend("fallback", model_path="/x")
