"""Bird's-eye view (BEV) rendering of a scene snapshot, the global image of a GPT4Scene prompt.

The BEV is a gravity-aligned orthographic top-down view of the fused coloured cloud: world +x points
right in the image, world +y points up (north up), one uniform scale on both axes, the scene centred
in a square image with a black background. Everything above a height cut (the ceiling, lamps) is
removed so the floor plan and the furniture are visible.

Pixel convention (shared with :mod:`scene_vlm_ros.core.markers`): ``(u, v)`` are continuous pixel
coordinates with pixel ``(col, row)`` centred at ``(u, v) = (col, row)`` -- the convention of
``cv2.circle`` -- so ``np.rint(world_to_px(p))`` is the pixel that shows ``p``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

from .types import SceneSnapshot

logger = logging.getLogger(__name__)

#: Height of the default cut above the estimated floor (m). Rooms are >= 2.2 m high, so this keeps
#: furniture, counters and wall cupboards while dropping ceilings, lamps and ceiling fans.
DEFAULT_CUT_ABOVE_FLOOR_M = 2.0
#: Percentile of point heights taken as the floor; robust to a few points below the floor (noise,
#: reflections) without needing a plane fit.
FLOOR_PERCENTILE = 1.0
#: Percentile (each side) of the x/y extent that the image frames; points beyond fall off the image.
EXTENT_PERCENTILE = 0.1
#: Largest splat radius the density estimate may choose (px); beyond it the cloud is too sparse
#: for this view and holes are the honest result.
MAX_SPLAT_RADIUS_PX = 6
#: Heights are quantised to this step (m) inside the z-buffer key.
_Z_QUANTUM_M = 1e-3
_IDX_BITS = 32


@dataclass(frozen=True)
class BevImage:
    """A rendered BEV and its pixel <-> world (x, y) mapping.

    ``image`` is (S, S, 3) uint8 RGB. ``origin_xy_m`` is the world (x, y) in metres of the centre of
    pixel (0, 0) (the top-left pixel); ``u = (x - origin_x) * bev_px_per_m`` and
    ``v = (origin_y - y) * bev_px_per_m``. ``floor_z_m``/``height_cut_m`` are the world heights used
    (points with ``z > height_cut_m`` were dropped). ``n_points`` counts the points drawn.
    """

    image: np.ndarray
    bev_px_per_m: float
    origin_xy_m: np.ndarray
    floor_z_m: float
    height_cut_m: float
    splat_radius_px: int
    n_points: int = 0
    metadata: dict = field(default_factory=dict)

    @property
    def size_px(self) -> int:
        return int(self.image.shape[0])

    def world_to_px(self, points: np.ndarray) -> np.ndarray:
        """(N, 2+) world points (x, y[, z]) in metres -> (N, 2) float64 pixel coordinates (u, v)."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, np.asarray(points).shape[-1])
        if p.shape[1] < 2:
            raise ValueError(f"world_to_px needs (N, 2) or (N, 3) points, got shape {np.shape(points)}")
        u = (p[:, 0] - self.origin_xy_m[0]) * self.bev_px_per_m
        v = (self.origin_xy_m[1] - p[:, 1]) * self.bev_px_per_m
        return np.stack([u, v], axis=1)

    def px_to_world(self, uv: np.ndarray) -> np.ndarray:
        """(N, 2) pixel coordinates (u, v) -> (N, 2) world (x, y) in metres (inverse of world_to_px)."""
        q = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        x = q[:, 0] / self.bev_px_per_m + self.origin_xy_m[0]
        y = self.origin_xy_m[1] - q[:, 1] / self.bev_px_per_m
        return np.stack([x, y], axis=1)


def estimate_floor_and_cut(z: np.ndarray, height_cut_m: float | None = None) -> tuple[float, float]:
    """Floor height and height cut (world m) for an (N,) array of point heights.

    The floor is the 1st percentile of ``z``. Without an explicit ``height_cut_m`` the cut is
    ``floor + 2.0 m``, lowered to just below a ceiling slab when one is detected lower than that
    (a thin dense layer of points at the top of the cloud, >= 1.6 m above the floor).
    """
    if z.size == 0:
        return 0.0, float(height_cut_m) if height_cut_m is not None else DEFAULT_CUT_ABOVE_FLOOR_M
    floor = float(np.percentile(z, FLOOR_PERCENTILE))
    if height_cut_m is not None:
        return floor, float(height_cut_m)
    cut = floor + DEFAULT_CUT_ABOVE_FLOOR_M
    top = float(np.percentile(z, 99.5))
    if top - floor >= 1.6 and top < cut:
        # A ceiling shows as many points within a few cm of the top; furniture tops do not cover
        # enough of the footprint to reach 10 % of all points in such a thin slab.
        slab = np.count_nonzero(z > top - 0.05)
        if slab > 0.10 * z.size:
            cut = top - 0.15
    return floor, cut


