"""Answering one query against one snapshot, and the bounded worker that runs queries (no rclpy).

The node's service callback validates the request, takes a snapshot, and hands both to a
:class:`QueryWorker`. The worker owns a bounded queue (BUSY when full), runs the
:class:`QueryEngine` on its own threads (so mapping never waits for the model) and enforces
each request's deadline itself: a backend that ignores its timeout still yields TIMEOUT on time.
"""

from __future__ import annotations

import enum
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

from ..core.types import Instance, SceneSnapshot
from .routing import infer_task
from .types import GenerationRequest, GenerationTimeout, ModelError, ModelUnavailableError, Task, VLMBackend

log = logging.getLogger(__name__)

#: Longest question accepted (characters); SceneQuery.srv documents the same bound.
MAX_QUESTION_CHARS = 2000
#: Longest deadline the worker arms (s): larger values overflow ``threading.Timer`` (its thread dies).
_MAX_TIMER_S = 1e6


class ErrorCode(enum.IntEnum):
    """Mirror of SceneQuery.srv's response constants (the .srv is the source of truth)."""

    SUCCESS = 0
    INVALID_REQUEST = 1
    NO_MAP_YET = 2
    NO_MATCH = 3
    BUSY = 4
    TIMEOUT = 5
    MODEL_UNAVAILABLE = 6
    MODEL_ERROR = 7


@dataclass
class QueryRequest:
    question: str
    task: Task = Task.AUTO
    object_id: int = -1
    timeout_s: float = 0.0


@dataclass
class QueryResult:
    error_code: ErrorCode
    error_msg: str = ""
    answer: str = ""
    instances: list[Instance] = field(default_factory=list)
    unknown_ids: list[int] = field(default_factory=list)
    snapshot_stamp_s: float = 0.0
    frame_id: str = "map"
    latency_s: float = 0.0
    timings_ms: dict[str, float] = field(default_factory=dict)


def validate_request(req: QueryRequest, max_chars: int = MAX_QUESTION_CHARS) -> Optional[QueryResult]:
    """INVALID_REQUEST result for a malformed request, else None."""
    question = req.question if isinstance(req.question, str) else ""
    if req.task != Task.CAPTION and not question.strip():
        return QueryResult(ErrorCode.INVALID_REQUEST, "question is empty")
    if len(question) > max_chars:
        return QueryResult(
            ErrorCode.INVALID_REQUEST, f"question is {len(question)} characters long; the limit is {max_chars}"
        )
    if "\x00" in question:
        return QueryResult(ErrorCode.INVALID_REQUEST, "question contains a NUL character")
    if req.task == Task.CAPTION and req.object_id < 0:
        return QueryResult(ErrorCode.INVALID_REQUEST, "task CAPTION needs object_id >= 0")
    if not math.isfinite(req.timeout_s) or req.timeout_s < 0:
        return QueryResult(ErrorCode.INVALID_REQUEST, f"timeout_s must be finite and >= 0 (got {req.timeout_s})")
    return None


