"""TSDF fusion and geometric segmentation on depth rendered from known geometry (Open3D raycasting).

``render_room`` is also used by test_memory.py / test_instances.py: a floor with two boxes, seen
by a small pinhole camera orbiting the scene; it returns exact depth, colour, instance mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open3d as o3d
import pytest

from scene_vlm_ros.core.fusion import FusionError, FusionParams, TSDFVolume
from scene_vlm_ros.core.segmentation import (
    SegmentationParams,
    gravity_align_transform,
    remove_support_planes,
    segment_objects,
)
from scene_vlm_ros.core.types import CameraIntrinsics, GroundTruthObject, RGBDFrame

INTR = CameraIntrinsics(160, 120, 110.0, 110.0, 80.0, 60.0)

#: Ground truth of the test room: (id, label, rgb, center, size). The floor is 6 x 6 m at z = 0.
OBJECTS = [
    (1, "table", (200, 40, 40), (0.0, 0.0, 0.375), (1.2, 0.8, 0.75)),
    (2, "cabinet", (50, 90, 200), (1.2, 1.0, 0.5), (0.5, 0.6, 1.0)),
    (3, "box", (60, 160, 70), (-1.0, 0.9, 0.2), (0.4, 0.4, 0.4)),
]
FLOOR_RGB = (128, 128, 128)


def gt_objects() -> list[GroundTruthObject]:
    return [GroundTruthObject(i, lbl, "", c, s, 0.0) for i, lbl, _rgb, c, s in OBJECTS]


def _box_mesh(center, size) -> o3d.t.geometry.TriangleMesh:
    m = o3d.geometry.TriangleMesh.create_box(*size)
    m.translate(np.asarray(center) - np.asarray(size) / 2.0)
    return o3d.t.geometry.TriangleMesh.from_legacy(m)


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Optical-frame pose T_world_camera of a camera at ``eye`` looking at ``target`` (z up world)."""
    z = np.asarray(target, float) - np.asarray(eye, float)
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], axis=1)
    T[:3, 3] = eye
    return T


class RoomRenderer:
    """Exact depth/colour/instance-mask images of the test room from any optical pose."""

    def __init__(self, objects=OBJECTS) -> None:
        self.scene = o3d.t.geometry.RaycastingScene()
        self.geom_to_obj: dict[int, tuple[int, tuple[int, int, int]]] = {}
        gid = self.scene.add_triangles(_box_mesh((0.0, 0.0, -0.05), (6.0, 6.0, 0.1)))
        self.geom_to_obj[gid] = (0, FLOOR_RGB)
        for oid, _lbl, rgb, c, s in objects:
            gid = self.scene.add_triangles(_box_mesh(c, s))
            self.geom_to_obj[gid] = (oid, rgb)
        self.labels = {oid: lbl for oid, lbl, *_ in objects}

    def render(self, T_world_camera: np.ndarray, stamp_s: float, index: int = -1, intr=INTR) -> RGBDFrame:  # noqa: N803
        K = o3d.core.Tensor(intr.K)
        extr = o3d.core.Tensor(np.linalg.inv(T_world_camera))
        rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(K, extr, intr.width, intr.height)
        hit = self.scene.cast_rays(rays)
        t = hit["t_hit"].numpy()
        gids = hit["geometry_ids"].numpy()
        r = rays.numpy()
        ok = np.isfinite(t)
        pts_w = r[..., :3] + r[..., 3:] * np.where(ok, t, 0.0)[..., None]
        pts_c = (pts_w - T_world_camera[:3, 3]) @ T_world_camera[:3, :3]
        depth = np.where(ok, pts_c[..., 2], 0.0).astype(np.float32)
        color = np.zeros((intr.height, intr.width, 3), np.uint8)
        mask = np.zeros((intr.height, intr.width), np.uint16)
        for gid, (oid, rgb) in self.geom_to_obj.items():
            sel = ok & (gids == gid)
            color[sel] = rgb
            mask[sel] = oid
        return RGBDFrame(stamp_s, color, depth, intr, T_world_camera, mask, dict(self.labels), index)


def orbit_frames(renderer: RoomRenderer, n: int, radius: float = 3.0, height: float = 1.6, t0: float = 0.0,
                 with_mask: bool = True) -> list[RGBDFrame]:
    """``n`` frames on a full circle around the room centre, 0.1 s apart."""
    frames = []
    for i in range(n):
        a = 2 * np.pi * i / n
        eye = np.array([radius * np.cos(a), radius * np.sin(a), height])
        f = renderer.render(look_at(eye, np.array([0.0, 0.3, 0.3])), t0 + 0.1 * i, i)
        if not with_mask:
            f.instance_mask, f.instance_labels = None, None
        frames.append(f)
    return frames


@pytest.fixture(scope="module")
def renderer() -> RoomRenderer:
    return RoomRenderer()


@pytest.fixture(scope="module")
def fused(renderer: RoomRenderer) -> TSDFVolume:
    vol = TSDFVolume(FusionParams(voxel_size_m=0.04, depth_max_m=6.0))
    for f in orbit_frames(renderer, 16):
        vol.integrate(f.depth_m, f.color_rgb, f.intrinsics, f.T_world_camera)
    return vol


def _distance_to_surfaces(renderer: RoomRenderer, pts: np.ndarray) -> np.ndarray:
    q = o3d.core.Tensor(pts.astype(np.float32))
    return renderer.scene.compute_distance(q).numpy()


