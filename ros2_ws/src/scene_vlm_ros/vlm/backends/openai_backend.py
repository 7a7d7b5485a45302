"""OpenAI-compatible HTTP backend (a vLLM / SGLang / llama.cpp server, or a hosted API).

The robot's node often runs on a small computer while the VLM lives on a GPU host serving many
robots; this client talks the de-facto standard ``/v1/chat/completions`` protocol to it. Images go
inline as ``data:image/png;base64,...`` URLs (PNG: lossless, so the object-ID markers arrive exactly
as rendered). Only the standard library does the HTTP (``http.client``), so the node needs no extra
dependency for it.

Robustness, because networks fail in the field:
- retries with exponential backoff on connection errors, 5xx and 429 (``Retry-After`` honoured),
  never on other 4xx (the request itself is wrong; repeating it cannot help);
- one overall deadline per ``generate()`` covering queueing, every attempt and every backoff;
- ``cancel`` is honoured while queued, between retries and during an in-flight request (the
  socket is shut down, which unblocks the waiting read);
- a semaphore caps simultaneous requests from this process (a shared server is not flooded).
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import os
import socket
import threading
import time
import urllib.parse
from typing import Any, Optional

import numpy as np

from ..types import GenerationRequest, GenerationTimeout, ModelError, ModelUnavailableError, VLMBackend
from .transformers_backend import cap_image_side, normalise_messages

logger = logging.getLogger(__name__)

#: How often waits (queue slot, in-flight request) look at the cancel event, seconds.
_CANCEL_POLL_S = 0.05


class _Retryable(Exception):
    """One attempt failed in a way that another attempt may fix (connection error, 5xx, 429)."""

    def __init__(self, message: str, retry_after_s: Optional[float] = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class _Cancelled(Exception):
    """The cancel event fired while a request was in flight."""


def encode_png_data_url(image: np.ndarray) -> str:
    """(H, W, 3) uint8 RGB -> ``data:image/png;base64,...`` (lossless)."""
    from PIL import Image

    buffer = io.BytesIO()
    # compress_level 1: PNG stays lossless; higher levels cost ~5x the time for ~10% fewer bytes.
    Image.fromarray(np.ascontiguousarray(image), mode="RGB").save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def to_openai_messages(messages: list[dict[str, Any]], max_image_side_px: int) -> list[dict[str, Any]]:
    """Our chat messages (see ``vlm/types.py``) -> OpenAI chat messages.

    A message with text only becomes ``{"role", "content": str}`` (accepted by every server); one with
    images becomes a list of ``{"type": "text"}`` and ``{"type": "image_url", "image_url": {"url": ...}}``
    parts in the original order. Images are capped to ``max_image_side_px`` (nearest) first.
    """
    converted: list[dict[str, Any]] = []
    for message in normalise_messages(messages):
        parts = message["content"]
        if all(part["type"] == "text" for part in parts):
            converted.append({"role": message["role"], "content": "".join(part["text"] for part in parts)})
            continue
        out_parts: list[dict[str, Any]] = []
        for part in parts:
            if part["type"] == "text":
                out_parts.append({"type": "text", "text": part["text"]})
            else:
                url = encode_png_data_url(cap_image_side(part["image"], max_image_side_px))
                out_parts.append({"type": "image_url", "image_url": {"url": url}})
        converted.append({"role": message["role"], "content": out_parts})
    return converted


def _split_base_url(base_url: str) -> tuple[str, str, str]:
    """``http(s)://host[:port][/prefix][/v1]`` -> (scheme, netloc, path prefix without ``/v1``)."""
    parsed = urllib.parse.urlsplit(base_url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"base_url {base_url!r} must look like http://host:port or https://host[/prefix][/v1]")
    prefix = parsed.path.rstrip("/")
    if prefix.endswith("/v1"):
        prefix = prefix[: -len("/v1")]
    return parsed.scheme, parsed.netloc, prefix