class QueryEngine:
    """Snapshot + question -> prompt -> backend -> parsed answer -> instances.

    ``backend`` may be None (no model configured and the fallback disabled); ``backend_error``
    then explains why and every query gets MODEL_UNAVAILABLE with that message.
    ``prompt_profile`` (a name or :class:`~scene_vlm_ros.vlm.prompts.PromptProfile`) chooses how
    the prompt is built; ``n_frames`` / ``image_size_px`` override the profile's values when given
    (None keeps the profile's: 8 frames for ``default``, 32 for ``gpt4scene``).
    """

    def __init__(
        self,
        backend: Optional[VLMBackend],
        backend_error: str = "",
        n_frames: Optional[int] = None,
        image_size_px: Optional[int] = None,
        max_new_tokens: int = 64,
        prompt_profile: Any = None,
    ):
        from .prompts import get_profile  # raises ValueError for an unknown name: fail at configuration

        self.backend = backend
        self.backend_error = backend_error
        self.profile = get_profile(prompt_profile)
        self.n_frames = self.profile.n_frames if n_frames is None else int(n_frames)
        self.image_size_px = self.profile.image_size_px if image_size_px is None else int(image_size_px)
        self.max_new_tokens = max_new_tokens

    def answer(
        self,
        req: QueryRequest,
        snapshot: SceneSnapshot,
        deadline_s: float,
        cancel: Optional[threading.Event] = None,
    ) -> QueryResult:
        """Answer ``req`` from ``snapshot``; ``deadline_s`` is a ``time.monotonic()`` instant."""
        from .parsing import instances_for, parse_answer  # local: keeps node start-up light

        t0 = time.monotonic()
        timings: dict[str, float] = {}
        base = dict(snapshot_stamp_s=snapshot.stamp_s, frame_id=snapshot.frame_id)
        if self.backend is None:
            return QueryResult(ErrorCode.MODEL_UNAVAILABLE, self.backend_error or "no model configured", **base)
        if snapshot.is_empty:
            return QueryResult(ErrorCode.NO_MAP_YET, "no frame has been integrated yet", **base)
        task = infer_task(req.question) if req.task == Task.AUTO else req.task
        if task == Task.CAPTION and snapshot.instance(req.object_id) is None:
            return QueryResult(ErrorCode.INVALID_REQUEST, f"object_id {req.object_id} is not in the map", **base)

        messages: list[dict] = []
        if self.backend.needs_images:
            from .prompts import build_prompt

            bundle = build_prompt(
                snapshot, req.question, task, n_frames=self.n_frames, object_id=req.object_id,
                image_size=self.image_size_px, profile=self.profile,
            )
            messages = bundle.messages
            timings.update({f"prompt_{k}": v for k, v in getattr(bundle, "timings_ms", {}).items()})
        timings["prompt_total"] = (time.monotonic() - t0) * 1e3

        remaining = deadline_s - time.monotonic()
        if remaining <= 0:
            return QueryResult(ErrorCode.TIMEOUT, "deadline passed while building the prompt", **base)
        gen_req = GenerationRequest(
            messages=messages, task=task, question=req.question, snapshot=snapshot,
            object_id=req.object_id, max_new_tokens=self.max_new_tokens,
        )
        t_gen = time.monotonic()
        try:
            text = self.backend.generate(gen_req, timeout_s=remaining, cancel=cancel)
        except GenerationTimeout as exc:
            return QueryResult(ErrorCode.TIMEOUT, f"model did not answer in time: {exc}", **base)
        except ModelUnavailableError as exc:
            return QueryResult(ErrorCode.MODEL_UNAVAILABLE, str(exc), **base)
        except ModelError as exc:
            return QueryResult(ErrorCode.MODEL_ERROR, str(exc), **base)
        except Exception as exc:  # a backend bug must not take the worker down
            log.exception("backend %s raised", self.backend.name)
            return QueryResult(ErrorCode.MODEL_ERROR, f"{type(exc).__name__}: {exc}", **base)
        timings["generate"] = (time.monotonic() - t_gen) * 1e3

        t_parse = time.monotonic()
        parsed = parse_answer(text, task, snapshot)
        instances = instances_for(parsed, snapshot)
        timings["parse"] = (time.monotonic() - t_parse) * 1e3
        result = QueryResult(
            ErrorCode.SUCCESS, "", text, instances, list(parsed.unknown_ids), timings_ms=timings, **base
        )
        if task in (Task.GROUNDING, Task.CAPTION) and not instances:
            result.error_code = ErrorCode.NO_MATCH
            if parsed.unknown_ids:
                result.error_msg = f"the model named object IDs that are not in the map: {list(parsed.unknown_ids)}"
            else:
                result.error_msg = "no object in the map fits the description"
        elif task == Task.MULTI_GROUNDING and not instances and parsed.unknown_ids:
            result.error_code = ErrorCode.NO_MATCH
            result.error_msg = f"the model named object IDs that are not in the map: {list(parsed.unknown_ids)}"
        return result


class _Pending:
    """One accepted request; the first of (worker result, deadline) to arrive completes it."""

    def __init__(self, req: QueryRequest, snapshot: SceneSnapshot, deadline_s: float, t_arrival: float,
                 on_done: Callable[[QueryResult], None]):
        self.req = req
        self.snapshot = snapshot
        self.deadline_s = deadline_s
        self.t_arrival = t_arrival
        self.cancel = threading.Event()
        self._on_done = on_done
        self._lock = threading.Lock()
        self._done = False
        self.timer: Optional[threading.Timer] = None

    def complete(self, result: QueryResult) -> bool:
        with self._lock:
            if self._done:
                return False
            self._done = True
        if self.timer is not None:
            self.timer.cancel()
        result.latency_s = time.monotonic() - self.t_arrival
        try:
            self._on_done(result)
        except Exception:  # the callback belongs to the caller; never kill the worker for it
            log.exception("query completion callback raised")
        return True

    @property
    def done(self) -> bool:
        return self._done


@dataclass
class WorkerStats:
    accepted: int = 0
    busy: int = 0
    succeeded: int = 0
    failed: int = 0
    timed_out: int = 0
    abandoned_threads: int = 0


