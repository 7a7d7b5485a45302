"""Loader for RGB-D sequences in the 7-Scenes / 3DMatch / SUN3D-slice layout.

Layout of a sequence directory::

    camera-intrinsics.txt           3x3 K (pixels)
    frame-XXXXXX.color.jpg|png      8-bit colour (XXXXXX = the frame number in the original stream)
    frame-XXXXXX.depth.png          uint16 millimetres; 0 = no reading (65535 is invalid in 7-Scenes too)
    frame-XXXXXX.pose.txt           4x4 camera(optical)-to-world, metres
    gravity-direction.txt           optional: the unit gravity vector (pointing down) in the world frame

The world frame of these datasets is the first camera's, not gravity aligned. With
``gravity_align=True`` the loader rotates the world so that gravity points along -z (the minimal
rotation, so the heading is kept) and shifts it so that the lowest observed surfaces (a low
percentile of the fused points' z) sit at z = 0; ``T_align`` (aligned <- original) is exposed and
already applied to every frame's ``T_world_camera``. Without a gravity file, gravity is estimated
as the mean camera "down" axis (+y of the optical frame), which holds for hand-held and robot
cameras that are kept roughly upright.

Stamps: the files number frames of a 30 Hz stream, so ``stamp_s = frame_number / 30``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..core.geometry import backproject_depth, is_rigid_transform, transform_points
from ..core.types import CameraIntrinsics, RGBDFrame

logger = logging.getLogger(__name__)

SEVEN_SCENES_FPS = 30.0
_FRAME_RE = re.compile(r"^frame-(\d+)\.pose\.txt$")


class DatasetFormatError(ValueError):
    """A dataset directory or file does not have the expected layout or content."""


# ---------------------------------------------------------------------------------------------
# Small file readers shared by the loaders
# ---------------------------------------------------------------------------------------------


def read_matrix(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Whitespace-separated float matrix of ``shape`` from a text file (inf/nan are parsed, not rejected)."""
    if not path.is_file():
        raise FileNotFoundError(f"missing file {path}")
    try:
        values = np.array(path.read_text(encoding="utf-8").split(), dtype=np.float64)
    except ValueError as exc:
        raise DatasetFormatError(f"{path}: not a whitespace-separated numeric matrix ({exc})") from exc
    if values.size != shape[0] * shape[1]:
        raise DatasetFormatError(f"{path}: expected {shape[0]}x{shape[1]} numbers, found {values.size}")
    return values.reshape(shape)


