"""Ray-cast RGB-D rendering of synthetic rooms, robot/camera model, trajectories and odometry.

Frames (REP-103/105): the room frame is the world (``map``; for synthetic scenes ``odom`` coincides
with it), metres, z up. The robot's ``base_link`` moves in the floor plane (z = 0, yaw about z); the
camera is rigidly mounted on it (:func:`camera_extrinsic`), and images are in the optical frame (x
right, y down, z forward). ``T_a_b`` maps points of frame ``b`` into frame ``a``.

The renderer casts one ray per pixel into an Open3D :class:`open3d.t.geometry.RaycastingScene`.
Ray directions are kept with z = 1 in the optical frame, so the parametric hit distance *is* the
depth along the optical axis (what depth cameras report), no per-pixel division needed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np
import open3d as o3d
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from ..core.geometry import R_LINK_OPTICAL, make_transform, rot_z
from ..core.types import CameraIntrinsics, RGBDFrame
from .synthetic import FreeSpace, RoomLayout, free_space, object_parts_world

logger = logging.getLogger(__name__)

_INVALID_ID = np.uint32(0xFFFFFFFF)  # Open3D's geometry/primitive id of a ray that hit nothing

# Surface kinds (per geometry), used for procedural textures.
_KIND_OBJECT, _KIND_FLOOR, _KIND_WALL, _KIND_CEILING, _KIND_NONE = 0, 1, 2, 3, 4

_FLOOR_RGB = (168.0, 140.0, 105.0)  # light oak
_WALL_RGB = (222.0, 218.0, 205.0)
_CEILING_RGB = (238.0, 238.0, 235.0)
_OUTSIDE_RGB = (185.0, 210.0, 235.0)  # what a window/door gap shows: bright sky, no depth
# Two fixed lights (world frame, pointing towards the light) and an ambient term, for Lambert shading.
_LIGHTS = ((np.array([0.3, 0.5, 1.0]), 0.4), (np.array([-0.6, -0.3, 0.4]), 0.15))
_AMBIENT = 0.58


def camera_extrinsic(height_m: float = 1.2, pitch_down_rad: float = 0.2, forward_m: float = 0.1) -> np.ndarray:
    """``T_base_camera_optical`` (4x4): camera ``height_m`` above the floor, ``forward_m`` ahead of the base
    centre, tilted down by ``pitch_down_rad``.

    ``camera_link`` (x forward, z up) is pitched about its y axis; the optical frame is then
    ``R_LINK_OPTICAL`` from it.
    """
    if not 0.05 <= height_m <= 3.0:
        raise ValueError(f"camera height must be within 0.05..3.0 m, got {height_m}")
    if not -1.2 <= pitch_down_rad <= 1.2:
        raise ValueError(f"camera pitch must be within -1.2..1.2 rad, got {pitch_down_rad}")
    c, s = math.cos(pitch_down_rad), math.sin(pitch_down_rad)
    # A positive rotation about +y turns +x (forward) towards -z: the camera looks down.
    R_base_link = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    return make_transform(R_base_link @ R_LINK_OPTICAL, [forward_m, 0.0, height_m])


#: The default camera mount: 1.2 m high, 0.2 rad down, 0.1 m ahead of ``base_link``.
DEFAULT_T_BASE_CAMERA_OPTICAL = camera_extrinsic()


def default_intrinsics(width: int = 640, height: int = 480) -> CameraIntrinsics:
    """A Kinect-like pinhole: fx = fy = 525 px at 640 wide (scaled with width), principal point at the centre.

    The centre is ((W - 1) / 2, (H - 1) / 2) because pixel (u, v) is taken at integer coordinates,
    as :func:`~scene_vlm_ros.core.geometry.backproject_depth` does.
    """
    if width < 8 or height < 8:
        raise ValueError(f"image must be at least 8x8 pixels, got {width}x{height}")
    f = 525.0 * width / 640.0
    return CameraIntrinsics(int(width), int(height), f, f, (width - 1) / 2.0, (height - 1) / 2.0)


def base_pose(x: float, y: float, yaw: float) -> np.ndarray:
    """``T_world_base`` of a robot at floor position (x, y) m heading ``yaw`` rad."""
    return make_transform(rot_z(yaw), [x, y, 0.0])


# ----------------------------------------------------------------------------------------------
# Depth noise
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DepthNoiseModel:
    """Structured-light depth sensor noise (Kinect-like), all lengths in metres.

    - axial noise std ``sigma0 + sigma2 * (z - z_ref)^2`` (Nguyen et al. 2012 style),
    - no reading closer than ``min_range_m`` or farther than ``max_range_m``,
    - dropouts on the far side of depth discontinuities (relative jump > ``edge_jump_rel``) and,
      with probability ``edge_near_drop_prob``, on the near side,
    - dropouts where the ray grazes the surface (|cos| < ``grazing_cos``),
    - random isolated dropouts with probability ``random_drop_prob``.
    """

    sigma0: float = 0.0012
    sigma2: float = 0.0019
    z_ref: float = 0.4
    min_range_m: float = 0.3
    max_range_m: float = 7.0
    edge_jump_rel: float = 0.04
    edge_near_drop_prob: float = 0.3
    grazing_cos: float = 0.08
    random_drop_prob: float = 0.003

    def sigma(self, z_m: np.ndarray) -> np.ndarray:
        """Axial noise std (m) at depth ``z_m`` (m)."""
        z = np.asarray(z_m, dtype=np.float32)
        return self.sigma0 + self.sigma2 * (z - self.z_ref) ** 2


# ----------------------------------------------------------------------------------------------
# Scene
# ----------------------------------------------------------------------------------------------


def _rect(p0: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quad with corner ``p0`` and edge vectors ``u``, ``v`` as two triangles."""
    verts = np.array([p0, p0 + u, p0 + u + v, p0 + v])
    return verts, np.array([[0, 1, 2], [0, 2, 3]], dtype=np.int32)


