"""Loader for ScanNet scans exported from ``.sens`` (the layout ScanNet's SensReader writes).

Layout of a scan directory ``<scene>`` (e.g. ``scene0000_00``)::

    color/<i>.jpg                        colour, typically 1296x968
    depth/<i>.png                        uint16 millimetres, typically 640x480 (0 = no reading)
    pose/<i>.txt                         4x4 camera(optical)-to-world; invalid frames hold inf/-inf/nan
    intrinsic/intrinsic_color.txt        4x4 (upper-left 3x3 is K of the colour image)
    intrinsic/intrinsic_depth.txt        4x4 (K of the depth image)
    <scene>.txt                          optional meta: ``axisAlignment = <16 numbers>``
    <scene>_vh_clean_2.ply               optional: the reconstructed mesh (vertices x, y, z, r, g, b[, alpha])
    <scene>_vh_clean_2.0.010000.segs.json  optional: per-vertex segment ids (``segIndices``)
    <scene>.aggregation.json             optional: ``segGroups`` = objects {objectId, label, segments}

Resolution: ScanNet's depth is smaller than its colour. Frames are delivered at the *depth*
resolution: colour is resized (area filter) to the depth size and the intrinsics are the depth
camera's (``intrinsic_depth.txt``), or, when that file is absent, the colour intrinsics scaled per
axis by the resize factors. The two sensors are treated as registered, which is what ScanNet's
own projection tools do.

Ground truth: each aggregation group becomes a :class:`GroundTruthObject` whose box is the
axis-aligned bounds of its mesh vertices (the ScanRefer / ScanQA evaluation convention; yaw = 0)
and whose ``object_id`` is the aggregation ``objectId`` (0-based, the ids ScanRefer's ``object_id``
uses). With ``axis_align=True`` the ``axisAlignment`` matrix from ``<scene>.txt`` is applied to
poses and objects alike (ScanNet scans are z up already; the alignment makes walls axis-parallel).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..core.colors import name_color
from ..core.geometry import transform_points
from ..core.types import CameraIntrinsics, GroundTruthObject, RGBDFrame
from .seven_scenes import DatasetFormatError, read_color_rgb, read_depth_mm, read_matrix, resize_color_to

logger = logging.getLogger(__name__)

SCANNET_FPS = 30.0


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(f"{path}: invalid JSON ({exc})") from exc


def read_axis_alignment(meta_path: Path) -> np.ndarray | None:
    """The 4x4 ``axisAlignment`` of a ScanNet ``<scene>.txt`` meta file, or None when the file/key is absent."""
    if not meta_path.is_file():
        return None
    for line in meta_path.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "axisAlignment":
            numbers = value.split()
            if len(numbers) != 16:
                raise DatasetFormatError(f"{meta_path}: axisAlignment needs 16 numbers, found {len(numbers)}")
            return np.array(numbers, dtype=np.float64).reshape(4, 4)
    return None


def read_mesh_vertices(ply_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(xyz (N, 3) float64 m, rgb (N, 3) uint8)`` of a mesh PLY's vertices, in file order (Open3D reader)."""
    import open3d as o3d  # heavy import; only the ground-truth path needs it

    if not ply_path.is_file():
        raise FileNotFoundError(f"missing mesh {ply_path}")
    mesh = o3d.io.read_triangle_mesh(str(ply_path))
    xyz = np.asarray(mesh.vertices, dtype=np.float64)
    if len(xyz) == 0:
        raise DatasetFormatError(f"{ply_path}: no vertices could be read (not a PLY mesh?)")
    rgb = np.asarray(mesh.vertex_colors, dtype=np.float64)
    colors = (np.clip(rgb, 0.0, 1.0) * 255.0).round().astype(np.uint8) if len(rgb) == len(xyz) else np.zeros(
        (len(xyz), 3), np.uint8
    )
    return xyz, colors


