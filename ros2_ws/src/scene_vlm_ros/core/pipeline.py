"""From separate sensor streams to posed RGB-D frames (pure Python; the node feeds it messages).

Colour, depth and the optional instance mask are matched by :class:`ApproximateTimeSync`; the
camera pose of each matched frame is odometry interpolated at the *image* stamp, composed with the
static base->camera extrinsic. Frames whose pose is not known yet wait (bounded); every frame that
does not make it is counted by reason.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .sync import ApproximateTimeSync, PoseBuffer
from .types import CameraIntrinsics, RGBDFrame

log = logging.getLogger(__name__)


@dataclass
class PipelineConfig:
    slop_s: float = 0.02
    queue_size: int = 30
    pose_max_wait_s: float = 0.5
    pending_max: int = 16
    use_instance_mask: bool = True


class FramePipeline:
    """Assemble :class:`RGBDFrame`s from streams; not thread-safe (the node's mapping group serialises it)."""

    def __init__(self, T_base_camera: np.ndarray, config: Optional[PipelineConfig] = None):  # noqa: N803
        self.config = config or PipelineConfig()
        self.T_base_camera = np.asarray(T_base_camera, dtype=np.float64)
        # Colour + depth make a frame until the first mask arrives; from then on the mask is part
        # of every frame (a semantic camera publishes one per image).
        self._sync = ApproximateTimeSync(["color", "depth"], "depth", self.config.slop_s, self.config.queue_size)
        self._mask_seen = False
        self.poses = PoseBuffer()
        self.intrinsics: Optional[CameraIntrinsics] = None
        self.labels: dict[int, str] = {}
        self._waiting: deque[RGBDFrame] = deque()
        self.dropped: Counter[str] = Counter()
        self.received: Counter[str] = Counter()
        self._n_out = 0

    # -- inputs ----------------------------------------------------------------------------------
    def set_intrinsics(self, intrinsics: CameraIntrinsics) -> None:
        self.intrinsics = intrinsics

    def set_labels(self, labels: dict[int, str]) -> None:
        self.labels = dict(labels)

    def add_odometry(self, stamp_s: float, T_odom_base: np.ndarray) -> list[RGBDFrame]:  # noqa: N803
        self.received["odom"] += 1
        if not np.all(np.isfinite(T_odom_base)):
            self.dropped["odom_invalid"] += 1
            return []
        self.poses.add(stamp_s, T_odom_base)
        return self._release()

    def add_image(self, stream: str, stamp_s: float, image: np.ndarray) -> list[RGBDFrame]:
        """``stream`` is ``color`` (RGB uint8), ``depth`` (float32 m) or ``mask`` (uint16)."""
        self.received[stream] += 1
        matched: list[dict] = []
        if stream == "mask":
            if not self.config.use_instance_mask:
                return []
            if not self._mask_seen:
                self._mask_seen = True
                old = self._sync
                self.dropped.update(old.dropped)
                self._sync = ApproximateTimeSync(
                    ["color", "depth", "mask"], "depth", self.config.slop_s, self.config.queue_size
                )
                # Messages still queued (e.g. the colour image of this very frame) move over to the
                # new synchroniser; discarding them would silently lose a frame.
                for s, items in old.queued().items():
                    for item in items:
                        matched += self._sync.add(s, item.stamp_s, item.value)
        matched += self._sync.add(stream, stamp_s, image)
        return self._drain(matched)

    # -- internals -------------------------------------------------------------------------------
    def _drain(self, matched_sets: list[dict]) -> list[RGBDFrame]:
        for m in matched_sets:
            if self.intrinsics is None:
                self.dropped["no_camera_info"] += 1
                continue
            mask = m["mask"].value if "mask" in m else None
            self._waiting.append(
                RGBDFrame(
                    stamp_s=m["depth"].stamp_s,
                    color_rgb=m["color"].value,
                    depth_m=m["depth"].value,
                    intrinsics=self.intrinsics,
                    T_world_camera=np.eye(4),
                    instance_mask=mask,
                    instance_labels=dict(self.labels) if mask is not None else None,
                )
            )
            while len(self._waiting) > self.config.pending_max:
                self._waiting.popleft()
                self.dropped["mapping_queue_overflow"] += 1
        return self._release()

    def _release(self) -> list[RGBDFrame]:
        out: list[RGBDFrame] = []
        while self._waiting:
            frame = self._waiting[0]
            T_odom_base, status = self.poses.lookup(frame.stamp_s)
            if status == "wait":
                # Image time is the clock here: odometry that lags (or never comes) by more than
                # pose_max_wait_s behind the newest image gives up on this frame.
                if self._newest_image_stamp() - frame.stamp_s > self.config.pose_max_wait_s:
                    self._waiting.popleft()
                    self.dropped["no_pose"] += 1
                    continue
                break
            self._waiting.popleft()
            if status == "too_old" or T_odom_base is None:
                self.dropped["pose_too_old"] += 1
                continue
            frame.T_world_camera = T_odom_base @ self.T_base_camera
            frame.frame_index = self._n_out
            self._n_out += 1
            out.append(frame)
        return out

    def _newest_image_stamp(self) -> float:
        return self._waiting[-1].stamp_s if self._waiting else float("-inf")

    def stats(self) -> dict:
        dropped = Counter(self.dropped)
        dropped.update(self._sync.dropped)
        return {"received": dict(self.received), "dropped": dict(dropped), "waiting_for_pose": len(self._waiting),
                "frames_out": self._n_out, "mask_seen": self._mask_seen}