def _wall_quads(layout: RoomLayout) -> list[tuple[np.ndarray, np.ndarray]]:
    """The four walls as quads (zero thickness), with their openings cut out."""
    X, Y, Z = layout.size
    walls = {  # origin, unit vector along the wall (direction of increasing offset)
        "south": (np.array([0.0, 0.0, 0.0]), np.array([1.0, 0.0, 0.0]), X),
        "north": (np.array([0.0, Y, 0.0]), np.array([1.0, 0.0, 0.0]), X),
        "west": (np.array([0.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]), Y),
        "east": (np.array([X, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]), Y),
    }
    up = np.array([0.0, 0.0, 1.0])
    quads = []
    for name, (origin, along, length) in walls.items():
        gaps = sorted((o for o in layout.openings if o.wall == name), key=lambda o: o.offset_m)
        s = 0.0
        for o in gaps:
            if o.offset_m > s:
                quads.append(_rect(origin + s * along, (o.offset_m - s) * along, Z * up))
            if o.bottom_m > 0:  # below a window
                quads.append(_rect(origin + o.offset_m * along, o.width_m * along, o.bottom_m * up))
            if o.top_m < Z:  # above the gap
                quads.append(_rect(origin + o.offset_m * along + o.top_m * up, o.width_m * along, (Z - o.top_m) * up))
            s = max(s, o.offset_m + o.width_m)
        if s < length:
            quads.append(_rect(origin + s * along, (length - s) * along, Z * up))
    return quads


