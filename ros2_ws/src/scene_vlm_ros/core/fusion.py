"""Incremental coloured TSDF fusion on Open3D's tensor ``VoxelBlockGrid``.

Frames and units: depth in metres (float32, 0/NaN = no reading), colour uint8 RGB, poses
``T_world_camera`` (optical camera frame -> world, metres). The fused cloud is in the world frame.

Why the tensor ``VoxelBlockGrid``: Open3D 0.20's legacy ``ScalableTSDFVolume`` integrates without
error but extracts empty clouds on these machines (see docs/research-notes.md). Why CPU by
default: on the 2-core target the CPU hash-map integration costs ~6 ms per 640x480 frame at 5 cm,
and a CUDA device would add host->device copies per frame on machines that have one; ``device``
is a parameter ("CUDA:0") for robots with a GPU.

Memory is bounded by a block budget: when the number of allocated blocks exceeds it, the blocks
farthest from the current camera are erased (optionally, everything outside ``clear_radius_m``
around the camera is erased on every frame, the way nvblox bounds its map).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open3d as o3d
import open3d.core as o3c

from .geometry import invert_transform
from .types import CameraIntrinsics

logger = logging.getLogger(__name__)


class FusionError(RuntimeError):
    """The TSDF volume could not integrate or extract (bad device, corrupt file)."""


@dataclass(frozen=True)
class FusionParams:
    """Parameters of :class:`TSDFVolume` (see ``MemoryConfig`` for their documentation)."""

    voxel_size_m: float = 0.05
    trunc_voxel_multiplier: float = 4.0
    block_resolution: int = 8
    depth_min_m: float = 0.2
    depth_max_m: float = 5.0
    block_budget: int = 40000
    clear_radius_m: float = 0.0
    device: str = "CPU:0"
    min_observations: int = 2
    initial_blocks: int = 2048


class TSDFVolume:
    """A coloured TSDF map: ``integrate`` one posed RGB-D frame at a time, ``extract`` a cloud.

    Not thread-safe on its own; :class:`~scene_vlm_ros.core.memory.SceneMemory` serialises access.
    """

    def __init__(self, params: FusionParams) -> None:
        self.params = params
        try:
            self._device = o3c.Device(params.device)
        except Exception as exc:  # Open3D raises a bare RuntimeError for unknown devices
            raise FusionError(f"unknown Open3D device {params.device!r} (use 'CPU:0' or 'CUDA:0'): {exc}") from exc
        # The grid preallocates every block's voxels (about 10 KB each at resolution 8), so it starts
        # small and grows (Open3D rehashes when full: a one-off latency spike) up to the budget.
        self._vbg = self._new_grid(min(params.block_budget, params.initial_blocks) + 1024)
        self.n_integrated = 0
        self.n_blocks_erased = 0

    def _new_grid(self, block_count: int) -> o3d.t.geometry.VoxelBlockGrid:
        return o3d.t.geometry.VoxelBlockGrid(
            attr_names=("tsdf", "weight", "color"),
            attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
            attr_channels=((1), (1), (3)),
            voxel_size=float(self.params.voxel_size_m),
            block_resolution=int(self.params.block_resolution),
            block_count=int(block_count),
            device=self._device,
        )

    @property
    def n_blocks(self) -> int:
        """Number of allocated voxel blocks (each ``block_resolution**3`` voxels)."""
        return int(self._vbg.hashmap().size())

    @property
    def bytes_per_block(self) -> int:
        """Approximate memory of one block: tsdf + weight + 3 colour float32 per voxel, plus the key."""
        return int(self.params.block_resolution**3 * 5 * 4 + 3 * 4)

    def integrate(
        self,
        depth_m: np.ndarray,
        color_rgb: np.ndarray,
        intrinsics: CameraIntrinsics,
        T_world_camera: np.ndarray,  # noqa: N803
    ) -> bool:
        """Fuse one frame: ``depth_m`` (H, W) float32 metres, ``color_rgb`` (H, W, 3) uint8, optical pose.

        Returns False (and changes nothing) when no pixel lies within the depth range: Open3D
        aborts on a frame that touches no block, and such a frame carries no surface anyway.
        """
        p = self.params
        depth = np.nan_to_num(np.asarray(depth_m, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        # VoxelBlockGrid has only a far limit; the near limit (sensor blind zone, robot body) is ours.
        depth_mm = np.where((depth >= p.depth_min_m) & (depth <= p.depth_max_m), depth * 1000.0, 0.0)
        if not np.any(depth_mm > 0):
            logger.debug("frame has no depth within [%.2f, %.2f] m: nothing to fuse", p.depth_min_m, p.depth_max_m)
            return False
        depth_img = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(depth_mm.astype(np.uint16)))).to(
            self._device
        )
        color_img = o3d.t.geometry.Image(
            o3c.Tensor(np.ascontiguousarray(color_rgb, dtype=np.uint8))
        ).to(self._device)
        K = o3c.Tensor(intrinsics.K, dtype=o3c.float64)  # noqa: N806
        extrinsic = o3c.Tensor(invert_transform(np.asarray(T_world_camera, dtype=np.float64)), dtype=o3c.float64)
        depth_scale = 1000.0
        try:
            block_coords = self._vbg.compute_unique_block_coordinates(
                depth_img, K, extrinsic, depth_scale, p.depth_max_m, p.trunc_voxel_multiplier
            )
            self._vbg.integrate(
                block_coords, depth_img, color_img, K, extrinsic, depth_scale, p.depth_max_m, p.trunc_voxel_multiplier
            )
        except RuntimeError as exc:
            raise FusionError(f"Open3D could not integrate the frame: {exc}") from exc
        self.n_integrated += 1
        camera_xyz = np.asarray(T_world_camera, dtype=np.float64)[:3, 3]
        if p.clear_radius_m > 0.0:
            self.clear_outside(camera_xyz, p.clear_radius_m)
        if self.n_blocks > p.block_budget:
            self._enforce_budget(camera_xyz)
        return True

    def _block_keys_and_centres(self) -> tuple[o3c.Tensor, np.ndarray]:
        hashmap = self._vbg.hashmap()
        active = hashmap.active_buf_indices()
        keys = hashmap.key_tensor()[active]
        block_size = self.params.voxel_size_m * self.params.block_resolution
        centres = (keys.cpu().numpy().astype(np.float64) + 0.5) * block_size
        return keys, centres

    def clear_outside(self, center_xyz: np.ndarray, radius_m: float) -> int:
        """Erase every block whose centre is farther than ``radius_m`` (m) from ``center_xyz`` (world)."""
        keys, centres = self._block_keys_and_centres()
        if len(centres) == 0:
            return 0
        far = np.linalg.norm(centres - np.asarray(center_xyz, dtype=np.float64), axis=1) > radius_m
        return self._erase(keys, far)

    def _enforce_budget(self, camera_xyz: np.ndarray) -> None:
        keys, centres = self._block_keys_and_centres()
        excess = len(centres) - self.params.block_budget
        if excess <= 0:
            return
        dist = np.linalg.norm(centres - camera_xyz, axis=1)
        drop = np.zeros(len(centres), dtype=bool)
        drop[np.argsort(dist)[-excess:]] = True
        n = self._erase(keys, drop)
        logger.info("block budget %d reached: erased %d farthest blocks", self.params.block_budget, n)

    def _erase(self, keys: o3c.Tensor, mask: np.ndarray) -> int:
        n = int(mask.sum())
        if n:
            idx = o3c.Tensor(np.nonzero(mask)[0].astype(np.int64), device=keys.device)
            self._vbg.hashmap().erase(keys[idx])
            self.n_blocks_erased += n
        return n

    def extract(self, weight_threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Surface cloud of the map: ``(points (N, 3) float32 world m, colors (N, 3) uint8)``.

        ``weight_threshold``: surfaces whose fused weight (about the number of observing frames) is
        not above it are skipped. Default: seen by ``min_observations`` frames, relaxed while
        fewer frames than that have been integrated, so a one-frame map is not empty.
        """
        if weight_threshold is None:
            weight_threshold = min(self.params.min_observations, max(1, self.n_integrated)) - 0.5
        if self.n_blocks == 0:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
        pcd = self._vbg.extract_point_cloud(weight_threshold)
        if "positions" not in pcd.point or pcd.point.positions.shape[0] == 0:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
        pts = pcd.point.positions.cpu().numpy().astype(np.float32)
        if "colors" in pcd.point:
            col = pcd.point.colors.cpu().numpy()
            # Extraction normalises colour to [0, 1] for uint8 input images.
            cols = np.clip(np.rint(col * 255.0), 0.0, 255.0).astype(np.uint8)
        else:
            cols = np.full((len(pts), 3), 128, np.uint8)
        return pts, cols

    def save(self, path: Path) -> None:
        """Write the grid to ``path`` (an ``.npz`` file, Open3D's own format)."""
        self._vbg.save(str(path))

    @classmethod
    def load(cls, path: Path, params: FusionParams, n_integrated: int = 0) -> TSDFVolume:
        """Read a grid written by :meth:`save`; ``params`` must match the saved voxel size.

        ``n_integrated``: frames fused into the saved grid (the grid file does not hold it; it sets
        the default extraction threshold)."""
        if not Path(path).is_file():
            raise FusionError(f"TSDF grid file {path} not found")
        vol = cls.__new__(cls)
        vol.params = params
        vol._device = o3c.Device(params.device)
        try:
            vol._vbg = o3d.t.geometry.VoxelBlockGrid.load(str(path)).to(vol._device)
        except Exception as exc:
            raise FusionError(f"cannot read TSDF grid {path}: {exc}") from exc
        vol.n_integrated = int(n_integrated)
        vol.n_blocks_erased = 0
        return vol
