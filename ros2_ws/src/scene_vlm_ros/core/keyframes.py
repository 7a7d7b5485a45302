"""Keyframe selection: keep a bounded set of observations that cover the scene.

A frame becomes a keyframe when the camera has moved (translation or rotation) enough since the
last keyframe, or when too little of its view is already covered by the last keyframe
(reprojection overlap). Each keyframe keeps colour, depth, intrinsics and the pose *at its own
stamp* (never a later odometry pose), as the prompting code draws markers with it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .geometry import backproject_depth, project_points, transform_points
from .types import Keyframe, RGBDFrame

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyframeParams:
    """See ``MemoryConfig``: ``keyframe_*`` and ``max_keyframes``."""

    min_translation_m: float = 0.3
    min_rotation_deg: float = 15.0
    min_new_coverage: float = 0.3
    max_keyframes: int = 64


def rotation_angle_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:  # noqa: N803
    """Angle (degrees) of the relative rotation between two 3x3 rotations."""
    cos = (np.trace(R_a.T @ R_b) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def view_overlap(frame: RGBDFrame, keyframe: Keyframe, stride: int = 16) -> float:
    """Share (0-1) of ``frame``'s valid depth pixels (subsampled) that project inside ``keyframe``'s
    image with a consistent depth, i.e. that the keyframe already sees."""
    pts_cam, _ = backproject_depth(frame.depth_m, frame.intrinsics, stride=stride)
    if len(pts_cam) == 0:
        return 1.0
    pts_world = transform_points(np.asarray(frame.T_world_camera, dtype=np.float64), pts_cam.astype(np.float64))
    uv, z = project_points(pts_world, keyframe.intrinsics, keyframe.T_world_camera)
    kf_intr = keyframe.intrinsics
    ok = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < kf_intr.width) & (uv[:, 1] >= 0) & (uv[:, 1] < kf_intr.height)
    if not np.any(ok):
        return 0.0
    u = uv[ok, 0].astype(int)
    v = uv[ok, 1].astype(int)
    kd = keyframe.depth_m[v, u]
    # Seen = the keyframe measured a surface at (about) that depth, not in front of it (occluded).
    seen = np.isfinite(kd) & (np.abs(kd - z[ok]) < np.maximum(0.1, 0.05 * z[ok]))
    return float(seen.sum()) / float(len(pts_cam))


class KeyframeSelector:
    """Decides which frames to keep and holds them, at most ``max_keyframes``."""

    def __init__(self, params: KeyframeParams) -> None:
        self.params = params
        self._keyframes: list[Keyframe] = []
        self._next_id = 0

    @property
    def keyframes(self) -> tuple[Keyframe, ...]:
        return tuple(self._keyframes)

    @property
    def next_id(self) -> int:
        return self._next_id

    def restore(self, keyframes: list[Keyframe], next_id: int) -> None:
        """Replace the held keyframes (used when loading a saved memory)."""
        self._keyframes = list(keyframes)
        self._next_id = int(next_id)

    def should_add(self, frame: RGBDFrame) -> bool:
        """True when ``frame`` moved or saw enough new surface since the latest keyframe."""
        if not self._keyframes:
            return True
        last = self._keyframes[-1]
        T = np.asarray(frame.T_world_camera, dtype=np.float64)  # noqa: N806
        if np.linalg.norm(T[:3, 3] - last.T_world_camera[:3, 3]) >= self.params.min_translation_m:
            return True
        if rotation_angle_deg(T[:3, :3], last.T_world_camera[:3, :3]) >= self.params.min_rotation_deg:
            return True
        return 1.0 - view_overlap(frame, last) >= self.params.min_new_coverage

    def add(self, frame: RGBDFrame) -> Keyframe:
        """Keep ``frame`` as a keyframe (copies its images) and evict one if over the bound."""
        kf = Keyframe(
            keyframe_id=self._next_id,
            stamp_s=float(frame.stamp_s),
            color_rgb=frame.color_rgb,
            depth_m=frame.depth_m,
            intrinsics=frame.intrinsics,
            T_world_camera=frame.T_world_camera,
        )
        self._next_id += 1
        self._keyframes.append(kf)
        if len(self._keyframes) > self.params.max_keyframes:
            self._evict()
        return kf

    def _evict(self) -> None:
        """Drop the most redundant keyframe: the one whose pose is closest to another keyframe's.

        The newest keyframe is never dropped (it is the reference for the next decision).
        """
        poses = np.stack([kf.T_world_camera for kf in self._keyframes])
        pos = poses[:, :3, 3]
        fwd = poses[:, :3, 2]
        # Distance mixes position (m) and viewing direction (1 - cos, scaled so 90 deg ~ 1 m).
        d = np.linalg.norm(pos[:, None] - pos[None], axis=2) + (1.0 - fwd @ fwd.T)
        np.fill_diagonal(d, np.inf)
        nearest = d.min(axis=1)
        nearest[-1] = np.inf
        drop = int(np.argmin(nearest))
        logger.debug("evicting keyframe %d (nearest other %.2f)", self._keyframes[drop].keyframe_id, nearest[drop])
        del self._keyframes[drop]

    def best_keyframes_for(self, points_world: np.ndarray, k: int = 3) -> tuple[int, ...]:
        """IDs of up to ``k`` keyframes that see the most of ``points_world`` (N, 3), best first.

        Visibility = the point projects inside the image, in front of the camera and not behind the
        keyframe's measured depth (occlusion check, 10 cm tolerance); ties go to the closer view.
        """
        if not self._keyframes or len(points_world) == 0:
            return ()
        pts = np.asarray(points_world, dtype=np.float64)
        if len(pts) > 200:
            pts = pts[np.linspace(0, len(pts) - 1, 200).astype(int)]
        scores = []
        for kf in self._keyframes:
            uv, z = project_points(pts, kf.intrinsics, kf.T_world_camera)
            w, h = kf.intrinsics.width, kf.intrinsics.height
            ok = (z > 0.1) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
            if not np.any(ok):
                scores.append(0.0)
                continue
            kd = kf.depth_m[uv[ok, 1].astype(int), uv[ok, 0].astype(int)]
            visible = ~(np.isfinite(kd) & (kd > 0) & (kd < z[ok] - 0.1))
            mean_z = float(np.mean(z[ok]))
            scores.append(float(visible.sum()) / len(pts) - 0.01 * mean_z)
        order = np.argsort(-np.asarray(scores), kind="stable")
        return tuple(self._keyframes[i].keyframe_id for i in order[:k] if scores[i] > 0.0)