def test_fused_cloud_lies_on_the_true_surfaces(renderer, fused):
    pts, cols = fused.extract()
    assert len(pts) > 2000
    dist = _distance_to_surfaces(renderer, pts)
    # TSDF zero crossings are interpolated: well within one voxel of the true surface.
    assert np.percentile(dist, 95) < 0.04
    # Colour is fused too: points near the red table top are red.
    top = (np.abs(pts[:, 2] - 0.75) < 0.03) & (np.abs(pts[:, 0]) < 0.4) & (np.abs(pts[:, 1]) < 0.25)
    assert top.sum() > 20
    assert np.all(np.abs(np.median(cols[top], axis=0) - np.array([200, 40, 40])) < 20)


def test_depth_range_limits_are_applied(renderer):
    f = renderer.render(look_at(np.array([3.0, 0.0, 1.6]), np.array([0.0, 0.0, 0.3])), 0.0)
    near_only = TSDFVolume(FusionParams(voxel_size_m=0.05, depth_min_m=0.2, depth_max_m=2.5))
    near_only.integrate(f.depth_m, f.color_rgb, f.intrinsics, f.T_world_camera)
    pts, _ = near_only.extract()
    cam = f.T_world_camera[:3, 3]
    assert len(pts) > 100
    # Nothing beyond the far limit (plus the truncation band) got into the map.
    z_cam = (pts - cam) @ f.T_world_camera[:3, 2]  # depth = distance along the optical axis
    assert np.max(z_cam) < 2.5 + 0.2 + 0.05  # far limit + truncation band + interpolation
    # A min range beyond everything in view fuses nothing.
    blind = TSDFVolume(FusionParams(voxel_size_m=0.05, depth_min_m=float(f.depth_m.max()) + 0.1, depth_max_m=20.0))
    blind.integrate(f.depth_m, f.color_rgb, f.intrinsics, f.T_world_camera)
    assert len(blind.extract()[0]) == 0


def test_block_budget_and_radius_clearing_bound_the_map(renderer):
    frames = orbit_frames(renderer, 8)
    free = TSDFVolume(FusionParams(voxel_size_m=0.04, depth_max_m=6.0))
    capped = TSDFVolume(FusionParams(voxel_size_m=0.04, depth_max_m=6.0, block_budget=150))
    for f in frames:
        free.integrate(f.depth_m, f.color_rgb, f.intrinsics, f.T_world_camera)
        capped.integrate(f.depth_m, f.color_rgb, f.intrinsics, f.T_world_camera)
        assert capped.n_blocks <= 150
    assert free.n_blocks > 150
    assert capped.n_blocks_erased > 0
    before = free.n_blocks
    removed = free.clear_outside(np.zeros(3), 1.0)
    assert removed > 0 and free.n_blocks == before - removed
    pts, _ = free.extract()
    assert np.max(np.linalg.norm(pts, axis=1)) < 1.0 + 0.32 * np.sqrt(3)  # block centre radius + half diagonal


def test_save_load_round_trip(fused, tmp_path: Path):
    fused.save(tmp_path / "grid.npz")
    back = TSDFVolume.load(tmp_path / "grid.npz", fused.params, fused.n_integrated)
    a, ca = fused.extract()
    b, cb = back.extract()
    assert back.n_blocks == fused.n_blocks
    np.testing.assert_allclose(np.sort(a, axis=0), np.sort(b, axis=0), atol=1e-5)
    with pytest.raises(FusionError, match="not found"):
        TSDFVolume.load(tmp_path / "missing.npz", fused.params)


def test_unknown_device_is_a_clear_error():
    with pytest.raises(FusionError, match="device"):
        TSDFVolume(FusionParams(device="TPU:7"))


def test_segmentation_removes_floor_and_finds_each_object(fused):
    pts, _ = fused.extract()
    params = SegmentationParams(support_min_extent_m=1.5)
    keep = remove_support_planes(pts.astype(np.float64), params)
    floor = pts[:, 2] < 0.02
    assert keep[floor].mean() < 0.05  # the floor went
    segs = segment_objects(pts, params)
    centres = np.array([pts[s].mean(axis=0) for s in segs])
    for _oid, _lbl, _rgb, c, size in OBJECTS:
        d = np.linalg.norm(centres[:, :2] - np.asarray(c[:2]), axis=1)
        j = int(np.argmin(d))
        assert d[j] < 0.25, f"no segment near object at {c}"
        ext = np.ptp(pts[segs[j]], axis=0)
        assert np.all(ext[:2] < np.asarray(size[:2]) + 0.15)


def test_gravity_alignment_maps_gravity_to_minus_z():
    g = np.array([-0.0089, 0.9044, 0.4265])
    T = gravity_align_transform(g)
    np.testing.assert_allclose(T[:3, :3] @ (g / np.linalg.norm(g)), [0, 0, -1], atol=1e-9)
    np.testing.assert_allclose(T[:3, :3].T @ T[:3, :3], np.eye(3), atol=1e-9)
    np.testing.assert_allclose(gravity_align_transform(np.array([0, 0, 1.0]))[:3, :3] @ [0, 0, 1.0], [0, 0, -1])
    with pytest.raises(ValueError, match="gravity"):
        gravity_align_transform(np.zeros(3))