class OpenAIBackend(VLMBackend):
    """Chat completions against an OpenAI-compatible server.

    Args:
        base_url: server root, with or without a trailing ``/v1`` (``http://gpu-host:8000`` or ``.../v1``).
        model: the model name the server serves (checked against ``GET /v1/models`` by ``load()``).
        api_key: sent as ``Authorization: Bearer``; None reads ``OPENAI_API_KEY`` from the environment
            (keys do not belong in parameter files), and no header is sent when that is unset too.
        timeout_s: cap on one HTTP attempt, seconds; the ``generate()`` deadline caps everything too.
        max_retries: extra attempts after the first on connection errors, 5xx and 429.
        backoff_s: first backoff, doubled per retry (0.5, 1, 2, ...), seconds.
        max_concurrency: simultaneous requests from this backend instance.
        max_image_side_px: images' longer side is capped to this before encoding (GPT4Scene used 512).
    """

    name = "openai"
    needs_images = True

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 2,
        backoff_s: float = 0.5,
        max_concurrency: int = 2,
        max_image_side_px: int = 512,
    ) -> None:
        self._scheme, self._netloc, self._prefix = _split_base_url(base_url)
        if not model or not model.strip():
            raise ValueError("model must name the model served at base_url (see GET /v1/models)")
        if float(timeout_s) <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if int(max_retries) < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if float(backoff_s) < 0:
            raise ValueError(f"backoff_s must be >= 0, got {backoff_s}")
        if int(max_concurrency) < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if int(max_image_side_px) < 28:
            raise ValueError(f"max_image_side_px must be >= 28, got {max_image_side_px}")
        self.base_url = f"{self._scheme}://{self._netloc}{self._prefix}"
        self.model = model.strip()
        self._api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_concurrency = int(max_concurrency)
        self.max_image_side_px = int(max_image_side_px)
        self._slots = threading.BoundedSemaphore(self.max_concurrency)
        self._loaded = False
        #: Attempts made by the most recent completed generate() call in any thread (for diagnostics).
        self.last_attempts = 0

    # ---------------------------------------------------------------- lifecycle

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> None:
        """Check the server answers ``GET /v1/models`` and serves ``self.model``."""
        url = f"{self.base_url}/v1/models"
        try:
            status, body, _ = self._http("GET", "/v1/models", None, timeout_s=min(self.timeout_s, 10.0))
        except (OSError, http.client.HTTPException) as exc:
            raise ModelUnavailableError(
                f"cannot reach the VLM server at {url} ({type(exc).__name__}: {exc}); start it (e.g. "
                f"`vllm serve {self.model}`) or fix base_url"
            ) from exc
        if status in (401, 403):
            raise ModelUnavailableError(f"{url} refused the credentials (HTTP {status}); set api_key / OPENAI_API_KEY")
        if status != 200:
            raise ModelUnavailableError(f"{url} answered HTTP {status}: {_error_text(body)}")
        try:
            served = [str(entry["id"]) for entry in json.loads(body)["data"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelUnavailableError(f"{url} is not an OpenAI-compatible model list: {body[:200]!r}") from exc
        if self.model not in served:
            raise ModelUnavailableError(
                f"the server at {self.base_url} does not serve model {self.model!r}; it serves: {', '.join(served)}"
            )
        self._loaded = True
        logger.info("OpenAI-compatible server %s serves %s", self.base_url, self.model)

    def unload(self) -> None:
        self._loaded = False

    # ---------------------------------------------------------------- generation

    def build_payload(self, request: GenerationRequest) -> dict[str, Any]:
        """The JSON body of ``POST /v1/chat/completions`` for ``request`` (greedy, text only out)."""
        return {
            "model": self.model,
            "messages": to_openai_messages(request.messages, self.max_image_side_px),
            "max_tokens": max(1, int(request.max_new_tokens)),
            "temperature": 0,  # greedy: the same scene and question give the same answer
            "stream": False,
        }

    def generate(
        self, request: GenerationRequest, *, timeout_s: float, cancel: Optional[threading.Event] = None
    ) -> str:
        """Send the chat to the server and return the assistant's text.

        Raises:
            ModelUnavailableError: ``load()`` was not called (or failed).
            GenerationTimeout: the deadline passed or ``cancel`` was set (queued, in flight or backing off).
            ModelError: a 4xx answer, a malformed reply, bad messages, or every retry failed.
        """
        if not self._loaded:
            raise ModelUnavailableError(f"OpenAIBackend.load() has not succeeded for {self.base_url}")
        deadline = time.monotonic() + float(timeout_s)
        self._check(cancel, deadline, timeout_s, "before the request was sent")
        body = json.dumps(self.build_payload(request)).encode("utf-8")
        self._acquire_slot(cancel, deadline, timeout_s)
        try:
            return self._send_with_retries(body, deadline, timeout_s, cancel)
        finally:
            self._slots.release()

    def _send_with_retries(
        self, body: bytes, deadline: float, timeout_s: float, cancel: Optional[threading.Event]
    ) -> str:
        last_error = ""
        attempts = 0
        for attempt in range(self.max_retries + 1):
            self._check(cancel, deadline, timeout_s, f"after {attempts} attempts")
            attempts += 1
            remaining = deadline - time.monotonic()
            try:
                status, payload, headers = self._http(
                    "POST", "/v1/chat/completions", body, timeout_s=min(self.timeout_s, remaining), cancel=cancel
                )
                text = self._parse_completion(status, payload, headers)
                self.last_attempts = attempts
                return text
            except _Cancelled as exc:
                raise GenerationTimeout(f"request cancelled in flight after {attempts} attempt(s)") from exc
            except _Retryable as exc:
                last_error = str(exc)
                retry_after = exc.retry_after_s
            except TimeoutError as exc:
                if time.monotonic() >= deadline - 1e-3:
                    raise GenerationTimeout(
                        f"VLM server did not answer within the {timeout_s:.2f} s timeout ({attempts} attempt(s))"
                    ) from exc
                last_error = f"attempt timed out after {self.timeout_s:.1f} s"
                retry_after = None
            except (OSError, http.client.HTTPException) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                retry_after = None
            if attempt == self.max_retries:
                break
            wait_s = self.backoff_s * (2**attempt)
            if retry_after is not None:
                wait_s = max(wait_s, retry_after)
            logger.warning(
                "VLM server attempt %d/%d failed (%s); retrying in %.2f s",
                attempts,
                self.max_retries + 1,
                last_error,
                wait_s,
            )
            self._sleep(wait_s, cancel, deadline, timeout_s, attempts)
        self.last_attempts = attempts
        raise ModelError(f"VLM server at {self.base_url} failed after {attempts} attempt(s); last error: {last_error}")

    def _parse_completion(self, status: int, payload: bytes, headers: dict[str, str]) -> str:
        if status == 429 or status >= 500:
            raise _Retryable(f"HTTP {status}: {_error_text(payload)}", _retry_after(headers))
        if status != 200:
            raise ModelError(f"VLM server rejected the request with HTTP {status}: {_error_text(payload)}")
        try:
            reply = json.loads(payload)
            content = reply["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ModelError(f"VLM server sent an unusable completion: {payload[:200]!r}") from exc
        if isinstance(content, list):  # some servers return content parts
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        if not isinstance(content, str):
            raise ModelError(f"VLM server sent non-text content: {content!r:.200}")
        return content.strip()

    # ---------------------------------------------------------------- waiting helpers

    @staticmethod
    def _check(cancel: Optional[threading.Event], deadline: float, timeout_s: float, when: str) -> None:
        if cancel is not None and cancel.is_set():
            raise GenerationTimeout(f"request cancelled {when}")
        if time.monotonic() >= deadline:
            raise GenerationTimeout(f"request exceeded its {timeout_s:.2f} s timeout {when}")

    def _acquire_slot(self, cancel: Optional[threading.Event], deadline: float, timeout_s: float) -> None:
        while True:
            remaining = deadline - time.monotonic()
            if self._slots.acquire(timeout=max(0.0, min(_CANCEL_POLL_S, remaining))):
                return
            self._check(cancel, deadline, timeout_s, f"while waiting for one of {self.max_concurrency} request slots")

    def _sleep(
        self, wait_s: float, cancel: Optional[threading.Event], deadline: float, timeout_s: float, attempts: int
    ) -> None:
        end = min(time.monotonic() + wait_s, deadline)
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                break
            if cancel is not None:
                if cancel.wait(remaining):
                    break
            else:
                time.sleep(remaining)
        self._check(cancel, deadline, timeout_s, f"while backing off after {attempts} failed attempt(s)")

    # ---------------------------------------------------------------- HTTP

    def _http(
        self,
        method: str,
        path: str,
        body: Optional[bytes],
        *,
        timeout_s: float,
        cancel: Optional[threading.Event] = None,
    ) -> tuple[int, bytes, dict[str, str]]:
        """One HTTP exchange; returns (status, body, lower-cased headers).

        Raises OSError / http.client.HTTPException on transport failures, TimeoutError when the
        socket times out, and _Cancelled when ``cancel`` fires mid-request.
        """
        connection_cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        connection = connection_cls(self._netloc, timeout=max(timeout_s, 1e-3))
        headers = {"Accept": "application/json", "User-Agent": "scene_vlm_ros"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        done = threading.Event()
        cancelled = threading.Event()
        watcher = None
        if cancel is not None:
            # The blocking read cannot watch an event itself: a helper shuts the socket down when
            # cancel fires, which makes the read fail at once instead of at the timeout.
            def watch() -> None:
                while not cancel.wait(_CANCEL_POLL_S):
                    if done.is_set():
                        return
                cancelled.set()
                # The socket may not exist yet (still connecting): wait for it or for the end.
                while not done.is_set():
                    sock = connection.sock
                    if sock is not None:
                        try:
                            sock.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass  # already closed: nothing left to interrupt
                        return
                    done.wait(_CANCEL_POLL_S)

            watcher = threading.Thread(target=watch, name="openai-cancel-watch", daemon=True)
            watcher.start()
        try:
            connection.request(method, self._prefix + path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            return response.status, payload, {k.lower(): v for k, v in response.getheaders()}
        except (OSError, http.client.HTTPException):
            if cancelled.is_set():
                raise _Cancelled() from None
            raise
        finally:
            done.set()
            connection.close()
            if watcher is not None:
                watcher.join(timeout=1.0)


def _error_text(payload: bytes) -> str:
    """The server's error message (OpenAI ``{"error": {"message"}}`` or raw text), shortened."""
    try:
        data = json.loads(payload)
        if isinstance(data, dict):
            error = data.get("error", data)
            if isinstance(error, dict) and "message" in error:
                return str(error["message"])[:300]
            if isinstance(error, str):
                return error[:300]
    except ValueError:
        pass
    return payload[:300].decode("utf-8", errors="replace")


def _retry_after(headers: dict[str, str]) -> Optional[float]:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff
