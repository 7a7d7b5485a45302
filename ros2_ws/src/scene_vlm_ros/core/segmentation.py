"""Class-agnostic geometric segmentation of a fused, gravity-aligned point cloud.

Input: world points (N, 3) in metres with z up (gravity = -z). Steps:
1. remove *support planes* found by RANSAC: the floor and ceiling (large horizontal planes at the
   bottom/top of the cloud) and walls (large vertical planes, ``support_min_extent_m`` or more);
   horizontal planes in between (table tops, counters) are object surfaces and stay;
2. cluster the rest by voxel connectivity (26-neighbourhood on a grid of ``cluster_voxel_m``),
   which on 2 cores is far cheaper than DBSCAN on tens of thousands of points;
3. split a cluster that holds a large horizontal surface (a table with chairs pushed against it):
   the surface and what lies under its footprint form one object, the rest is re-clustered;
4. keep segments whose point count and extents are object-like.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentationParams:
    """Segmentation parameters (metres; ``MemoryConfig.seg_*`` sets the main ones).

    plane_distance_m: RANSAC inlier distance of support planes and table tops.
    max_planes / plane_min_points: how many planes to try, smallest plane worth considering.
    ransac_max_points / ransac_iterations: RANSAC scores this many plane hypotheses on at most
        this many random points.
    support_min_extent_m: in-plane span from which a floor/ceiling/wall plane counts as support.
    floor_band_m: horizontal planes this close to the bottom/top of the cloud are floor/ceiling.
    surface_min_extent_m: a cluster this wide is checked for a table-like top to split at.
    surface_open_m / surface_cell_m: morphological opening of the top's occupancy grid (cells of
        ``surface_cell_m``); thinner things at the top's height (chair backs) are not part of it.
    surface_free_below_m: a top cell with surface points this far below the top (min, max depth
        under it, m) is a vertical surface (a chair back, a cupboard front), not part of a slab.
    leg_max_width_m / slab_thickness_m: thin pieces under a top (legs) and the band below the top
        (edges, underside) that belong to the top's object.
    claim_below_surface: everything under the top's footprint belongs to it (else only thin legs).
    cluster_voxel_m: connectivity grid; min_cluster_points, min/max_extent_m: object-like segments.
    """

    plane_distance_m: float = 0.04
    max_planes: int = 6
    plane_min_points: int = 400
    ransac_max_points: int = 20000
    ransac_iterations: int = 200
    support_min_extent_m: float = 1.8
    floor_band_m: float = 0.25
    surface_min_extent_m: float = 0.8
    surface_open_m: float = 0.18
    surface_cell_m: float = 0.05
    surface_free_below_m: tuple[float, float] = (0.06, 0.2)
    leg_max_width_m: float = 0.15
    slab_thickness_m: float = 0.12
    claim_below_surface: bool = True
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


def fit_plane_ransac(points: np.ndarray, distance_m: float, iterations: int, rng: np.random.Generator
                     ) -> tuple[np.ndarray, float]:
    """Plane ``(unit normal, offset)`` with ``n . p + offset = 0`` that has the most points within
    ``distance_m``, refined by a least-squares fit to those inliers.

    All hypotheses are scored at once as one matrix product, which numpy runs without holding the
    GIL (Open3D's ``segment_plane`` held it for the whole search and stalled the mapping thread).
    """
    pts = np.asarray(points, dtype=np.float32)
    idx = rng.integers(0, len(pts), size=(iterations, 3))
    p0, p1, p2 = pts[idx[:, 0]], pts[idx[:, 1]], pts[idx[:, 2]]
    normals = np.cross(p1 - p0, p2 - p0)
    norms = np.linalg.norm(normals, axis=1)
    ok = norms > 1e-9
    if not np.any(ok):
        return np.array([0.0, 0.0, 1.0]), 0.0
    normals = normals[ok] / norms[ok, None]
    offsets = -np.einsum("ij,ij->i", normals, p0[ok])
    counts = (np.abs(pts @ normals.T + offsets) < distance_m).sum(axis=0)
    best = int(np.argmax(counts))
    inliers = pts[np.abs(pts @ normals[best] + offsets[best]) < distance_m].astype(np.float64)
    if len(inliers) < 3:
        return normals[best].astype(np.float64), float(offsets[best])
    centroid = inliers.mean(axis=0)
    normal = np.linalg.svd(inliers - centroid, full_matrices=False)[2][-1]
    return normal, float(-normal @ centroid)


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
    rng = np.random.default_rng(seed)
    z_lo, z_hi = np.percentile(points[:, 2], [1, 99])
    searchable = np.ones(len(points), dtype=bool)
    for _ in range(params.max_planes):
        remaining = np.nonzero(searchable)[0]
        if len(remaining) < params.plane_min_points:
            break
        # RANSAC hypotheses are scored on a fixed-size random subset; inliers are then taken exactly
        # over all points.
        sample = remaining
        if len(remaining) > params.ransac_max_points:
            sample = np.sort(rng.choice(remaining, params.ransac_max_points, replace=False))
        normal, offset = fit_plane_ransac(points[sample], params.plane_distance_m, params.ransac_iterations, rng)
        inl = remaining[np.abs(points[remaining] @ normal + offset) < params.plane_distance_m]
        if len(inl) < params.plane_min_points:
            break
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


class _SurfaceMask:
    """A horizontal surface as an xy occupancy grid (cells of ``cell_m``), for fast membership tests."""

    def __init__(self, xy: np.ndarray, cell_m: float, origin: np.ndarray, shape: tuple[int, int],
                 cells: np.ndarray) -> None:
        self.cell_m, self.origin, self.cells = cell_m, origin, cells
        self.shape = shape

    def contains(self, xy: np.ndarray, margin_cells: int = 0) -> np.ndarray:
        """Boolean (N,): which ``xy`` (N, 2) points fall in the surface (grown by ``margin_cells``)."""
        grid = self.cells
        if margin_cells > 0:
            grid = ndimage.binary_dilation(grid, np.ones((3, 3), bool), iterations=margin_cells)
        ij = np.floor((np.asarray(xy) - self.origin) / self.cell_m).astype(np.int64)
        ok = (ij[:, 0] >= 0) & (ij[:, 1] >= 0) & (ij[:, 0] < self.shape[0]) & (ij[:, 1] < self.shape[1])
        out = np.zeros(len(ij), dtype=bool)
        out[ok] = grid[ij[ok, 0], ij[ok, 1]]
        return out

    def extent_m(self) -> tuple[float, float]:
        """(long, short) side (m) of the min-area rectangle around the surface's cells."""
        ii, jj = np.nonzero(self.cells)
        centres = (np.stack([ii, jj], axis=1) + 0.5) * self.cell_m + self.origin
        (_, _), (w, h), _ = cv2.minAreaRect(centres.astype(np.float32))
        return float(max(w, h) + self.cell_m), float(min(w, h) + self.cell_m)

    def fill(self) -> float:
        """Share (0-1) of its min-area rectangle that the surface covers (1 = a clean slab)."""
        long_m, short_m = self.extent_m()
        return float(self.cells.sum()) * self.cell_m**2 / max(long_m * short_m, 1e-9)


def surface_mask(xy: np.ndarray, cell_m: float, open_m: float, under_xy: np.ndarray | None = None
                 ) -> _SurfaceMask | None:
    """The main slab of horizontal-surface points ``xy`` (N, 2): their occupancy grid without the
    cells that also hold ``under_xy`` (M, 2) points (surface just below the top), morphologically
    opened with a ``open_m`` square, largest connected piece, holes filled.

    Height structure and the opening separate a table top from the chairs against it: a table
    top seen from above is a thin slab with free space under its cells, whereas a chair back whose
    top edge reaches table height is a vertical surface (points under its cells) and, from above,
    one or two cells thick, so the opening removes what is left of it. The slab, many cells wide in
    both directions, survives with its outline. Returns None when nothing survives.
    """
    if len(xy) == 0:
        return None
    origin = xy.min(axis=0) - 2 * cell_m
    ij = np.floor((xy - origin) / cell_m).astype(np.int64)
    shape = (int(ij[:, 0].max()) + 3, int(ij[:, 1].max()) + 3)
    grid = np.zeros(shape, dtype=bool)
    grid[ij[:, 0], ij[:, 1]] = True
    if under_xy is not None and len(under_xy):
        uij = np.floor((np.asarray(under_xy) - origin) / cell_m).astype(np.int64)
        ok = (uij >= 0).all(axis=1) & (uij[:, 0] < shape[0]) & (uij[:, 1] < shape[1])
        grid[uij[ok, 0], uij[ok, 1]] = False
    # Close first: a fused surface has pinholes (no depth on glossy spots) that opening would widen.
    grid = ndimage.binary_closing(grid, np.ones((3, 3), bool))
    k = int(round(open_m / cell_m))
    opened = ndimage.binary_opening(grid, np.ones((k, k), bool)) if k > 1 else grid
    lab, n = ndimage.label(opened)
    if n == 0:
        return None
    main = lab == (int(np.argmax(np.bincount(lab.ravel())[1:])) + 1)
    # Things standing on the surface (a box, a laptop) hide it from above: their cells are holes.
    main = ndimage.binary_fill_holes(main)
    return _SurfaceMask(xy, cell_m, origin, shape, main)


def _split_at_surface(points: np.ndarray, params: SegmentationParams, seed: int = 0) -> list[np.ndarray]:
    """Split one cluster that holds a large horizontal surface (a table top) from what touches it.

    The surface is the RANSAC plane's inliers reduced to their main slab (:func:`surface_mask`:
    thin things at the same height, such as chair backs, drop out). The slab and the band just
    below it form the surface's object; the rest is re-clustered, and pieces that belong to the
    object go back to it: mostly under its footprint, reaching up to it, and thin (legs, aprons).
    Everything else (chairs pushed against or under the table, things standing on it) becomes its
    own piece. Returns index arrays into ``points``, the surface's object first; a cluster without
    such a surface comes back whole.
    """
    whole = [np.arange(len(points))]
    if len(points) < params.min_cluster_points:
        return whole
    # Seeded numpy RANSAC (Open3D's segment_plane draws from its own unseeded generator, which made
    # the same bag map to a different table run to run).
    rng = np.random.default_rng(seed)
    sample = points if len(points) <= params.ransac_max_points else points[
        np.sort(rng.choice(len(points), params.ransac_max_points, replace=False))]
    normal, offset = fit_plane_ransac(sample, params.plane_distance_m, params.ransac_iterations, rng)
    inl = np.nonzero(np.abs(points @ normal + offset) < params.plane_distance_m)[0]
    if abs(normal[2]) < 0.95 or len(inl) < params.min_cluster_points:
        return whole
    cv = params.cluster_voxel_m
    # A horizontal top: the band around the inliers' median height (a RANSAC plane tilted by a
    # degree or two would take in the chair backs at the table's ends).
    z_top = float(np.median(points[inl, 2]))
    inl = np.nonzero(np.abs(points[:, 2] - z_top) < params.plane_distance_m)[0]
    under = (points[:, 2] < z_top - params.surface_free_below_m[0]) & (
        points[:, 2] > z_top - params.surface_free_below_m[1])
    # Two readings of the top: without the cells that have surface below them (chair backs, but
    # also a table's own apron when the camera saw under it) and without that test. The one that
    # fills its rectangle better is the slab (a top with chairs has their outlines sticking out;
    # a top eaten by the apron test is left ragged).
    candidates = [surface_mask(points[inl, :2], params.surface_cell_m, params.surface_open_m, points[under, :2]),
                  surface_mask(points[inl, :2], params.surface_cell_m, params.surface_open_m)]
    candidates = [m for m in candidates if m is not None and m.extent_m()[0] >= params.surface_min_extent_m]
    top_mask = max(candidates, key=lambda m: m.fill(), default=None)
    if top_mask is None:
        # A counter top has cupboard fronts under its edge and is seen as a narrow strip: no free
        # space below, nothing left after opening, still a top (its main connected piece).
        top_mask = surface_mask(points[inl, :2], params.surface_cell_m, 0.0)
    if top_mask is None or top_mask.extent_m()[0] < params.surface_min_extent_m:
        return whole
    top_idx = inl[top_mask.contains(points[inl, :2])]
    # The slab: the top plus its edges and underside (TSDF surfaces are not one plane thick),
    # i.e. everything over the footprint in a thin band below the top.
    near = top_mask.contains(points[:, :2])
    band = (points[:, 2] >= z_top - params.slab_thickness_m) & (points[:, 2] <= z_top + params.plane_distance_m)
    if params.claim_below_surface:
        band = points[:, 2] <= z_top + params.plane_distance_m
    is_top = near & band
    is_top[top_idx] = True
    rest = np.nonzero(~is_top)[0]
    owner = [np.nonzero(is_top)[0]]
    others: list[np.ndarray] = []
    if len(rest):
        labels = cluster_points(points[rest], cv)
        for lbl in np.unique(labels[labels >= 0]):
            piece = rest[labels == lbl]
            pp = points[piece]
            inside = float(np.mean(top_mask.contains(pp[:, :2], margin_cells=1)))
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