class QueryWorker:
    """Bounded queue + worker threads running a :class:`QueryEngine`.

    ``submit`` never blocks: it returns False (the caller answers BUSY) when ``queue_size``
    requests are already waiting. A request not answered by its deadline is completed with
    TIMEOUT by a timer and its cancel event is set; if the backend keeps the thread anyway, a
    replacement thread is started (at most ``max_abandoned`` at a time) so the queue keeps moving.
    """

    def __init__(self, engine: QueryEngine, queue_size: int = 8, default_timeout_s: float = 30.0,
                 n_threads: int = 1, max_abandoned: int = 4):
        if queue_size < 1 or n_threads < 1:
            raise ValueError("queue_size and n_threads must be >= 1")
        self.engine = engine
        self.default_timeout_s = float(default_timeout_s)
        self.max_abandoned = max_abandoned
        self._queue: queue.Queue[Optional[_Pending]] = queue.Queue(maxsize=queue_size)
        self._threads: list[threading.Thread] = []
        self._stuck: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.stats = WorkerStats()
        for _ in range(n_threads):
            self._spawn()

    def _spawn(self) -> None:
        th = threading.Thread(target=self._run, name="scene-query-worker", daemon=True)
        with self._lock:
            self._threads.append(th)
        th.start()

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def submit(self, req: QueryRequest, snapshot: SceneSnapshot, on_done: Callable[[QueryResult], None],
               t_arrival: Optional[float] = None, cancel: Optional[threading.Event] = None) -> bool:
        """Queue a request; ``on_done`` is called exactly once (from a worker or timer thread).

        ``cancel`` (the caller's event, e.g. an action goal's cancel) is the request's cancel event:
        setting it stops the backend's generation as the deadline does. After :meth:`shutdown` the
        request is answered at once (MODEL_UNAVAILABLE, from this thread).
        """
        now = time.monotonic()
        timeout = req.timeout_s if req.timeout_s > 0 else self.default_timeout_s
        timeout = min(timeout, _MAX_TIMER_S) if math.isfinite(timeout) else _MAX_TIMER_S
        pending = _Pending(req, snapshot, now + timeout, t_arrival or now, on_done)
        if cancel is not None:
            pending.cancel = cancel
        if self._stopped.is_set():
            # No thread would ever take it: answer now instead of letting it time out.
            pending.complete(QueryResult(ErrorCode.MODEL_UNAVAILABLE, "the query worker is shutting down"))
            return True
        # The timer exists before the request is queued so that a worker finishing it at once
        # can cancel it (otherwise a finished request's timer thread lingers until the deadline).
        pending.timer = threading.Timer(timeout, self._expire, args=(pending,))
        pending.timer.daemon = True
        try:
            self._queue.put_nowait(pending)
        except queue.Full:
            self.stats.busy += 1
            return False
        self.stats.accepted += 1
        pending.timer.start()
        return True

    def _expire(self, pending: _Pending) -> None:
        pending.cancel.set()
        if pending.complete(QueryResult(
            ErrorCode.TIMEOUT, f"no answer within {pending.deadline_s - pending.t_arrival:.1f} s",
            snapshot_stamp_s=pending.snapshot.stamp_s, frame_id=pending.snapshot.frame_id,
        )):
            self.stats.timed_out += 1

    def _run(self) -> None:
        me = threading.current_thread()
        while not self._stopped.is_set():
            pending = self._queue.get()
            if pending is None:
                break
            if pending.done:
                continue  # expired while queued
            watchdog = threading.Timer(
                max(0.0, pending.deadline_s - time.monotonic()) + 0.05, self._check_stuck, args=(me, pending)
            )
            watchdog.daemon = True
            watchdog.start()
            try:
                result = self.engine.answer(pending.req, pending.snapshot, pending.deadline_s, pending.cancel)
            except Exception as exc:  # engine bugs become MODEL_ERROR answers, never lost requests
                log.exception("query engine raised")
                result = QueryResult(ErrorCode.MODEL_ERROR, f"{type(exc).__name__}: {exc}")
            finally:
                watchdog.cancel()
            if pending.complete(result):
                if result.error_code == ErrorCode.SUCCESS:
                    self.stats.succeeded += 1
                else:
                    self.stats.failed += 1
            with self._lock:
                if me in self._stuck:
                    # A replacement took over while this thread was held by a slow backend.
                    self._stuck.discard(me)
                    self._threads.remove(me)
                    return

    def _check_stuck(self, thread: threading.Thread, pending: _Pending) -> None:
        """Deadline passed and the thread is still inside the backend: start a replacement."""
        with self._lock:
            if self._stopped.is_set() or thread in self._stuck or len(self._stuck) >= self.max_abandoned:
                return
            self._stuck.add(thread)
            self.stats.abandoned_threads += 1
        log.warning("backend still busy past the deadline; starting a replacement worker thread")
        self._spawn()

    def shutdown(self, timeout_s: float = 2.0) -> None:
        """Stop the threads; queued requests are completed with MODEL_UNAVAILABLE (never dropped)."""
        self._stopped.set()
        while True:
            try:
                pending = self._queue.get_nowait()
            except queue.Empty:
                break
            if pending is not None:
                pending.complete(QueryResult(ErrorCode.MODEL_UNAVAILABLE, "the query worker is shutting down"))
        with self._lock:
            threads = list(self._threads)
        for _ in threads:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                break
        for th in threads:
            th.join(timeout=timeout_s / max(1, len(threads)))
