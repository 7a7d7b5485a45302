"""Approximate time synchronisation and pose interpolation (the parts of message_filters / tf2 we need).

``message_filters`` and ``tf2_ros`` have no PyPI wheels, so the node uses these small, tested
pieces instead. Both are pure Python and thread-compatible (the caller serialises access).
"""

from __future__ import annotations

import bisect
import logging
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Generic, Optional, TypeVar

import numpy as np

from .geometry import make_transform, matrix_to_quat_xyzw, quat_xyzw_to_matrix

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class Stamped(Generic[T]):
    stamp_s: float
    value: T


class ApproximateTimeSync:
    """Match messages of several streams whose stamps lie within ``slop_s`` of a reference stream.

    The reference stream (the depth image: it decides when a frame exists) drives matching; every
    other stream contributes its message nearest in time. A reference that cannot be matched any
    more (all other streams have moved past it by more than ``slop_s``, or it fell out of the
    queue) is dropped and counted, never silently lost. Queues are bounded by ``queue_size``.
    """

    def __init__(self, streams: list[str], reference: str, slop_s: float = 0.02, queue_size: int = 10):
        if reference not in streams:
            raise ValueError(f"reference stream {reference!r} is not one of {streams}")
        if slop_s <= 0 or queue_size < 1:
            raise ValueError("slop_s must be > 0 and queue_size >= 1")
        self.streams = list(streams)
        self.reference = reference
        self.slop_s = float(slop_s)
        self.queue_size = int(queue_size)
        self._queues: dict[str, deque[Stamped[Any]]] = {s: deque() for s in self.streams}
        self.dropped: Counter[str] = Counter()
        self.matched = 0

    def add(self, stream: str, stamp_s: float, value: Any) -> list[dict[str, Stamped[Any]]]:
        """Add one message; return the sets that became complete (oldest first)."""
        q = self._queues[stream]
        if q and stamp_s < q[-1].stamp_s:
            # Out-of-order arrival: keep the queue sorted (bounded insertion).
            items = list(q)
            idx = bisect.bisect([it.stamp_s for it in items], stamp_s)
            items.insert(idx, Stamped(stamp_s, value))
            q.clear()
            q.extend(items)
        else:
            q.append(Stamped(stamp_s, value))
        while len(q) > self.queue_size:
            q.popleft()
            self.dropped[f"{stream}_queue_overflow"] += 1
        return self._match()

    def _nearest(self, stream: str, stamp_s: float) -> Optional[int]:
        q = self._queues[stream]
        if not q:
            return None
        best = min(range(len(q)), key=lambda i: abs(q[i].stamp_s - stamp_s))
        return best if abs(q[best].stamp_s - stamp_s) <= self.slop_s else None

    def _match(self) -> list[dict[str, Stamped[Any]]]:
        out: list[dict[str, Stamped[Any]]] = []
        ref_q = self._queues[self.reference]
        while ref_q:
            ref = ref_q[0]
            picks: dict[str, int] = {}
            state = "match"
            for s in self.streams:
                if s == self.reference:
                    continue
                idx = self._nearest(s, ref.stamp_s)
                if idx is not None:
                    picks[s] = idx
                    continue
                q = self._queues[s]
                if not q or q[-1].stamp_s < ref.stamp_s + self.slop_s:
                    state = "wait"  # a matching message may still arrive
                else:
                    state = "drop"  # this stream has moved past the reference for good
                    break
            if state == "drop":
                ref_q.popleft()
                self.dropped["sync_no_match"] += 1
                continue
            if state == "wait":
                break
            matched = {self.reference: ref_q.popleft()}
            for s, idx in picks.items():
                q = self._queues[s]
                matched[s] = q[idx]
                # Messages up to and including the used one are consumed.
                for _ in range(idx + 1):
                    q.popleft()
            self.matched += 1
            out.append(matched)
        return out

    def pending(self) -> dict[str, int]:
        return {s: len(q) for s, q in self._queues.items()}

    def queued(self) -> dict[str, list[Stamped[Any]]]:
        """The messages still waiting in each stream's queue, oldest first (copies of the lists)."""
        return {s: list(q) for s, q in self._queues.items()}


