"""Class-agnostic geometric segmentation of a fused, gravity-aligned point cloud.

Input: world points (N, 3) in metres with z up (gravity = -z). Steps:
1. remove *support planes*: large planes found by RANSAC (floor, walls, ceiling, long counters)
   whose in-plane extent exceeds ``support_min_extent_m``; a table top (about 1-1.5 m) stays, it
   is an object;
2. cluster the rest by voxel connectivity (26-neighbourhood on a grid of ``cluster_voxel_m``),
   which on 2 cores is far cheaper than DBSCAN on tens of thousands of points;
3. keep clusters whose point count and extents are object-like.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import open3d as o3d
from scipy import ndimage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentationParams:
    """See ``MemoryConfig.seg_*``."""

    plane_distance_m: float = 0.04
    max_planes: int = 6
    plane_min_points: int = 400
    support_min_extent_m: float = 1.8
    floor_band_m: float = 0.25
    surface_min_extent_m: float = 0.8
    leg_max_width_m: float = 0.15
    slab_thickness_m: float = 0.25
    cluster_voxel_m: float = 0.06
    min_cluster_points: int = 40
    min_extent_m: float = 0.1
    max_extent_m: float = 3.0


def _plane_extent(points: np.ndarray, normal: np.ndarray) -> float:
    """Largest in-plane extent (m) of ``points`` (robust 2-98 percentile span along the two plane axes)."""
    n = normal / np.linalg.norm(normal)
    helper = np.array([0.0, 0.0, 1.0]) if abs(n[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    a = np.cross(n, helper)
    a /= np.linalg.norm(a)
    b = np.cross(n, a)
    pa, pb = points @ a, points @ b
    return float(max(np.ptp(np.percentile(pa, [2, 98])), np.ptp(np.percentile(pb, [2, 98]))))


def remove_support_planes(points: np.ndarray, params: SegmentationParams, seed: int = 0) -> np.ndarray:
    """Boolean mask (N,) of the points that are NOT on a support plane (floor, wall, ceiling).

    Support = a large horizontal plane (|n_z| > 0.9) at the bottom (floor, within
    ``floor_band_m`` of the lowest points) or top (ceiling) of the cloud, or a large vertical plane
    (|n_z| < 0.15, wall, cupboard front) spanning at least ``support_min_extent_m``. Horizontal
    planes in between (table tops, counters) are object surfaces and are kept; they are taken out
    of the RANSAC search only, so that the next plane can be found.
    """
    keep = np.ones(len(points), dtype=bool)
    if len(points) < params.plane_min_points:
        return keep
    o3d.utility.random.seed(seed)
    z_lo, z_hi = np.percentile(points[:, 2], [1, 99])
    searchable = np.ones(len(points), dtype=bool)
    for _ in range(params.max_planes):
        remaining = np.nonzero(searchable)[0]
        if len(remaining) < params.plane_min_points:
            break
        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points[remaining].astype(np.float64)))
        model, inliers = pcd.segment_plane(params.plane_distance_m, 3, 200)
        if len(inliers) < params.plane_min_points:
            break
        normal = np.asarray(model[:3], dtype=np.float64)
        normal /= np.linalg.norm(normal)
        inl = remaining[np.asarray(inliers)]
        searchable[inl] = False
        extent = _plane_extent(points[inl], normal)
        z_med = float(np.median(points[inl, 2]))
        horizontal, vertical = abs(normal[2]) > 0.9, abs(normal[2]) < 0.15
        floor_or_ceiling = horizontal and (z_med < z_lo + params.floor_band_m or z_med > z_hi - params.floor_band_m)
        if (floor_or_ceiling or vertical) and extent >= params.support_min_extent_m:
            keep[inl] = False
            logger.debug("support plane n=%s extent %.2f m: %d points removed", np.round(normal, 2), extent, len(inl))
    return keep


def cluster_points(points: np.ndarray, voxel_m: float) -> np.ndarray:
    """Connected-component labels (N,) int, -1 for none, of points on a ``voxel_m`` grid (26-connected)."""
    if len(points) == 0:
        return np.zeros(0, dtype=np.int64)
    ijk = np.floor((points - points.min(axis=0)) / voxel_m).astype(np.int64)
    shape = tuple(int(s) + 1 for s in ijk.max(axis=0))
    grid = np.zeros(shape, dtype=bool)
    grid[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = True
    labels, _ = ndimage.label(grid, structure=np.ones((3, 3, 3), dtype=bool))
    return labels[ijk[:, 0], ijk[:, 1], ijk[:, 2]].astype(np.int64) - 1


def _split_at_surface(points: np.ndarray, params: SegmentationParams) -> list[np.ndarray]:
    """Split one cluster that holds a large horizontal surface (a table top) from what touches it.

    The surface's main connected piece is taken out and the rest re-clustered. Pieces that belong
    to the surface's object go back to it: mostly under its footprint, reaching up to it, and thin
    (legs, aprons: thin in x or y; the slab's underside: thin in z). Everything else (chairs pushed
    against the table, things standing on it) becomes its own piece. Returns index arrays into
    ``points``, the surface's object first; a cluster without such a surface comes back whole.
    """
    whole = [np.arange(len(points))]
    if len(points) < params.min_cluster_points:
        return whole
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    model, inliers = pcd.segment_plane(params.plane_distance_m / 2, 3, 200)
    normal = np.asarray(model[:3]) / np.linalg.norm(model[:3])
    inl = np.asarray(inliers)
    if abs(normal[2]) < 0.95 or len(inl) < params.min_cluster_points:
        return whole
    # Keep the main connected piece of the plane: coplanar bits elsewhere are not the same object.
    lab = cluster_points(points[inl], params.cluster_voxel_m)
    if not np.any(lab >= 0):
        return whole
    top_idx = inl[lab == np.bincount(lab[lab >= 0]).argmax()]
    top = points[top_idx]
    if np.ptp(top[:, :2], axis=0).max() < params.surface_min_extent_m:
        return whole
    z_top = float(np.median(top[:, 2]))
    footprint = cv2.boxPoints(cv2.minAreaRect(top[:, :2].astype(np.float32))).astype(np.float32)
    cv = params.cluster_voxel_m
    # The slab: the top plus its edges and underside (TSDF surfaces are not one plane thick),
    # i.e. everything within a voxel of the footprint in a thin band below the top.
    near = np.array([cv2.pointPolygonTest(footprint, (float(x), float(y)), True) >= -cv for x, y in points[:, :2]])
    band = (points[:, 2] >= z_top - params.slab_thickness_m) & (points[:, 2] <= z_top + params.plane_distance_m)
    is_top = near & band
    is_top[top_idx] = True
    rest = np.nonzero(~is_top)[0]
    owner = [np.nonzero(is_top)[0]]
    others: list[np.ndarray] = []
    if len(rest):
        labels = cluster_points(points[rest], params.cluster_voxel_m)
        for lbl in np.unique(labels[labels >= 0]):
            piece = rest[labels == lbl]
            pp = points[piece]
            inside = np.mean(
                [cv2.pointPolygonTest(footprint, (float(x), float(y)), True) >= -cv for x, y in pp[:, :2]]
            )
            ext = np.ptp(pp, axis=0)
            # Legs end where the slab band starts (the band already took their upper ends).
            reaches_top = z_top - params.slab_thickness_m - 2 * cv <= pp[:, 2].max() <= z_top + cv
            thin = min(ext[0], ext[1]) <= params.leg_max_width_m or ext[2] <= 2 * cv
            (owner if inside >= 0.8 and reaches_top and thin else others).append(piece)
    return [np.concatenate(owner), *others]


def segment_objects(points: np.ndarray, params: SegmentationParams) -> list[np.ndarray]:
    """Object segments of a gravity-aligned world cloud: a list of index arrays into ``points``.

    Segments are sorted by size (largest first); indices refer to the input ``points`` (N, 3).
    """
    pts = np.asarray(points, dtype=np.float64)
    if len(pts) == 0:
        return []
    keep = remove_support_planes(pts, params)
    idx = np.nonzero(keep)[0]
    labels = cluster_points(pts[idx], params.cluster_voxel_m)
    segments: list[np.ndarray] = []
    if len(labels) == 0:
        return segments
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    for group in np.split(order, bounds):
        if len(group) < params.min_cluster_points or labels[group[0]] < 0:
            continue
        members = idx[group]
        pieces = [members]
        if np.ptp(pts[members, :2], axis=0).max() >= params.surface_min_extent_m:
            pieces = [members[p] for p in _split_at_surface(pts[members], params)]
        for piece in pieces:
            if len(piece) < params.min_cluster_points:
                continue
            ext = np.ptp(pts[piece], axis=0)
            if ext.max() < params.min_extent_m or ext.max() > params.max_extent_m:
                continue
            segments.append(piece)
    segments.sort(key=len, reverse=True)
    return segments


def gravity_align_transform(gravity_world: np.ndarray) -> np.ndarray:
    """4x4 rotation ``T_aligned_world`` that turns the unit ``gravity_world`` vector into (0, 0, -1).

    Used for datasets whose world frame is not z-up (7-Scenes): apply it to every camera pose
    (``T_aligned_world @ T_world_camera``) before fusion so that segmentation's support planes
    and the boxes' yaw are about the true vertical.
    """
    g = np.asarray(gravity_world, dtype=np.float64).reshape(3)
    norm = np.linalg.norm(g)
    if not np.isfinite(norm) or norm < 1e-9:
        raise ValueError(f"gravity vector {g} must be finite and non-zero")
    g = g / norm
    target = np.array([0.0, 0.0, -1.0])
    axis = np.cross(g, target)
    s, c = np.linalg.norm(axis), float(np.dot(g, target))
    if s < 1e-12:
        R = np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])  # noqa: N806
    else:
        k = axis / s
        Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])  # noqa: N806
        R = np.eye(3) + s * Kx + (1 - c) * (Kx @ Kx)  # noqa: N806 (Rodrigues)
    T = np.eye(4)  # noqa: N806
    T[:3, :3] = R
    return T
