"""Validation of incoming RGB-D frames before they touch the scene memory.

Each check returns a stable reason string (used as a counter key in ``SceneMemory.stats()`` and in
logs) or ``None`` when the frame is fine. Isolated NaN/zero pixels inside an otherwise fine depth
image are *not* a rejection: they are simply "no reading" pixels.
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from .geometry import is_rigid_transform
from .types import RGBDFrame

logger = logging.getLogger(__name__)

#: Stable reason strings, in the order the checks run.
REASON_BAD_SHAPE = "bad_shape"
REASON_SIZE_MISMATCH = "size_mismatch"
REASON_DEPTH_NEGATIVE = "depth_negative"
REASON_DEPTH_ALL_INVALID = "depth_all_invalid"
REASON_POSE_INVALID = "pose_invalid"
REASON_STAMP_INVALID = "stamp_invalid"
REASON_STAMP_BACKWARDS = "stamp_backwards"
REASON_POSE_JUMP = "pose_jump"

ALL_REASONS = (
    REASON_BAD_SHAPE,
    REASON_SIZE_MISMATCH,
    REASON_DEPTH_NEGATIVE,
    REASON_DEPTH_ALL_INVALID,
    REASON_POSE_INVALID,
    REASON_STAMP_INVALID,
    REASON_STAMP_BACKWARDS,
    REASON_POSE_JUMP,
)


def check_frame_content(frame: RGBDFrame, min_valid_fraction: float = 0.01) -> Optional[str]:
    """Checks that need only the frame itself: shapes, intrinsics agreement, depth, pose.

    ``min_valid_fraction``: share of pixels that must hold a finite depth > 0 (else
    ``depth_all_invalid``). Negative depth anywhere (``depth_negative``) means a broken driver or a
    wrong encoding, so the whole frame is refused rather than silently clipped.
    """
    depth = np.asarray(frame.depth_m)
    color = np.asarray(frame.color_rgb)
    if depth.ndim != 2 or color.ndim != 3 or color.shape[2] != 3:
        return REASON_BAD_SHAPE
    if depth.shape != color.shape[:2]:
        return REASON_SIZE_MISMATCH
    if (frame.intrinsics.height, frame.intrinsics.width) != depth.shape:
        return REASON_SIZE_MISMATCH
    if frame.instance_mask is not None and np.asarray(frame.instance_mask).shape != depth.shape:
        return REASON_SIZE_MISMATCH
    finite = np.isfinite(depth)
    with np.errstate(invalid="ignore"):
        if np.any(depth[finite] < 0.0):
            return REASON_DEPTH_NEGATIVE
        valid = finite & (depth > 0.0)
    if valid.mean() < min_valid_fraction:
        return REASON_DEPTH_ALL_INVALID
    if not is_rigid_transform(np.asarray(frame.T_world_camera, dtype=np.float64)):
        return REASON_POSE_INVALID
    if not np.isfinite(frame.stamp_s):
        return REASON_STAMP_INVALID
    return None


def check_frame_sequence(
    frame: RGBDFrame,
    last_stamp_s: Optional[float],
    last_T_world_camera: Optional[np.ndarray],  # noqa: N803
    max_jump_m: float,
    max_speed_m_s: float,
) -> Optional[str]:
    """Checks against the last accepted frame: time must not go backwards, pose must not jump.

    A translation larger than ``max_jump_m`` is always a jump; between frames far apart in time the
    allowance grows with ``max_speed_m_s`` (m/s) times the gap, so a robot that paused its camera
    for a while is not rejected forever.
    """
    if last_stamp_s is not None and frame.stamp_s < last_stamp_s:
        return REASON_STAMP_BACKWARDS
    if last_T_world_camera is not None:
        dt = 0.0 if last_stamp_s is None else max(0.0, frame.stamp_s - last_stamp_s)
        moved = float(np.linalg.norm(np.asarray(frame.T_world_camera)[:3, 3] - last_T_world_camera[:3, 3]))
        if moved > max(max_jump_m, max_speed_m_s * dt):
            return REASON_POSE_JUMP
    return None
