"""The mapping worker: a bounded frame queue in front of :class:`~.memory.SceneMemory` (no rclpy).

The node runs it on its own thread (``start``); the offline commands call :meth:`MappingWorker.drain`
after each batch of frames, so both integrate the same frames and refresh the map at the same
points. Policies, all on *sensor stamps* so that a bag maps the same way live and offline, and
run after run:

- **integration rate** (``max_rate_hz``, as nvblox's ``integrate_depth_rate_hz``): a frame closer
  than ``1 / max_rate_hz`` to the last accepted one is *skipped by policy* (counted apart from
  drops); 0 integrates every frame;
- **map refresh** (``refresh_period_s``): after integrating a frame whose stamp is at least that
  far past the last refresh, the cloud is re-extracted and re-segmented on this same thread (one
  writer: queries only ever read cached snapshots). A live worker that has been idle for
  ``idle_refresh_s`` wall-clock seconds with unrefreshed frames refreshes too (the end of a feed,
  like :meth:`finish` offline);
- **bounded queue** (``queue_size``): when mapping falls behind, the oldest waiting frame is dropped
  and counted as ``mapping_queue_overflow``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .types import RGBDFrame

log = logging.getLogger(__name__)


@dataclass
class MappingWorkerConfig:
    queue_size: int = 30
    max_rate_hz: float = 0.0
    refresh_period_s: float = 1.0
    idle_refresh_s: float = 0.5

    def __post_init__(self) -> None:
        if self.queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {self.queue_size}")
        if self.max_rate_hz < 0 or self.refresh_period_s < 0 or self.idle_refresh_s < 0:
            raise ValueError("max_rate_hz, refresh_period_s and idle_refresh_s must be >= 0")


class MappingWorker:
    """Bounded queue + integration + refresh policy around a scene memory (see module docstring).

    Thread-safe: :meth:`submit` may be called from any thread; integration happens on the worker
    thread (``start``) or in the caller's thread (:meth:`drain`, offline), never both.
    """

    def __init__(self, memory: Any, config: Optional[MappingWorkerConfig] = None):
        self.config = config or MappingWorkerConfig()
        self._memory = memory
        self._queue: deque[RGBDFrame] = deque()
        self._cv = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._next_due_stamp: Optional[float] = None
        self._last_refresh_stamp: Optional[float] = None
        self._last_frame_wall = time.monotonic()
        self.submitted = 0
        self.integrated = 0
        self.skipped_rate = 0
        self.dropped: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.integration_ms: deque[float] = deque(maxlen=300)
        self.refresh_ms: deque[float] = deque(maxlen=50)
        self.refreshed_frames = 0
        self.errors: deque[str] = deque(maxlen=10)

    # -- memory --------------------------------------------------------------------------------
    @property
    def memory(self) -> Any:
        return self._memory

    def set_memory(self, memory: Any) -> None:
        """Swap the memory (a loaded one): queued frames of the old map are dropped (counted)."""
        with self._cv:
            self.dropped["mapping_queue_overflow"] += len(self._queue)
            self._queue.clear()
            self._memory = memory
            self.refreshed_frames = memory.snapshot(allow_stale=True).n_frames_integrated
            self._last_refresh_stamp = None

    # -- input ---------------------------------------------------------------------------------
    def submit(self, frames: list[RGBDFrame]) -> None:
        """Queue frames (never blocks); applies the rate policy and the queue bound."""
        if not frames:
            return
        with self._cv:
            for frame in frames:
                self.submitted += 1
                if self._skip_by_rate(frame.stamp_s):
                    self.skipped_rate += 1
                    continue
                self._queue.append(frame)
                while len(self._queue) > self.config.queue_size:
                    self._queue.popleft()
                    self.dropped["mapping_queue_overflow"] += 1
            self._cv.notify()

    def _skip_by_rate(self, stamp_s: float) -> bool:
        """Token-bucket on sensor stamps: accepted frames average ``max_rate_hz`` (a 30 Hz camera
        under 20 Hz keeps two frames of three), never in a burst after a gap."""
        if self.config.max_rate_hz <= 0:
            return False
        period = 1.0 / self.config.max_rate_hz
        due = self._next_due_stamp
        # 1 ms of tolerance for stamp jitter (30 Hz stamps under a 15 Hz policy keep every other frame).
        if due is not None and stamp_s < due - 1e-3:
            return True
        self._next_due_stamp = stamp_s + period if due is None or stamp_s - due > period else due + period
        return False

    @property
    def queue_depth(self) -> int:
        with self._cv:
            return len(self._queue)

    # -- integration ---------------------------------------------------------------------------
    def _integrate_one(self, frame: RGBDFrame) -> None:
        memory = self._memory
        t0 = time.perf_counter()
        try:
            result = memory.integrate(frame)
        except Exception as exc:  # a core bug must not stop mapping for good
            self.dropped["integration_error"] += 1
            self.errors.append(f"{type(exc).__name__}: {exc}")
            log.exception("integration failed for frame at %.3f s", frame.stamp_s)
            return
        dt_ms = (time.perf_counter() - t0) * 1e3
        self.integration_ms.append(dt_ms)
        if result.accepted:
            self.integrated += 1
        else:
            self.dropped["rejected_by_mapping"] += 1
            self.rejected[result.reason or "rejected"] += 1
        if dt_ms > 200.0:
            log.warning("slow integration: %.0f ms (stages: %s)", dt_ms, getattr(result, "timings", {}))
        period = self.config.refresh_period_s
        if period > 0:
            if self._last_refresh_stamp is None:
                self._last_refresh_stamp = frame.stamp_s
                return
            # Purely on stamps (never on how many frames wait): the refreshes fall on the same frames
            # live and offline, run after run, so the same bag gives the same instances. The queue
            # (one second of camera by default) rides out the refresh.
            if frame.stamp_s - self._last_refresh_stamp >= period:
                self._last_refresh_stamp = frame.stamp_s
                self.refresh()

    def refresh(self) -> None:
        """Re-extract and re-segment the map now (on the integrating thread)."""
        memory = self._memory
        n = memory.snapshot(allow_stale=True).n_frames_integrated
        t0 = time.perf_counter()
        try:
            memory.refresh()
        except Exception as exc:  # keep the last good snapshot; report and go on
            self.errors.append(f"refresh: {type(exc).__name__}: {exc}")
            log.exception("map refresh failed")
            return
        self.refresh_ms.append((time.perf_counter() - t0) * 1e3)
        self.refreshed_frames = n

    def drain(self) -> int:
        """Integrate every queued frame in the caller's thread (offline); returns how many."""
        n = 0
        while True:
            with self._cv:
                if not self._queue:
                    return n
                frame = self._queue.popleft()
            self._integrate_one(frame)
            n += 1

    def has_unrefreshed_frames(self) -> bool:
        """Whether frames were integrated since the last refresh (queries would not see them yet)."""
        return self._memory.snapshot(allow_stale=True).n_frames_integrated > self.refreshed_frames

    def wait_settled(self, timeout_s: float = 30.0, quiet_s: float = 1.5) -> int:
        """Block until the worker thread has integrated what it was given (no new frame for ``quiet_s``
        and an empty queue) and refreshed the map over it, or ``timeout_s`` passed; returns the
        memory's integrated-frame count. For callers that replayed a bag into a live node."""
        deadline = time.monotonic() + timeout_s
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            if self.integrated != last:
                last, since = self.integrated, time.monotonic()
            elif time.monotonic() - since > quiet_s and self.queue_depth == 0:
                break
            time.sleep(0.1)
        while time.monotonic() < deadline and self.has_unrefreshed_frames():
            time.sleep(0.1)
        return int(self._memory.snapshot(allow_stale=True).n_frames_integrated)

    def finish(self) -> None:
        """End of input: integrate what is queued and refresh if frames are unrefreshed."""
        self.drain()
        if self.has_unrefreshed_frames():
            self.refresh()

    # -- thread --------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="scene-vlm-mapping", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._cv:
                if not self._queue:
                    self._cv.wait(timeout=0.1)
                frame = self._queue.popleft() if self._queue else None
            if frame is not None:
                self._integrate_one(frame)
                self._last_frame_wall = time.monotonic()
                continue
            idle = time.monotonic() - self._last_frame_wall
            if (self.config.refresh_period_s > 0 and idle >= self.config.idle_refresh_s
                    and self.has_unrefreshed_frames()):
                self.refresh()

    # -- stats ---------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        def pct(values: deque[float], q: float) -> Optional[float]:
            return float(np.percentile(np.asarray(values), q)) if values else None

        return {
            "submitted": self.submitted,
            "integrated": self.integrated,
            "skipped_by_rate_policy": self.skipped_rate,
            "dropped": {k: v for k, v in self.dropped.items() if v},
            "rejected": dict(self.rejected),
            "queue": self.queue_depth,
            "integration_ms_p50": pct(self.integration_ms, 50),
            "integration_ms_p95": pct(self.integration_ms, 95),
            "refresh_ms_p50": pct(self.refresh_ms, 50),
            "refreshed_frames": self.refreshed_frames,
            "errors": list(self.errors),
        }