def _hash01(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer lattice cell (world-anchored texture).

    int32 arithmetic wraps around on overflow, which is what a hash wants (and int32 is 2x faster than int64).
    """
    h = (ix * np.int32(73856093)) ^ (iy * np.int32(19349663)) ^ (iz * np.int32(83492791))
    h ^= h >> 13
    h *= np.int32(1274126177)
    return ((h >> 8) & 1023).astype(np.float32) * np.float32(1.0 / 1024.0)


class SyntheticScene:
    """A room layout as a ray-casting scene that renders noisy RGB-D frames with instance masks.

    Geometry ids map to object ids (0 = floor/walls/ceiling/nothing). Colours are pre-lit per
    triangle (Lambert, two fixed lights + ambient); per pixel a world-anchored texture (floor planks,
    fine 3D value noise on every surface) and sensor noise are added so the images are not flat and
    feature trackers have something to hold on to. Noise draws come from one generator seeded by
    ``seed``, so the same calls in the same order give the same images.
    """

    def __init__(self, layout: RoomLayout, width: int = 640, height: int = 480, seed: int = 0,
                 noise_model: Optional[DepthNoiseModel] = None,
                 intrinsics: Optional[CameraIntrinsics] = None) -> None:
        self.layout = layout
        self.intrinsics = intrinsics if intrinsics is not None else default_intrinsics(width, height)
        self.noise_model = noise_model or DepthNoiseModel()
        self.labels = {o.object_id: o.label for o in layout.objects}
        self._rng = np.random.default_rng(seed)
        self._scene = o3d.t.geometry.RaycastingScene()
        geom_object: list[int] = []
        geom_kind: list[int] = []
        tri_offsets: list[int] = []
        tri_rgb: list[np.ndarray] = []
        tri_normals: list[np.ndarray] = []
        n_tris = 0

        def add(parts: list[tuple[np.ndarray, np.ndarray, tuple[float, float, float]]], object_id: int, kind: int):
            nonlocal n_tris
            verts, tris, rgbs = [], [], []
            base = 0
            for v, t, rgb in parts:
                verts.append(v)
                tris.append(t + base)
                rgbs.append(np.tile(np.asarray(rgb, dtype=np.float32), (len(t), 1)))
                base += len(v)
            V = np.vstack(verts).astype(np.float32)
            F = np.vstack(tris).astype(np.uint32)
            gid = self._scene.add_triangles(o3d.core.Tensor(V), o3d.core.Tensor(F))
            if gid != len(geom_object):
                raise RuntimeError(f"Open3D assigned geometry id {gid}, expected {len(geom_object)}")
            geom_object.append(object_id)
            geom_kind.append(kind)
            tri_offsets.append(n_tris)
            n = np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]])
            n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
            tri_normals.append(n.astype(np.float32))
            tri_rgb.append(np.vstack(rgbs))
            n_tris += len(F)

        X, Y, Z = layout.size
        ex, ey = np.array([X, 0.0, 0.0]), np.array([0.0, Y, 0.0])
        add([(*_rect(np.zeros(3), ex, ey), _FLOOR_RGB)], 0, _KIND_FLOOR)
        add([(v, t, _WALL_RGB) for v, t in _wall_quads(layout)], 0, _KIND_WALL)
        if layout.has_ceiling:
            add([(*_rect(np.array([0.0, 0.0, Z]), ex, ey), _CEILING_RGB)], 0, _KIND_CEILING)
        for obj in layout.objects:
            add([(p.vertices, p.triangles, p.rgb) for p in object_parts_world(obj)], obj.object_id, _KIND_OBJECT)

        # Lookup tables; index len(geoms) / the last triangle row stand for "no hit".
        self._geom_object = np.array(geom_object + [0], dtype=np.uint16)
        self._geom_kind = np.array(geom_kind + [_KIND_NONE], dtype=np.uint8)
        self._geom_tri_offset = np.array(tri_offsets + [n_tris], dtype=np.int64)
        normals = np.vstack(tri_normals + [np.zeros((1, 3), np.float32)])
        rgb = np.vstack(tri_rgb + [np.array([_OUTSIDE_RGB], np.float32)])
        # Pre-lit colour per triangle: normals are constant over a triangle, so Lambert is too. Lights
        # use |n . l| because the walls are single quads seen from inside whatever their winding.
        light = np.full(len(normals), _AMBIENT, dtype=np.float32)
        for direction, strength in _LIGHTS:
            light += strength * np.abs(normals @ (direction / np.linalg.norm(direction))).astype(np.float32)
        light[-1] = 1.0
        self._tri_rgb = rgb * light[:, None]
        self._tri_normals = normals
        self._n_geoms = len(geom_object)
        self._n_tris = n_tris
        self._prepare_buffers()

    @property
    def n_triangles(self) -> int:
        return self._n_tris

    def _prepare_buffers(self) -> None:
        K = self.intrinsics
        n = K.width * K.height
        uu, vv = np.meshgrid(np.arange(K.width, dtype=np.float32), np.arange(K.height, dtype=np.float32))
        # Optical-frame ray directions (x, y, 1) per pixel, row-major like the image.
        self._dir_x = ((uu - K.cx) / K.fx).ravel().astype(np.float32)
        self._dir_y = ((vv - K.cy) / K.fy).ravel().astype(np.float32)
        self._inv_dir_norm = (1.0 / np.sqrt(self._dir_x**2 + self._dir_y**2 + 1.0)).astype(np.float32)
        self._rays = np.empty((n, 6), dtype=np.float32)
        self._rays_tensor = o3d.core.Tensor.from_numpy(self._rays)  # shares memory with self._rays
        self._tmp = np.empty(n, dtype=np.float32)
        self._tmp2 = np.empty(n, dtype=np.float32)
        # Noise banks: slices at a random offset per frame are i.i.d. within a frame and far cheaper than
        # fresh draws (a fresh normal draw costs as much as a quarter of the whole frame at 640x480).
        self._normal_bank = self._rng.standard_normal(2 * n, dtype=np.float32)
        self._uniform_bank = self._rng.random(2 * n, dtype=np.float32)
        h, w = K.height, K.width
        self._pix_noise = (3.0 * self._rng.standard_normal((h + 64, w + 64), dtype=np.float32))

    def _bank(self, bank: np.ndarray) -> np.ndarray:
        n = len(self._dir_x)
        off = int(self._rng.integers(0, len(bank) - n + 1))
        return bank[off:off + n]

    def cast(self, T_world_camera: np.ndarray) -> dict[str, np.ndarray]:  # noqa: N803
        """Ray-cast one view.

        Returns ``t_hit`` (H*W,) float32 depth m along the optical axis (inf = miss), ``geometry_ids``
        and ``primitive_ids`` (H*W,) uint32 (0xFFFFFFFF = miss) and ``rays`` (H*W, 6) world-frame origin
        and direction (z = 1 in the optical frame). The arrays are reused by the next call.
        """
        T = np.asarray(T_world_camera, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError(f"T_world_camera must be a finite 4x4 transform, got shape {T.shape}")
        R = T[:3, :3]
        tmp, tmp2 = self._tmp, self._tmp2
        # Column by column instead of an (N, 3) @ (3, 3) matmul: no BLAS threads fighting over the
        # cores, no strided (N, 3) temporaries; measured 2x faster here.
        for k in range(3):
            np.multiply(self._dir_x, np.float32(R[k, 0]), out=tmp)
            np.multiply(self._dir_y, np.float32(R[k, 1]), out=tmp2)
            np.add(tmp, tmp2, out=tmp)
            np.add(tmp, np.float32(R[k, 2]), out=self._rays[:, 3 + k])
            self._rays[:, k] = np.float32(T[k, 3])
        out = self._scene.cast_rays(self._rays_tensor)
        return {
            "t_hit": out["t_hit"].numpy(),
            "geometry_ids": out["geometry_ids"].numpy(),
            "primitive_ids": out["primitive_ids"].numpy(),
            "rays": self._rays,
        }

    def render(self, T_world_camera: np.ndarray, stamp_s: float = 0.0, noise: bool = True,  # noqa: N803
               frame_index: int = -1) -> RGBDFrame:
        """Render the view of the camera at ``T_world_camera`` (optical frame -> world, 4x4).

        Returns an :class:`RGBDFrame` with uint8 RGB (H, W, 3), float32 depth (H, W) m (0 = no
        reading; noisy unless ``noise=False``, which still applies the sensor's range limits), the
        ground-truth uint16 instance mask (object ids, 0 = room/nothing; not affected by depth
        dropouts), ``instance_labels`` of the ids visible in this frame, and the true pose.
        """
        K = self.intrinsics
        h, w = K.height, K.width
        T = np.asarray(T_world_camera, dtype=np.float64)
        t0 = time.perf_counter()
        hit = self.cast(T)
        t1 = time.perf_counter()
        t = hit["t_hit"]
        gid = hit["geometry_ids"]
        np.minimum(gid, np.uint32(self._n_geoms), out=gid)
        miss = gid == self._n_geoms
        # A miss has primitive id 0xFFFFFFFF, so offset + id lands past the table and clips to its "no hit" row.
        tri = np.take(self._geom_tri_offset, gid) + hit["primitive_ids"]
        np.minimum(tri, self._n_tris, out=tri)
        kind = np.take(self._geom_kind, gid)
        mask = np.take(self._geom_object, gid).reshape(h, w)
        t[miss] = 0.0

        # Colour: pre-lit triangle colour x world-anchored texture (+ sensor noise).
        rgb = np.take(self._tri_rgb, tri, axis=0)
        rgb *= self._texture(hit["rays"], t, kind)[:, None]
        rgb = rgb.reshape(h, w, 3)
        if noise:
            oy, ox = self._rng.integers(0, 64, size=2)
            rgb += self._pix_noise[oy:oy + h, ox:ox + w, None]
        np.clip(rgb, 0.0, 255.0, out=rgb)
        color = rgb.astype(np.uint8)

        depth = self._depth(t, tri, miss, T[:3, :3], noise).reshape(h, w)
        counts = np.bincount(mask.ravel())
        visible = {int(i): self.labels[int(i)] for i in np.nonzero(counts)[0] if i != 0 and int(i) in self.labels}
        self.last_timings_ms = {"raycast": (t1 - t0) * 1e3, "total": (time.perf_counter() - t0) * 1e3}
        return RGBDFrame(
            stamp_s=float(stamp_s),
            color_rgb=color,
            depth_m=depth,
            intrinsics=K,
            T_world_camera=T.copy(),
            instance_mask=mask,
            instance_labels=visible,
            frame_index=frame_index,
        )

    def _texture(self, rays: np.ndarray, t: np.ndarray, kind: np.ndarray) -> np.ndarray:
        """Per-pixel brightness factor (H*W,) from world-anchored patterns: 4 cm value noise on every
        surface, planks on the floor."""
        cells = []
        for k in range(3):
            p = rays[:, 3 + k] * t
            p += rays[:, k]
            p *= 25.0  # 4 cm cells
            cells.append(np.floor(p).astype(np.int32))
        tex = 0.965 + 0.07 * _hash01(*cells)
        floor = kind == _KIND_FLOOR
        if floor.any():
            fx = (cells[0][floor].astype(np.float32) + 0.5) / 25.0
            fy = (cells[1][floor].astype(np.float32) + 0.5) / 25.0
            row = np.floor(fy / 0.16).astype(np.int32)
            # Planks 16 cm x 1.2 m, every other row shifted by half a plank, each plank its own shade,
            # with a dark seam between rows.
            col = np.floor(fx / 1.2 + 0.5 * (row & 1)).astype(np.int32)
            plank = 0.82 + 0.3 * _hash01(row, col, np.zeros_like(row))
            yf = (rays[floor, 4] * t[floor] + rays[floor, 1]) / 0.16
            seam = np.abs(yf - np.round(yf)) < 0.04
            plank[seam] *= 0.65
            tex[floor] *= plank
        tex[kind == _KIND_NONE] = 1.0
        return tex

    def _depth(self, t: np.ndarray, tri: np.ndarray, miss: np.ndarray, R_world_camera: np.ndarray,  # noqa: N803
               noise: bool) -> np.ndarray:
        """Depth (H*W,) float32 m (0 = no reading) from the hit distances, with the sensor model applied."""
        nm = self.noise_model
        h, w = self.intrinsics.height, self.intrinsics.width
        z = t  # already 0 on misses; reused in place (the cast buffers are per call)
        invalid = miss | (z < nm.min_range_m) | (z > nm.max_range_m)
        if noise:
            zi = z.reshape(h, w)
            far = np.zeros((h, w), dtype=bool)
            near = np.zeros((h, w), dtype=bool)
            # Discontinuities: the far pixel of a large relative jump is shadowed (structured-light
            # sensors see the projector pattern occluded there), the near one sometimes too.
            for a, b, fa, fb, na, nb in (
                (zi[:-1, :], zi[1:, :], far[:-1, :], far[1:, :], near[:-1, :], near[1:, :]),
                (zi[:, :-1], zi[:, 1:], far[:, :-1], far[:, 1:], near[:, :-1], near[:, 1:]),
            ):
                jump = np.abs(a - b) > nm.edge_jump_rel * np.minimum(a, b)
                a_far = jump & (a > b)
                b_far = jump & (b > a)
                fa |= a_far
                fb |= b_far
                na |= b_far
                nb |= a_far
            u = self._bank(self._uniform_bank)
            invalid |= far.ravel() | (near.ravel() & (u < nm.edge_near_drop_prob))
            # Grazing incidence: |cos| between the ray and the normal; normals rotated into the optical
            # frame once per frame (a few hundred triangles) instead of once per pixel.
            n_cam = (self._tri_normals @ R_world_camera).astype(np.float32)
            cos = np.take(n_cam[:, 0], tri) * self._dir_x
            cos += np.take(n_cam[:, 1], tri) * self._dir_y
            cos += np.take(n_cam[:, 2], tri)
            np.abs(cos, out=cos)
            cos *= self._inv_dir_norm
            invalid |= cos < nm.grazing_cos
            u2 = self._bank(self._uniform_bank)
            invalid |= u2 < nm.random_drop_prob
            z = z + self._bank(self._normal_bank) * nm.sigma(z)
        else:
            z = z.copy()
        z[invalid] = 0.0
        return z


# ----------------------------------------------------------------------------------------------
# Trajectories
# ----------------------------------------------------------------------------------------------


def _grid_graph(fs: FreeSpace) -> tuple[coo_matrix, np.ndarray]:
    """8-connected graph over free cells; edge cost = length x (1 + 0.6 / clearance) to keep off obstacles."""
    nx, ny = fs.free.shape
    idx = np.full((nx, ny), -1, dtype=np.int64)
    cells = np.argwhere(fs.free)
    idx[cells[:, 0], cells[:, 1]] = np.arange(len(cells))
    penalty = 1.0 + 0.6 / np.maximum(fs.clearance_m, 0.05)
    rows, cols, costs = [], [], []
    for di, dj in ((1, 0), (0, 1), (1, 1), (1, -1)):
        a = cells
        b = cells + np.array([di, dj])
        ok = (b[:, 0] >= 0) & (b[:, 0] < nx) & (b[:, 1] >= 0) & (b[:, 1] < ny)
        a, b = a[ok], b[ok]
        ok = fs.free[b[:, 0], b[:, 1]]
        a, b = a[ok], b[ok]
        length = math.hypot(di, dj) * fs.resolution_m
        cost = length * 0.5 * (penalty[a[:, 0], a[:, 1]] + penalty[b[:, 0], b[:, 1]])
        rows.append(idx[a[:, 0], a[:, 1]])
        cols.append(idx[b[:, 0], b[:, 1]])
        costs.append(cost)
    r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(costs)
    graph = coo_matrix((np.concatenate([v, v]), (np.concatenate([r, c]), np.concatenate([c, r]))),
                       shape=(len(cells), len(cells)))
    return graph.tocsr(), cells


def _loop_waypoints(fs: FreeSpace, size, n: int = 16) -> np.ndarray:
    """Free cells (n, 2 grid indices) on a ring around the room centre, between central and wall furniture."""
    centre = np.array([size[0] / 2, size[1] / 2])
    xy = fs.centers()
    rel = xy - centre
    ang = np.arctan2(rel[..., 1], rel[..., 0])
    # Fraction of the way from the centre to the wall along each cell's bearing.
    with np.errstate(divide="ignore"):
        reach = np.minimum(np.where(np.abs(np.cos(ang)) > 1e-9, (size[0] / 2) / np.abs(np.cos(ang)), np.inf),
                           np.where(np.abs(np.sin(ang)) > 1e-9, (size[1] / 2) / np.abs(np.sin(ang)), np.inf))
    frac = np.linalg.norm(rel, axis=-1) / reach
    score = np.minimum(fs.clearance_m, 0.7) - 0.8 * np.abs(frac - 0.55)
    score[~fs.free] = -np.inf
    out = []
    for k in range(n):
        target = -np.pi + 2 * np.pi * k / n
        dang = np.abs(np.angle(np.exp(1j * (ang - target))))
        s = np.where(dang < np.pi / n, score, -np.inf)
        if np.isfinite(s).any():
            out.append(np.unravel_index(int(np.argmax(s)), s.shape))
    return np.array(out, dtype=np.int64).reshape(-1, 2)


def _walkthrough_path(layout: RoomLayout, robot_radius_m: float = 0.25) -> np.ndarray:
    """Closed collision-free loop (N, 2) world xy m, counter-clockwise around the room centre."""
    fs = free_space(layout.size, layout.objects, resolution_m=0.05, robot_radius_m=robot_radius_m)
    if not fs.free.any():
        raise ValueError(f"no free floor for a robot of radius {robot_radius_m} m in this layout")
    graph, cells = _grid_graph(fs)
    idx = {tuple(c): i for i, c in enumerate(cells)}
    wps = _loop_waypoints(fs, layout.size)
    nodes = [idx[tuple(w)] for w in wps]
    dist, pred = dijkstra(graph, directed=False, indices=nodes, return_predecessors=True)
    # Keep the waypoints reachable from the best-connected one (free space may have pockets).
    reach = np.isfinite(dist[:, nodes])
    keep = np.nonzero(reach[int(np.argmax(reach.sum(axis=1)))])[0]
    if len(keep) < 3:
        return np.zeros((0, 2))
    path_cells: list[int] = []
    for a, b in zip(keep, np.roll(keep, -1)):
        seg = []
        node = nodes[b]
        while node != nodes[a] and node >= 0:
            seg.append(node)
            node = pred[a, node]
        path_cells.extend(reversed(seg))
    xy = (cells[path_cells] + 0.5) * fs.resolution_m
    # Smooth (circular moving average) as long as the smoothed path stays in free space.
    for window in (15, 11, 7, 3, 1):
        kernel = np.ones(window) / window
        sm = np.stack([ndimage.convolve1d(xy[:, d], kernel, mode="wrap") for d in (0, 1)], axis=1)
        i, j = fs.cell(sm)
        if np.all(fs.clearance_m[i, j] > robot_radius_m * 0.9):
            return sm
    return xy


def _resample_loop(xy: np.ndarray, spacing_m: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points at arc-length spacing ``spacing_m`` along the closed polyline (wrapping around), and their s."""
    closed = np.vstack([xy, xy[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    length = cum[-1]
    s = (np.arange(n) * spacing_m) % length
    pts = np.stack([np.interp(s, cum, closed[:, d]) for d in (0, 1)], axis=1)
    return pts, np.arange(n) * spacing_m


def _loop_length(xy: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(np.vstack([xy, xy[:1]]), axis=0), axis=1).sum())


def make_trajectory(
    layout: RoomLayout,
    kind: str = "walkthrough",
    n_frames: int = 300,
    fps: float = 30.0,
    speed_mps: Optional[float] = 0.3,
    seed: int = 0,
    sweep_rad: float = 0.7,
    look_in_rad: float = 1.0,
) -> list[np.ndarray]:
    """Robot base poses ``T_world_base`` (4x4, base_link on the floor) for ``n_frames`` frames at ``fps``.

    - ``walkthrough``: a closed, collision-free loop counter-clockwise through the free floor (a ring
      between the central and the wall furniture, planned on an occupancy grid, smoothed). The camera
      looks ``look_in_rad`` to the left of the path (into the room) and sweeps +-``sweep_rad`` (period
      4 m of path), so every object is seen from several sides as the loop goes round. The start point
      on the loop depends on ``seed``.
    - ``orbit``: a circle around the freest spot near the room centre, the camera looking *outward*
      (along the radius), so one turn surveys every wall and what stands along it (a holonomic base
      or a panning head). A room whose centre is blocked gets a small circle or an in-place turn.

    ``speed_mps`` is the path speed (m/s; for an in-place orbit the camera turns at speed / 0.5 m);
    ``None`` chooses the speed that covers exactly one loop/turn in ``n_frames``. Longer sequences
    go round again.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if speed_mps is not None and speed_mps <= 0:
        raise ValueError(f"speed_mps must be positive or None, got {speed_mps}")
    rng = np.random.default_rng(seed)
    if kind == "walkthrough":
        loop = _walkthrough_path(layout)
        if len(loop) < 3:
            logger.warning("no walkable loop in this layout; falling back to an orbit")
            return make_trajectory(layout, "orbit", n_frames, fps, speed_mps, seed)
        loop = np.roll(loop, -int(rng.integers(len(loop))), axis=0)
        length = _loop_length(loop)
        spacing = (length / n_frames) if speed_mps is None else speed_mps / fps
        pts, s = _resample_loop(loop, spacing, n_frames)
        # Heading from the loop tangent 15 cm ahead and behind (robust to tiny steps).
        d = 0.15
        s_mod = s % length
        closed = np.vstack([loop, loop[:1]])
        cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(closed, axis=0), axis=1))])
        p_plus = np.stack([np.interp((s_mod + d) % length, cum, closed[:, k]) for k in (0, 1)], axis=1)
        p_minus = np.stack([np.interp((s_mod - d) % length, cum, closed[:, k]) for k in (0, 1)], axis=1)
        tangent = p_plus - p_minus
        heading = np.arctan2(tangent[:, 1], tangent[:, 0])
        # Look across the room (inward of the counter-clockwise loop) rather than along the path, which
        # would mostly face a nearby wall; the sweep adds the views along and across the path.
        yaw = heading + look_in_rad + sweep_rad * np.sin(2 * np.pi * s / 4.0)
        return [base_pose(float(x), float(y), float(a)) for (x, y), a in zip(pts, yaw)]
    if kind == "orbit":
        fs = free_space(layout.size, layout.objects, resolution_m=0.05, robot_radius_m=0.25)
        if not fs.free.any():
            raise ValueError("no free floor for the robot in this layout")
        xy = fs.centers()
        centre = np.array(layout.size[:2]) / 2
        score = fs.clearance_m - 0.3 * np.linalg.norm(xy - centre, axis=-1)
        score[~fs.free] = -np.inf
        i, j = np.unravel_index(int(np.argmax(score)), score.shape)
        c = xy[i, j]
        radius = float(np.clip(fs.clearance_m[i, j] - fs.robot_radius_m - 0.05, 0.0, 1.0))
        eff_r = max(radius, 0.5)
        phase0 = float(rng.uniform(0, 2 * np.pi))
        dphi = (2 * np.pi / n_frames) if speed_mps is None else speed_mps / fps / eff_r
        phi = phase0 + dphi * np.arange(n_frames)
        return [base_pose(float(c[0] + radius * math.cos(p)), float(c[1] + radius * math.sin(p)), float(p))
                for p in phi]
    raise ValueError(f"unknown trajectory kind {kind!r}; use 'walkthrough' or 'orbit'")


# ----------------------------------------------------------------------------------------------
# Odometry and sequences
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OdometryDrift:
    """Wheel-odometry error model: each step's measured motion is the true one plus Gaussian noise.

    Translation noise std ``trans_std_per_m`` x step length (m) on x and y, yaw noise std
    ``yaw_std_per_m`` x step length + ``yaw_std_per_rad`` x |step rotation|; the errors integrate, so
    the pose drifts as a random walk (in x, y and yaw) that grows with the distance travelled.
    """

    trans_std_per_m: float = 0.03
    yaw_std_per_m: float = 0.02
    yaw_std_per_rad: float = 0.03


def odometry_with_drift(true_poses: list[np.ndarray], drift: Optional[OdometryDrift],
                        rng: np.random.Generator) -> list[np.ndarray]:
    """``T_odom_base`` per frame: the true base poses when ``drift`` is None, else integrated noisy steps."""
    if drift is None or not true_poses:
        return [np.array(p, dtype=np.float64) for p in true_poses]
    out = [np.array(true_poses[0], dtype=np.float64)]
    for prev, cur in zip(true_poses[:-1], true_poses[1:]):
        step = np.linalg.solve(prev, cur)  # T_prev_cur, exact for rigid transforms
        length = float(np.hypot(step[0, 3], step[1, 3]))
        dyaw = float(math.atan2(step[1, 0], step[0, 0]))
        ex, ey = rng.normal(0.0, drift.trans_std_per_m * length, size=2)
        eyaw = rng.normal(0.0, drift.yaw_std_per_m * length + drift.yaw_std_per_rad * abs(dyaw))
        noisy = make_transform(rot_z(dyaw + eyaw), [step[0, 3] + ex, step[1, 3] + ey, 0.0])
        out.append(out[-1] @ noisy)
    return out


@dataclass
class SyntheticFrame:
    """One frame of a synthetic sequence.

    ``frame.T_world_camera`` is the TRUE camera pose; ``T_odom_base`` is what odometry reports (the
    true base pose plus drift when enabled; odom coincides with the room frame for synthetic scenes).
    """

    frame: RGBDFrame
    T_odom_base: np.ndarray  # (4, 4)
    T_world_base_true: np.ndarray  # (4, 4)
    T_base_camera_optical: np.ndarray = field(default_factory=lambda: DEFAULT_T_BASE_CAMERA_OPTICAL.copy())


def generate_sequence(
    layout: RoomLayout,
    n_frames: int = 300,
    width: int = 640,
    height: int = 480,
    trajectory: str = "walkthrough",
    drift: Union[bool, OdometryDrift] = False,
    seed: int = 0,
    fps: float = 30.0,
    start_stamp_s: float = 0.0,
    speed_mps: Optional[float] = 0.3,
    camera_height_m: float = 1.2,
    camera_pitch_rad: float = 0.2,
    noise: bool = True,
    scene: Optional[SyntheticScene] = None,
) -> Iterator[SyntheticFrame]:
    """Render ``n_frames`` frames along a trajectory (lazily, one per ``next``).

    Stamps are ``start_stamp_s + i / fps`` s. ``speed_mps=None`` fits one whole loop into the sequence
    (a short sequence that still sees the whole room). ``drift=True`` uses :class:`OdometryDrift`
    defaults. Pass ``scene`` to reuse a built :class:`SyntheticScene` (its size must match).
    """
    T_base_cam = camera_extrinsic(camera_height_m, camera_pitch_rad)
    poses = make_trajectory(layout, trajectory, n_frames, fps=fps, speed_mps=speed_mps, seed=seed)
    drift_model = OdometryDrift() if drift is True else (drift or None)
    odom = odometry_with_drift(poses, drift_model, np.random.default_rng([seed, 1]))
    if scene is None:
        scene = SyntheticScene(layout, width, height, seed=seed)
    elif (scene.intrinsics.width, scene.intrinsics.height) != (width, height):
        K = scene.intrinsics
        raise ValueError(f"scene renders {K.width}x{K.height}, asked for {width}x{height}")
    for i, (T_wb, T_ob) in enumerate(zip(poses, odom)):
        frame = scene.render(T_wb @ T_base_cam, stamp_s=start_stamp_s + i / fps, noise=noise, frame_index=i)
        yield SyntheticFrame(frame, T_ob, T_wb, T_base_cam.copy())


__all__ = [
    "DEFAULT_T_BASE_CAMERA_OPTICAL", "DepthNoiseModel", "OdometryDrift", "SyntheticFrame", "SyntheticScene",
    "base_pose", "camera_extrinsic", "default_intrinsics", "generate_sequence", "make_trajectory",
    "odometry_with_drift",
]
