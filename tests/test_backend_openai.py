"""OpenAIBackend against a small OpenAI-compatible server started by the test on 127.0.0.1.

The server is scripted per test: each POST to ``/v1/chat/completions`` takes the next action from
a queue (answer, HTTP error, hang, slow answer) and records the request; it counts simultaneous
requests so the concurrency cap can be checked. Hangs are bounded and end when the server stops.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from PIL import Image

from scene_vlm_ros.vlm.backends.openai_backend import OpenAIBackend
from scene_vlm_ros.vlm.types import GenerationRequest, GenerationTimeout, ModelError, ModelUnavailableError, Task

MODEL = "gpt4scene-qwen2vl"


@dataclass
class ServerState:
    """What the fake server will do next and what it has seen."""

    script: list[tuple] = field(default_factory=list)
    default: tuple = ("ok", "<OBJ003>.")
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    active: int = 0
    max_active: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def next_action(self) -> tuple:
        with self.lock:
            return self.script.pop(0) if self.script else self.default


def _make_handler(state: ServerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
            pass

        def _send(self, status: int, payload: dict[str, Any], extra: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            if self.path != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            with state.lock:
                state.requests.append(body)
                state.headers.append({k.lower(): v for k, v in self.headers.items()})
                state.active += 1
                state.max_active = max(state.max_active, state.active)
            try:
                action = state.next_action()
                kind = action[0]
                if kind == "hang":
                    state.stop.wait(action[1])  # bounded; ends early when the server stops
                    return
                if kind == "slow_ok":
                    time.sleep(action[1])
                    kind, action = "ok", ("ok", action[2])
                if kind == "ok":
                    completion = {
                        "id": "cmpl-1",
                        "object": "chat.completion",
                        "model": body.get("model"),
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": action[1]}}],
                    }
                    self._send(200, completion)
                elif kind == "status":
                    extra = {"Retry-After": "0"} if action[1] == 429 else None
                    self._send(action[1], {"error": {"message": f"scripted {action[1]}"}}, extra)
            finally:
                with state.lock:
                    state.active -= 1

    return Handler


@pytest.fixture()
def server() -> Iterator[tuple[str, ServerState]]:
    state = ServerState()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    finally:
        state.stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)]


def _request(images: list[np.ndarray] | None = None, max_new_tokens: int = 16) -> GenerationRequest:
    images = _images() if images is None else images
    content: list[dict[str, Any]] = [{"type": "image", "image": im} for im in images]
    content.append({"type": "text", "text": 'Share the ID of the object that best fits the description "the mug".'})
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "You see a scene."}]},
        {"role": "user", "content": content},
    ]
    return GenerationRequest(messages=messages, task=Task.GROUNDING, question="the mug", max_new_tokens=max_new_tokens)


def _backend(url: str, **kwargs: Any) -> OpenAIBackend:
    kwargs.setdefault("backoff_s", 0.01)
    b = OpenAIBackend(url, MODEL, **kwargs)
    b.load()
    return b


def test_answers_grounding(server: tuple[str, ServerState]) -> None:
    url, state = server
    assert _backend(url).generate(_request(), timeout_s=5.0) == "<OBJ003>."
    assert len(state.requests) == 1


def test_request_body_carries_images_and_text(server: tuple[str, ServerState]) -> None:
    url, state = server
    images = _images()
    _backend(url, api_key="sk-test").generate(_request(images, max_new_tokens=7), timeout_s=5.0)
    body = state.requests[0]
    assert body["model"] == MODEL and body["max_tokens"] == 7 and body["temperature"] == 0
    assert body["messages"][0] == {"role": "system", "content": "You see a scene."}
    parts = body["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    assert "the mug" in parts[2]["text"]
    for part, original in zip(parts[:2], images):
        url_text = part["image_url"]["url"]
        assert url_text.startswith("data:image/png;base64,")
        decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(url_text.split(",", 1)[1]))).convert("RGB"))
        np.testing.assert_array_equal(decoded, original)  # PNG is lossless: the same pixels arrive
    assert state.headers[0]["authorization"] == "Bearer sk-test"


def test_large_images_are_capped_before_encoding(server: tuple[str, ServerState]) -> None:
    url, state = server
    big = np.zeros((480, 640, 3), np.uint8)
    _backend(url, max_image_side_px=320).generate(_request([big]), timeout_s=5.0)
    data = state.requests[0]["messages"][1]["content"][0]["image_url"]["url"].split(",", 1)[1]
    assert Image.open(io.BytesIO(base64.b64decode(data))).size == (320, 240)


def test_base_url_with_v1_suffix(server: tuple[str, ServerState]) -> None:
    url, _ = server
    assert _backend(url + "/v1/").generate(_request(), timeout_s=5.0) == "<OBJ003>."


def test_retries_503_then_succeeds(server: tuple[str, ServerState]) -> None:
    url, state = server
    state.script = [("status", 503), ("status", 503), ("ok", "Yes. <OBJ001> and <OBJ002>.")]
    backend = _backend(url, max_retries=2)
    assert backend.generate(_request(), timeout_s=5.0) == "Yes. <OBJ001> and <OBJ002>."
    assert len(state.requests) == 3 and backend.last_attempts == 3


def test_retries_429(server: tuple[str, ServerState]) -> None:
    url, state = server
    state.script = [("status", 429), ("ok", "No.")]
    assert _backend(url, max_retries=1).generate(_request(), timeout_s=5.0) == "No."
    assert len(state.requests) == 2


def test_gives_up_after_max_retries(server: tuple[str, ServerState]) -> None:
    url, state = server
    state.default = ("status", 500)
    with pytest.raises(ModelError, match=r"failed after 3 attempt\(s\).*HTTP 500.*scripted 500"):
        _backend(url, max_retries=2).generate(_request(), timeout_s=5.0)
    assert len(state.requests) == 3


def test_400_is_not_retried(server: tuple[str, ServerState]) -> None:
    url, state = server
    state.script = [("status", 400)]
    with pytest.raises(ModelError, match="HTTP 400: scripted 400"):
        _backend(url, max_retries=3).generate(_request(), timeout_s=5.0)
    assert len(state.requests) == 1


def test_hanging_server_times_out(server: tuple[str, ServerState]) -> None:
    url, state = server
    state.default = ("hang", 10.0)
    started = time.monotonic()
    with pytest.raises(GenerationTimeout, match="timeout"):
        _backend(url).generate(_request(), timeout_s=0.5)
    assert time.monotonic() - started < 2.5


def test_cancel_in_flight(server: tuple[str, ServerState]) -> None:
    url, state = server
    state.default = ("hang", 10.0)
    cancel = threading.Event()
    timer = threading.Timer(0.3, cancel.set)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(GenerationTimeout, match="cancelled"):
            _backend(url).generate(_request(), timeout_s=8.0, cancel=cancel)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 2.0


def test_cancel_between_retries(server: tuple[str, ServerState]) -> None:
    url, state = server
    state.default = ("status", 503)
    cancel = threading.Event()
    timer = threading.Timer(0.3, cancel.set)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(GenerationTimeout, match="cancelled"):
            _backend(url, max_retries=5, backoff_s=5.0).generate(_request(), timeout_s=30.0, cancel=cancel)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 2.0
    assert len(state.requests) == 1  # cancelled during the first backoff, no second attempt


def test_preset_cancel_sends_nothing(server: tuple[str, ServerState]) -> None:
    url, state = server
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(GenerationTimeout):
        _backend(url).generate(_request(), timeout_s=5.0, cancel=cancel)
    assert state.requests == []


def test_concurrency_limit(server: tuple[str, ServerState]) -> None:
    url, state = server
    state.default = ("slow_ok", 0.15, "<OBJ000>.")
    backend = _backend(url, max_concurrency=2)
    results: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(backend.generate(_request([]), timeout_s=10.0))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=15)
    assert not errors and results == ["<OBJ000>."] * 6
    assert state.max_active == 2  # the cap was reached and never exceeded


def test_load_fails_when_unreachable() -> None:
    import socket

    with socket.socket() as probe:  # a port that was free a moment ago, with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ModelUnavailableError, match="cannot reach"):
        OpenAIBackend(f"http://127.0.0.1:{port}", MODEL).load()


def test_load_fails_when_model_not_served(server: tuple[str, ServerState]) -> None:
    url, _ = server
    with pytest.raises(ModelUnavailableError, match=f"does not serve model 'other'.*{MODEL}"):
        OpenAIBackend(url, "other").load()


def test_generate_requires_load(server: tuple[str, ServerState]) -> None:
    url, state = server
    with pytest.raises(ModelUnavailableError, match="load"):
        OpenAIBackend(url, MODEL).generate(_request(), timeout_s=5.0)
    assert state.requests == []


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="base_url"):
        OpenAIBackend("localhost:8000", MODEL)
    with pytest.raises(ValueError, match="max_concurrency"):
        OpenAIBackend("http://127.0.0.1:1", MODEL, max_concurrency=0)
    with pytest.raises(ValueError, match="model"):
        OpenAIBackend("http://127.0.0.1:1", " ")
