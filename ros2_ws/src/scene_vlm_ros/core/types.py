"""The value types every part of scene_vlm_ros passes around.

Conventions (REP-103/105):
- World frame: ``map`` (or ``odom`` for odometry-only mapping), metres, z up.
- Camera frame: the *optical* frame, x right, y down, z forward.
- ``T_a_b`` is a 4x4 float64 homogeneous transform that maps points expressed in frame ``b``
  into frame ``a`` (``p_a = T_a_b @ p_b``).
- Depth images are float32 metres; 0 or NaN means "no reading".
- Colour images are uint8 RGB, shape (H, W, 3).

The :class:`SceneSnapshot` is the one contract in the middle of the design: mapping produces it,
prompting, querying and training consume it, and nothing downstream reads the live memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


def _frozen(array: np.ndarray, dtype: np.dtype | type | None = None) -> np.ndarray:
    """Read-only version of ``array``: reused when already read-only with the right dtype, else copied.

    Copying (rather than flipping the caller's flag) keeps the owner's buffer writable and the
    snapshot immune to later in-place edits by the mapping thread.
    """
    out = np.asarray(array, dtype=dtype)
    if not out.flags.writeable:
        return out
    out = out.copy()
    out.flags.writeable = False
    return out


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of an image of ``width`` x ``height`` pixels (no distortion)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    @property
    def K(self) -> np.ndarray:  # noqa: N802 (the conventional name)
        """The 3x3 camera matrix."""
        return np.array(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=np.float64
        )

    @classmethod
    def from_K(cls, K: np.ndarray, width: int, height: int) -> CameraIntrinsics:  # noqa: N803
        K = np.asarray(K, dtype=np.float64)
        return cls(int(width), int(height), float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))

    def scaled(self, factor: float) -> CameraIntrinsics:
        """Intrinsics of the same camera with the image resized by ``factor``."""
        return CameraIntrinsics(
            int(round(self.width * factor)),
            int(round(self.height * factor)),
            self.fx * factor,
            self.fy * factor,
            self.cx * factor,
            self.cy * factor,
        )


@dataclass
class RGBDFrame:
    """One posed RGB-D observation, as the mapping core consumes it.

    ``T_world_camera`` is the pose of the camera optical frame at ``stamp_s`` (the image's own
    timestamp, not the latest odometry). ``instance_mask``/``instance_labels`` come from an upstream
    segmenter (our synthetic bags' semantic camera): pixel value = instance id, 0 = none.
    """

    stamp_s: float
    color_rgb: np.ndarray  # (H, W, 3) uint8
    depth_m: np.ndarray  # (H, W) float32 metres
    intrinsics: CameraIntrinsics
    T_world_camera: np.ndarray  # (4, 4) float64
    instance_mask: Optional[np.ndarray] = None  # (H, W) uint16
    instance_labels: Optional[dict[int, str]] = None
    frame_index: int = -1


@dataclass(frozen=True)
class OrientedBox3D:
    """A gravity-aligned box: centre (m), full extents along its own x/y/z (m), yaw about +z (rad)."""

    center: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw: float = 0.0

    def rotation(self) -> np.ndarray:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    def corners(self) -> np.ndarray:
        """(8, 3) corners in the world frame."""
        half = np.asarray(self.size, dtype=np.float64) / 2.0
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
        return (signs * half) @ self.rotation().T + np.asarray(self.center, dtype=np.float64)

    def aabb(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounds ``(min_xyz, max_xyz)`` of the rotated box."""
        c = self.corners()
        return c.min(axis=0), c.max(axis=0)

    def contains(self, points: np.ndarray, margin_m: float = 0.0) -> np.ndarray:
        """Boolean mask of the (N, 3) world points inside the box (grown by ``margin_m``)."""
        local = (np.asarray(points, dtype=np.float64) - np.asarray(self.center)) @ self.rotation()
        half = np.asarray(self.size, dtype=np.float64) / 2.0 + margin_m
        return np.all(np.abs(local) <= half, axis=1)


@dataclass(frozen=True)
class GroundTruthObject:
    """An object of a ground-truth scene (synthetic layout or annotated dataset), world frame."""

    object_id: int
    label: str
    color: str
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw: float = 0.0

    @property
    def box(self) -> OrientedBox3D:
        return OrientedBox3D(tuple(self.center), tuple(self.size), float(self.yaw))

    def to_json(self) -> dict:
        return {
            "object_id": int(self.object_id),
            "label": self.label,
            "color": self.color,
            "center": [float(v) for v in self.center],
            "size": [float(v) for v in self.size],
            "yaw": float(self.yaw),
        }

    @classmethod
    def from_json(cls, d: dict) -> GroundTruthObject:
        return cls(
            int(d["object_id"]),
            str(d["label"]),
            str(d.get("color", "")),
            tuple(float(v) for v in d["center"]),  # type: ignore[arg-type]
            tuple(float(v) for v in d["size"]),  # type: ignore[arg-type]
            float(d.get("yaw", 0.0)),
        )


@dataclass(frozen=True)
class Keyframe:
    """A kept observation: the images and the pose at the frame's own stamp."""

    keyframe_id: int
    stamp_s: float
    color_rgb: np.ndarray  # (H, W, 3) uint8
    depth_m: np.ndarray  # (H, W) float32
    intrinsics: CameraIntrinsics
    T_world_camera: np.ndarray  # (4, 4)

    def __post_init__(self) -> None:
        object.__setattr__(self, "color_rgb", _frozen(self.color_rgb, np.uint8))
        object.__setattr__(self, "depth_m", _frozen(self.depth_m, np.float32))
        object.__setattr__(self, "T_world_camera", _frozen(self.T_world_camera, np.float64))


@dataclass(frozen=True)
class Instance:
    """An object instance of the scene memory, as the snapshot exposes it (world frame, metres).

    ``label`` is ``""`` when unknown (geometry-only mapping). ``box`` is gravity-aligned
    (yaw about z); ``aabb_min``/``aabb_max`` are the axis-aligned bounds of ``points``.
    ``best_keyframe_ids`` lists the keyframes that see it best, best first.
    """

    instance_id: int
    label: str
    score: float
    box: OrientedBox3D
    aabb_min: np.ndarray  # (3,)
    aabb_max: np.ndarray  # (3,)
    points: np.ndarray  # (N, 3) float32
    colors: np.ndarray  # (N, 3) uint8
    n_observations: int = 0
    first_seen_s: float = 0.0
    last_seen_s: float = 0.0
    best_keyframe_ids: tuple[int, ...] = ()
    source: str = "geometry"  # "mask" | "detector" | "geometry"

    def __post_init__(self) -> None:
        object.__setattr__(self, "aabb_min", _frozen(self.aabb_min, np.float64))
        object.__setattr__(self, "aabb_max", _frozen(self.aabb_max, np.float64))
        object.__setattr__(self, "points", _frozen(self.points, np.float32))
        object.__setattr__(self, "colors", _frozen(self.colors, np.uint8))

    @property
    def center(self) -> np.ndarray:
        return np.asarray(self.box.center, dtype=np.float64)

    def to_json(self) -> dict:
        """The ``objects.json`` record: ``{instance_id, label, score, center, size, yaw}``."""
        return {
            "instance_id": int(self.instance_id),
            "label": self.label,
            "score": float(self.score),
            "center": [float(v) for v in self.box.center],
            "size": [float(v) for v in self.box.size],
            "yaw": float(self.box.yaw),
        }


@dataclass(frozen=True)
class SceneSnapshot:
    """Immutable view of the scene memory at one moment (the only thing prompting reads).

    ``points``/``colors`` are the fused coloured cloud in ``frame_id``; ``T_world_robot`` is the
    latest camera pose (optical frame) when known, used for "closest to me" style questions.
    """

    stamp_s: float
    frame_id: str
    points: np.ndarray  # (N, 3) float32
    colors: np.ndarray  # (N, 3) uint8
    instances: tuple[Instance, ...] = ()
    keyframes: tuple[Keyframe, ...] = ()
    T_world_camera_latest: Optional[np.ndarray] = None
    n_frames_integrated: int = 0
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "points", _frozen(self.points, np.float32))
        object.__setattr__(self, "colors", _frozen(self.colors, np.uint8))
        object.__setattr__(self, "instances", tuple(self.instances))
        object.__setattr__(self, "keyframes", tuple(self.keyframes))

    @property
    def is_empty(self) -> bool:
        return self.n_frames_integrated == 0

    def instance(self, instance_id: int) -> Optional[Instance]:
        for inst in self.instances:
            if inst.instance_id == instance_id:
                return inst
        return None

    def keyframe(self, keyframe_id: int) -> Optional[Keyframe]:
        for kf in self.keyframes:
            if kf.keyframe_id == keyframe_id:
                return kf
        return None