def read_color_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a colour image file."""
    if not path.is_file():
        raise FileNotFoundError(f"missing colour image {path}")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetFormatError(f"cannot decode colour image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_depth_mm(path: Path, invalid_values: tuple[int, ...] = (65535,)) -> np.ndarray:
    """(H, W) uint16 millimetres of a 16-bit depth PNG; ``invalid_values`` become 0 (no reading)."""
    if not path.is_file():
        raise FileNotFoundError(f"missing depth image {path}")
    depth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if depth is None:
        raise DatasetFormatError(f"cannot decode depth image {path}")
    if depth.dtype != np.uint16 or depth.ndim != 2:
        raise DatasetFormatError(f"{path}: depth must be a single-channel 16-bit PNG, got {depth.dtype} {depth.shape}")
    for bad in invalid_values:
        depth[depth == bad] = 0
    return depth


def resize_color_to(color_rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Colour resized to the depth image's size (area filter when shrinking)."""
    if color_rgb.shape[:2] == (height, width):
        return color_rgb
    shrink = color_rgb.shape[1] > width
    return cv2.resize(color_rgb, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation R (3x3) with ``R @ a_hat = b_hat`` (Rodrigues; the 180 degree case is handled)."""
    a = np.asarray(a, dtype=np.float64) / np.linalg.norm(a)
    b = np.asarray(b, dtype=np.float64) / np.linalg.norm(b)
    v = np.cross(a, b)
    c = float(np.dot(a, b))
    if c < -1.0 + 1e-12:
        # Opposite vectors: rotate by pi about any axis perpendicular to a.
        axis = np.cross(a, [1.0, 0.0, 0.0])
        if np.linalg.norm(axis) < 1e-6:
            axis = np.cross(a, [0.0, 1.0, 0.0])
        axis /= np.linalg.norm(axis)
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def orthonormalize_pose(T: np.ndarray) -> np.ndarray:  # noqa: N803
    """``T`` with its rotation block replaced by the nearest rotation matrix (SVD), last row [0 0 0 1]."""
    U, _, Vt = np.linalg.svd(T[:3, :3])
    R = U @ Vt
    if np.linalg.det(R) < 0:
        R = U @ np.diag([1.0, 1.0, -1.0]) @ Vt
    out = np.eye(4)
    out[:3, :3] = R
    out[:3, 3] = T[:3, 3]
    return out


# ---------------------------------------------------------------------------------------------
# The sequence
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _FrameFiles:
    number: int
    color: Path
    depth: Path
    pose: Path


class SevenScenesSequence:
    """A 7-Scenes-layout RGB-D sequence.

    Args:
        root: the sequence directory.
        gravity_align: rotate/shift the world so gravity is -z and the lowest surfaces are near z = 0.
        floor_percentile: percentile of the fused points' z taken as the floor when aligning.
        frame_step: keep every ``frame_step``-th frame of the files present.
        max_frames: stop after this many frames (after ``frame_step``).
        max_depth_m: depth beyond this is dropped (0); 7-Scenes' Kinect is unreliable past ~4-5 m.
    """

    def __init__(
        self,
        root: Path | str,
        gravity_align: bool = False,
        floor_percentile: float = 2.0,
        frame_step: int = 1,
        max_frames: int | None = None,
        max_depth_m: float = 10.0,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"7-Scenes sequence directory not found: {self.root}")
        if frame_step < 1:
            raise ValueError(f"frame_step must be >= 1, got {frame_step}")
        K = read_matrix(self.root / "camera-intrinsics.txt", (3, 3))
        files = self._scan()
        files = files[::frame_step]
        if max_frames is not None:
            files = files[: max(0, int(max_frames))]
        self._files = files
        # Width/height come from the first depth image (the resolution the frames are delivered at).
        first_depth = read_depth_mm(files[0].depth)
        self.intrinsics = CameraIntrinsics.from_K(K, first_depth.shape[1], first_depth.shape[0])
        self.max_depth_m = float(max_depth_m)
        self.gravity_world: np.ndarray = self._gravity()
        self.T_align = np.eye(4)
        if gravity_align:
            self.T_align = self._alignment(floor_percentile)

    def _scan(self) -> list[_FrameFiles]:
        out = []
        for pose in sorted(self.root.iterdir()):
            match = _FRAME_RE.match(pose.name)
            if not match:
                continue
            stem = pose.name[: -len(".pose.txt")]
            color = next((self.root / f"{stem}.color.{ext}" for ext in ("jpg", "png")
                          if (self.root / f"{stem}.color.{ext}").is_file()), self.root / f"{stem}.color.jpg")
            out.append(_FrameFiles(int(match.group(1)), color, self.root / f"{stem}.depth.png", pose))
        if not out:
            raise DatasetFormatError(f"{self.root}: no frame-XXXXXX.pose.txt files; is this a 7-Scenes sequence?")
        out.sort(key=lambda f: f.number)
        return out

    def _gravity(self) -> np.ndarray:
        path = self.root / "gravity-direction.txt"
        if path.is_file():
            g = read_matrix(path, (3, 1)).reshape(3)
            if not np.all(np.isfinite(g)) or np.linalg.norm(g) < 1e-6:
                raise DatasetFormatError(f"{path}: gravity vector {g.tolist()} is not a finite non-zero vector")
            return g / np.linalg.norm(g)
        # The optical +y axis points down in an upright camera: average it over the valid poses.
        downs = [T[:3, 1] for T in (self.raw_pose(i) for i in range(len(self))) if T is not None]
        if not downs:
            raise DatasetFormatError(f"{self.root}: no valid poses to estimate gravity from")
        g = np.mean(downs, axis=0)
        logger.warning("%s has no gravity-direction.txt; estimated gravity %s from the camera poses", self.root, g)
        return g / np.linalg.norm(g)

    def _alignment(self, floor_percentile: float) -> np.ndarray:
        T = np.eye(4)
        T[:3, :3] = rotation_between(self.gravity_world, np.array([0.0, 0.0, -1.0]))
        # Fuse a sparse cloud (every 4th frame, every 8th pixel) to find the lowest observed surface.
        zs = []
        for i in range(0, len(self), 4):
            pose = self.raw_pose(i)
            if pose is None:
                continue
            depth = read_depth_mm(self._files[i].depth).astype(np.float32) / 1000.0
            depth[depth > self.max_depth_m] = 0.0
            pts, _ = backproject_depth(depth, self.intrinsics, stride=8)
            if len(pts):
                zs.append(transform_points(T @ pose, pts.astype(np.float64))[:, 2])
        if zs:
            T[2, 3] = -float(np.percentile(np.concatenate(zs), floor_percentile))
        else:
            logger.warning("%s: no valid depth to estimate the floor height; only rotating", self.root)
        return T

    def __len__(self) -> int:
        return len(self._files)

    @property
    def frame_numbers(self) -> list[int]:
        return [f.number for f in self._files]

    def raw_pose(self, i: int) -> np.ndarray | None:
        """Camera-to-world pose of frame ``i`` in the dataset's own world frame; None when invalid (inf/nan).

        The stored rotations are orthonormal only to ~1e-4 (text rounding, KinectFusion drift); they
        are projected onto the nearest rotation so that every consumer (quaternions in a bag,
        inverse-by-transpose) sees the same rigid pose.
        """
        T = read_matrix(self._files[i].pose, (4, 4))
        if not np.all(np.isfinite(T)):
            return None
        if not is_rigid_transform(T, tol=1e-2):
            raise DatasetFormatError(f"{self._files[i].pose}: not a rigid transform")
        return orthonormalize_pose(T)

    def pose(self, i: int) -> np.ndarray | None:
        """``T_world_camera`` of frame ``i`` (with ``T_align`` applied); None when the file holds an invalid pose."""
        T = self.raw_pose(i)
        return None if T is None else self.T_align @ T

    def load_frame(self, i: int) -> RGBDFrame | None:
        """Frame ``i`` as an RGBDFrame (depth float32 m, colour resized to the depth size); None on an invalid pose."""
        files = self._files[i]
        T = self.pose(i)
        if T is None:
            return None
        depth_mm = read_depth_mm(files.depth)
        h, w = depth_mm.shape
        if (w, h) != (self.intrinsics.width, self.intrinsics.height):
            raise DatasetFormatError(f"{files.depth}: size {w}x{h} differs from the sequence's first frame")
        depth = depth_mm.astype(np.float32) / np.float32(1000.0)
        depth[depth > self.max_depth_m] = 0.0
        color = resize_color_to(read_color_rgb(files.color), w, h)
        return RGBDFrame(
            stamp_s=files.number / SEVEN_SCENES_FPS,
            color_rgb=color,
            depth_m=depth,
            intrinsics=self.intrinsics,
            T_world_camera=T,
            frame_index=i,
        )

    def frames(self) -> Iterator[RGBDFrame]:
        """All frames in order; frames with invalid poses are skipped (counted in a log line)."""
        skipped = 0
        for i in range(len(self)):
            frame = self.load_frame(i)
            if frame is None:
                skipped += 1
                continue
            yield frame
        if skipped:
            logger.warning("%s: skipped %d of %d frames with invalid poses", self.root, skipped, len(self))


def load_seven_scenes(root: Path | str, gravity_align: bool = False, **kwargs: object) -> SevenScenesSequence:
    """Open a 7-Scenes-layout sequence (see :class:`SevenScenesSequence` for the options)."""
    return SevenScenesSequence(root, gravity_align=gravity_align, **kwargs)  # type: ignore[arg-type]