def _auto_splat_radius(hit: np.ndarray, size_px: int) -> int:
    """Splat radius (px) that closes the gaps between neighbouring points of this density.

    ``hit`` is the (S*S,) mask of pixels hit by at least one point. The footprint (area the cloud
    covers, px^2) is measured on 8 px blocks, which are closed even for sparse clouds; the pixels
    actually hit at 1 px then give the mean spacing between points on the surfaces seen from above:
    ``spacing = sqrt(footprint / hit)``. A disk of radius ``~0.71 * spacing`` (half the diagonal)
    covers a square grid of that spacing.
    """
    n_hit = int(np.count_nonzero(hit))
    if n_hit == 0:
        return 0
    block = 8
    nb = (size_px + block - 1) // block
    pad = nb * block
    grid = np.zeros((pad, pad), dtype=bool)
    grid[:size_px, :size_px] = hit.reshape(size_px, size_px)
    blocks = grid.reshape(nb, block, nb, block).any(axis=(1, 3))
    footprint = float(np.count_nonzero(blocks)) * block * block
    spacing = np.sqrt(max(footprint / n_hit, 1.0))
    return int(np.clip(np.ceil(0.71 * spacing - 0.25), 0, MAX_SPLAT_RADIUS_PX))


def render_bev(
    snapshot: SceneSnapshot,
    size_px: int = 512,
    height_cut_m: float | None = None,
    margin_m: float = 0.2,
    splat_radius_px: int | None = None,
    extent_xy_m: tuple[float, float, float, float] | None = None,
) -> BevImage:
    """Render the snapshot's coloured cloud (world frame, z up) as a square top-down image.

    Args:
        snapshot: scene to draw; ``points`` (N, 3) float32 metres and ``colors`` (N, 3) uint8 RGB.
        size_px: side of the square output image.
        height_cut_m: world height above which points are dropped; ``None`` estimates it
            (:func:`estimate_floor_and_cut`: floor + 2.0 m, or just under a detected ceiling).
        margin_m: free border around the scene's xy extent (the 0.1-99.9 percentile range of x and y,
            so stray far points do not shrink the room; they fall off the image).
        splat_radius_px: radius each point covers; ``None`` derives it from the point density.
        extent_xy_m: fixed ``(x_min, y_min, x_max, y_max)`` to frame instead of the cloud's extent
            (keeps the scale constant across snapshots of a growing map).

    Highest point wins per pixel (a z-buffer on packed ``(height, index)`` keys, ``np.maximum.at``),
    then a grey dilation of the key image splats each point over a disk with the same rule.
    """
    if int(size_px) < 16:
        raise ValueError(f"size_px must be >= 16, got {size_px}")
    if margin_m < 0:
        raise ValueError(f"margin_m must be >= 0, got {margin_m}")
    size_px = int(size_px)
    pts = snapshot.points
    cols = snapshot.colors
    if pts.ndim != 2 or pts.shape[1] != 3 or cols.shape != pts.shape:
        raise ValueError(f"snapshot points/colors must both be (N, 3); got {pts.shape} and {cols.shape}")

    if not np.isfinite(pts).all():
        # Rare (the memory stores finite points); the per-row test is the slow path.
        finite = np.isfinite(pts).all(axis=1)
        pts, cols = pts[finite], cols[finite]
    # One transposed copy (~2 ms per 1 M points) makes every later pass contiguous; on the strided
    # (N, 3) columns boolean indexing and reductions are 5-10x slower.
    x, y, z = np.ascontiguousarray(pts.T)
    # A strided subsample is plenty for the floor percentile and keeps it off the hot path.
    z_probe = z[:: max(1, len(z) // 50_000)]
    floor_z, cut_z = estimate_floor_and_cut(np.ascontiguousarray(z_probe), height_cut_m)
    keep = z <= np.float32(cut_z)
    n_keep = int(np.count_nonzero(keep))

    image = np.zeros((size_px, size_px, 3), dtype=np.uint8)
    if extent_xy_m is not None:
        x_lo, y_lo, x_hi, y_hi = (float(v) for v in extent_xy_m)
        if not (x_hi > x_lo and y_hi > y_lo):
            raise ValueError(f"extent_xy_m must be (x_min, y_min, x_max, y_max) with max > min, got {extent_xy_m}")
    elif n_keep:
        # Robust framing: a few stray depth points (windows, mirrors) must not shrink the room to a
        # corner of the image. Percentiles of the same strided subsample keep this cheap.
        step = max(1, len(z) // 50_000)
        probe = keep[::step]
        xs, ys = x[::step][probe], y[::step][probe]
        if len(xs) < 2:
            xs, ys = np.compress(keep, x), np.compress(keep, y)
        x_lo, x_hi = (float(v) for v in np.percentile(xs, [EXTENT_PERCENTILE, 100.0 - EXTENT_PERCENTILE]))
        y_lo, y_hi = (float(v) for v in np.percentile(ys, [EXTENT_PERCENTILE, 100.0 - EXTENT_PERCENTILE]))
    else:
        x_lo = y_lo = -1.0
        x_hi = y_hi = 1.0
    span = max(x_hi - x_lo, y_hi - y_lo, 1e-3) + 2.0 * margin_m
    px_per_m = (size_px - 1) / span
    half_px = (size_px - 1) / 2.0
    origin = np.array([(x_lo + x_hi) / 2.0 - half_px / px_per_m, (y_lo + y_hi) / 2.0 + half_px / px_per_m])

    radius = 0 if splat_radius_px is None else int(splat_radius_px)
    n_drawn = 0
    if n_keep:
        # float32 keeps the per-point arithmetic (the bulk of the time) at half the memory traffic;
        # +0.5 then truncation rounds to the nearest pixel (negatives are rejected below anyway).
        s32 = np.float32(px_per_m)
        u = ((x - np.float32(origin[0])) * s32 + np.float32(0.5)).astype(np.int32)
        v = ((np.float32(origin[1]) - y) * s32 + np.float32(0.5)).astype(np.int32)
        ok = keep & (u >= 0) & (u < size_px) & (v >= 0) & (v < size_px)
        idx = np.flatnonzero(ok)
        lin = v[idx] * size_px + u[idx]
        n_drawn = int(idx.size)
        # Packed key: quantised height above (floor - 1 m) in the high bits, point index in the low
        # 32 bits; float64 holds it exactly (< 2^53), and max() picks the highest point per pixel.
        zq = np.floor(np.clip((z[idx] - np.float32(floor_z - 1.0)) * np.float32(1.0 / _Z_QUANTUM_M), 0, 2**20 - 1))
        key = zq.astype(np.float64) * float(2**_IDX_BITS) + idx
        buf = np.full(size_px * size_px, -1.0)
        np.maximum.at(buf, lin, key)
        if splat_radius_px is None:
            radius = _auto_splat_radius(buf >= 0, size_px)
        key_img = buf.reshape(size_px, size_px)
        if radius > 0:
            # OpenCV's 3x3 "ellipse" is a cross, which leaves diagonal holes; use the full square there.
            shape = cv2.MORPH_RECT if radius == 1 else cv2.MORPH_ELLIPSE
            kernel = cv2.getStructuringElement(shape, (2 * radius + 1, 2 * radius + 1))
            key_img = cv2.dilate(key_img, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=-1.0)
        # Integer bit ops on the whole image beat boolean-masked float work (~3x faster here).
        key_int = key_img.astype(np.int64)
        filled = key_int >= 0
        src = np.where(filled, key_int & (2**_IDX_BITS - 1), 0)
        image = np.take(cols, src.ravel(), axis=0).reshape(size_px, size_px, 3)
        image[~filled] = 0
    else:
        logger.warning("render_bev: no points below the height cut %.2f m; the BEV is black", cut_z)

    return BevImage(
        image=image,
        bev_px_per_m=float(px_per_m),
        origin_xy_m=origin,
        floor_z_m=float(floor_z),
        height_cut_m=float(cut_z),
        splat_radius_px=int(radius),
        n_points=n_drawn,
    )