class ScanNetScan:
    """An exported ScanNet scan: posed frames at depth resolution plus (when present) ground-truth objects.

    Args:
        root: the scan directory (its name is the scene id unless ``scene_id`` is given).
        frame_step: keep every ``frame_step``-th frame (ScanNet streams are 30 Hz; 10-20 is typical).
        max_frames: stop after this many frames (after ``frame_step``).
        axis_align: apply ``axisAlignment`` from ``<scene>.txt`` when present.
        max_depth_m: depth beyond this is dropped (0).
    """

    def __init__(
        self,
        root: Path | str,
        scene_id: str | None = None,
        frame_step: int = 1,
        max_frames: int | None = None,
        axis_align: bool = True,
        max_depth_m: float = 10.0,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"ScanNet scan directory not found: {self.root}")
        if frame_step < 1:
            raise ValueError(f"frame_step must be >= 1, got {frame_step}")
        self.scene_id = scene_id or self.root.name
        for sub in ("color", "depth", "pose", "intrinsic"):
            if not (self.root / sub).is_dir():
                raise DatasetFormatError(
                    f"{self.root}: missing '{sub}/' directory; export the .sens file with ScanNet's SensReader first"
                )
        indices = sorted(int(p.stem) for p in (self.root / "pose").glob("*.txt") if p.stem.isdigit())
        if not indices:
            raise DatasetFormatError(f"{self.root / 'pose'}: no <index>.txt pose files")
        indices = indices[::frame_step]
        if max_frames is not None:
            indices = indices[: max(0, int(max_frames))]
        self.frame_indices = indices
        self.max_depth_m = float(max_depth_m)
        self.intrinsics = self._intrinsics(indices[0])
        align = read_axis_alignment(self.root / f"{self.scene_id}.txt") if axis_align else None
        self.T_align = np.eye(4) if align is None else align

    def _intrinsics(self, first: int) -> CameraIntrinsics:
        depth = read_depth_mm(self.root / "depth" / f"{first}.png", invalid_values=())
        h, w = depth.shape
        depth_K = self.root / "intrinsic" / "intrinsic_depth.txt"
        if depth_K.is_file():
            return CameraIntrinsics.from_K(read_matrix(depth_K, (4, 4))[:3, :3], w, h)
        color_K = read_matrix(self.root / "intrinsic" / "intrinsic_color.txt", (4, 4))[:3, :3]
        color = read_color_rgb(self._color_path(first))
        sx, sy = w / color.shape[1], h / color.shape[0]
        logger.info("%s: no intrinsic_depth.txt; scaling the colour intrinsics by (%.4f, %.4f)", self.root, sx, sy)
        return CameraIntrinsics(w, h, color_K[0, 0] * sx, color_K[1, 1] * sy, color_K[0, 2] * sx, color_K[1, 2] * sy)

    def _color_path(self, index: int) -> Path:
        for ext in ("jpg", "png"):
            p = self.root / "color" / f"{index}.{ext}"
            if p.is_file():
                return p
        return self.root / "color" / f"{index}.jpg"

    def __len__(self) -> int:
        return len(self.frame_indices)

    def pose(self, index: int) -> np.ndarray | None:
        """``T_world_camera`` of frame ``index`` (alignment applied); None for ScanNet's invalid (inf/nan) poses."""
        T = read_matrix(self.root / "pose" / f"{index}.txt", (4, 4))
        if not np.all(np.isfinite(T)):
            return None
        return self.T_align @ T

    def load_frame(self, index: int, position: int = -1) -> RGBDFrame | None:
        """Frame with file index ``index`` at depth resolution; None when its pose is invalid."""
        T = self.pose(index)
        if T is None:
            return None
        depth_mm = read_depth_mm(self.root / "depth" / f"{index}.png", invalid_values=())
        h, w = depth_mm.shape
        if (w, h) != (self.intrinsics.width, self.intrinsics.height):
            raise DatasetFormatError(f"{self.root}/depth/{index}.png: size {w}x{h} differs from the first frame")
        depth = depth_mm.astype(np.float32) / np.float32(1000.0)
        depth[depth > self.max_depth_m] = 0.0
        color = resize_color_to(read_color_rgb(self._color_path(index)), w, h)
        return RGBDFrame(
            stamp_s=index / SCANNET_FPS,
            color_rgb=color,
            depth_m=depth,
            intrinsics=self.intrinsics,
            T_world_camera=T,
            frame_index=position if position >= 0 else index,
        )

    def frames(self) -> Iterator[RGBDFrame]:
        """Frames in order; those with invalid poses are skipped and counted in one log line.

        ``frame_index`` is the frame's position among the frames yielded (0, 1, ...), ``stamp_s`` is
        the original stream index / 30 Hz.
        """
        skipped = 0
        position = 0
        for index in self.frame_indices:
            frame = self.load_frame(index, position)
            if frame is None:
                skipped += 1
                continue
            position += 1
            yield frame
        if skipped:
            logger.warning("%s: skipped %d of %d frames with invalid (inf/nan) poses", self.root, skipped, len(self))

    # -- ground truth ---------------------------------------------------------------------------

    @property
    def has_ground_truth(self) -> bool:
        return (self.root / f"{self.scene_id}.aggregation.json").is_file()

    def ground_truth_objects(self, exclude_labels: tuple[str, ...] = ()) -> list[GroundTruthObject]:
        """Annotated objects as axis-aligned boxes of their mesh vertices (world frame, alignment applied).

        Raises ``FileNotFoundError`` naming the missing file when the annotation files are absent.
        """
        agg_path = self.root / f"{self.scene_id}.aggregation.json"
        ply_path = self.root / f"{self.scene_id}_vh_clean_2.ply"
        agg = _read_json(agg_path) if agg_path.is_file() else None
        if agg is None:
            raise FileNotFoundError(f"missing {agg_path}; this scan has no instance annotation")
        segs_path = self.root / f"{self.scene_id}_vh_clean_2.0.010000.segs.json"
        if not segs_path.is_file() and agg.get("segmentsFile"):
            # The aggregation names its segments file ("scannet.<scene>_vh_clean_2.0.010000.segs.json").
            segs_path = self.root / str(agg["segmentsFile"]).removeprefix("scannet.")
        if not segs_path.is_file():
            raise FileNotFoundError(f"missing segments file {segs_path}")
        seg_indices = np.asarray(_read_json(segs_path).get("segIndices", []), dtype=np.int64)
        xyz, rgb = read_mesh_vertices(ply_path)
        if len(seg_indices) != len(xyz):
            raise DatasetFormatError(
                f"{segs_path} has {len(seg_indices)} segment ids but {ply_path} has {len(xyz)} vertices; "
                "use the _vh_clean_2 mesh the segments were computed on"
            )
        xyz = transform_points(self.T_align, xyz)
        groups = agg.get("segGroups")
        if not isinstance(groups, list):
            raise DatasetFormatError(f"{agg_path}: no 'segGroups' list")
        objects = []
        for group in groups:
            label = str(group.get("label", ""))
            if label in exclude_labels:
                continue
            object_id = int(group.get("objectId", group.get("id", -1)))
            sel = np.isin(seg_indices, np.asarray(group.get("segments", []), dtype=np.int64))
            if not np.any(sel):
                logger.warning("%s: object %d (%s) has no vertices; skipped", agg_path, object_id, label)
                continue
            pts = xyz[sel]
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            objects.append(
                GroundTruthObject(
                    object_id=object_id,
                    label=label,
                    color=name_color(rgb[sel]),
                    center=tuple(float(v) for v in (lo + hi) / 2.0),  # type: ignore[arg-type]
                    size=tuple(float(v) for v in hi - lo),  # type: ignore[arg-type]
                    yaw=0.0,
                )
            )
        return objects


def load_scannet(root: Path | str, **kwargs: object) -> ScanNetScan:
    """Open an exported ScanNet scan (see :class:`ScanNetScan` for the options)."""
    return ScanNetScan(root, **kwargs)  # type: ignore[arg-type]