class RateWindow:
    """Arrival rate over the last ``window_s`` seconds (not since start: a feed that stops reads 0)."""

    def __init__(self, window_s: float = 5.0, max_events: int = 2000):
        self.window_s = float(window_s)
        self._t: deque[float] = deque(maxlen=max_events)

    def add(self, t_s: float) -> None:
        self._t.append(float(t_s))

    def rate(self, now_s: float) -> float:
        """Events per second within the last ``window_s`` (over the span covered when shorter)."""
        while self._t and self._t[0] <= now_s - self.window_s:
            self._t.popleft()
        if len(self._t) < 2:
            return 0.0
        span = now_s - self._t[0]
        return (len(self._t) - 1) / max(self._t[-1] - self._t[0], 1e-6) if span < self.window_s else (
            len(self._t) / self.window_s)


class PoseBuffer:
    """Time-ordered poses (e.g. odometry ``T_odom_base``) with interpolation at arbitrary stamps.

    Translation is interpolated linearly and rotation by quaternion slerp, so an image is fused
    with the pose at its own timestamp rather than the latest odometry.
    """

    def __init__(self, max_age_s: float = 10.0, max_extrapolation_s: float = 0.05):
        self.max_age_s = max_age_s  # the unit of the stamps (ints stay exact)
        self.max_extrapolation_s = max_extrapolation_s
        self._stamps: list[float] = []
        self._poses: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self._stamps)

    @property
    def latest_stamp(self) -> Optional[float]:
        return self._stamps[-1] if self._stamps else None

    def add(self, stamp_s: float, T: np.ndarray) -> None:  # noqa: N803
        idx = bisect.bisect(self._stamps, stamp_s)
        self._stamps.insert(idx, stamp_s)  # as given: int ns keeps full precision
        self._poses.insert(idx, np.asarray(T, dtype=np.float64))
        cutoff = self._stamps[-1] - self.max_age_s
        n_old = bisect.bisect_left(self._stamps, cutoff)
        if n_old:
            del self._stamps[:n_old]
            del self._poses[:n_old]

    def clear(self) -> None:
        self._stamps.clear()
        self._poses.clear()

    def lookup(self, stamp_s: float, give_up: bool = False) -> tuple[Optional[np.ndarray], str]:
        """Pose at ``stamp_s`` and a status: ``"ok"``, ``"wait"`` (newer poses may still arrive),
        or ``"too_old"`` (the stamp precedes the buffer).

        Past the newest pose the answer is ``"wait"``, unless the caller has ``give_up`` on newer
        poses (end of a bag, waited too long): then the newest pose within ``max_extrapolation_s``."""
        if not self._stamps:
            return None, "wait"
        if stamp_s < self._stamps[0] - self.max_extrapolation_s:
            return None, "too_old"
        if stamp_s > self._stamps[-1]:
            if give_up and stamp_s - self._stamps[-1] <= self.max_extrapolation_s:
                return self._poses[-1].copy(), "ok"
            return None, "wait"
        idx = bisect.bisect_left(self._stamps, stamp_s)
        if idx == 0 or self._stamps[idx] == stamp_s:
            return self._poses[max(idx, 0)].copy(), "ok"
        t0, t1 = self._stamps[idx - 1], self._stamps[idx]
        alpha = (stamp_s - t0) / (t1 - t0) if t1 > t0 else 0.0
        return interpolate_pose(self._poses[idx - 1], self._poses[idx], alpha), "ok"

    def latest(self) -> Optional[np.ndarray]:
        return self._poses[-1].copy() if self._poses else None


def interpolate_pose(T0: np.ndarray, T1: np.ndarray, alpha: float) -> np.ndarray:  # noqa: N803
    """Pose a fraction ``alpha`` in [0, 1] of the way from ``T0`` to ``T1`` (lerp + slerp)."""
    q0 = matrix_to_quat_xyzw(T0[:3, :3])
    q1 = matrix_to_quat_xyzw(T1[:3, :3])
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + alpha * (q1 - q0)
    else:
        theta = np.arccos(np.clip(dot, -1.0, 1.0))
        q = (np.sin((1 - alpha) * theta) * q0 + np.sin(alpha * theta) * q1) / np.sin(theta)
    t = (1 - alpha) * T0[:3, 3] + alpha * T1[:3, 3]
    return make_transform(quat_xyzw_to_matrix(q), t)
