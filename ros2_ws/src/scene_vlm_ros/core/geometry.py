"""Camera and pose math shared by mapping, prompting, evaluation and the synthetic world.

Frames and units follow :mod:`scene_vlm_ros.core.types`: metres, z up in the world, optical camera
frame (x right, y down, z forward), ``T_a_b`` maps points of frame ``b`` into frame ``a``.
"""

from __future__ import annotations

import numpy as np

from .types import CameraIntrinsics, OrientedBox3D

#: Rotation from a REP-103 body frame (x forward, y left, z up; e.g. ``camera_link``) to the
#: optical frame (x right, y down, z forward): ``R_link_optical`` maps optical-frame vectors into
#: the link frame.
R_LINK_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def make_transform(R: np.ndarray, t: np.ndarray) -> np.ndarray:  # noqa: N803
    """4x4 transform from a 3x3 rotation and a translation (m)."""
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(t, dtype=np.float64).reshape(3)
    return T


def invert_transform(T: np.ndarray) -> np.ndarray:  # noqa: N803
    """Inverse of a rigid 4x4 transform (exact, no general matrix inverse)."""
    R = T[:3, :3]
    t = T[:3, 3]
    out = np.eye(4)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ t
    return out


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:  # noqa: N803
    """Apply a 4x4 transform to (N, 3) points."""
    pts = np.asarray(points)
    return pts @ T[:3, :3].T.astype(pts.dtype, copy=False) + T[:3, 3].astype(pts.dtype, copy=False)


def rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def quat_xyzw_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrix of a quaternion given as (x, y, z, w); normalised first."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quat_xyzw(R: np.ndarray) -> np.ndarray:  # noqa: N803
    """Quaternion (x, y, z, w), w >= 0, of a rotation matrix."""
    R = np.asarray(R, dtype=np.float64)
    tr = np.trace(R)
    if tr > 0:
        s = np.sqrt(tr + 1.0) * 2
        w, x, y, z = 0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = np.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2]) * 2
        w, x, y, z = (R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s
    elif R[1, 1] > R[2, 2]:
        s = np.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2]) * 2
        w, x, y, z = (R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s
    else:
        s = np.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1]) * 2
        w, x, y, z = (R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s
    q = np.array([x, y, z, w])
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def is_rigid_transform(T: np.ndarray, tol: float = 1e-3) -> bool:  # noqa: N803
    """True when ``T`` is a finite 4x4 with an orthonormal, right-handed rotation block."""
    T = np.asarray(T)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        return False
    R = T[:3, :3]
    if not np.allclose(R.T @ R, np.eye(3), atol=tol):
        return False
    if abs(np.linalg.det(R) - 1.0) > tol:
        return False
    return bool(np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], atol=tol))


def backproject_depth(
    depth_m: np.ndarray, intrinsics: CameraIntrinsics, stride: int = 1, min_m: float = 0.0, max_m: float = np.inf
) -> tuple[np.ndarray, np.ndarray]:
    """Back-project valid depth pixels into the camera optical frame.

    Returns ``(points (N, 3) float32 camera frame, pixels (N, 2) int (v, u))``; pixels with depth
    outside ``(min_m, max_m]``, zero or non-finite are skipped.
    """
    d = depth_m[::stride, ::stride]
    vs, us = np.nonzero(np.isfinite(d) & (d > min_m) & (d <= max_m))
    z = d[vs, us].astype(np.float32)
    vs = vs * stride
    us = us * stride
    x = (us - intrinsics.cx) / intrinsics.fx * z
    y = (vs - intrinsics.cy) / intrinsics.fy * z
    return np.stack([x, y, z], axis=1).astype(np.float32), np.stack([vs, us], axis=1)


def project_points(
    points_world: np.ndarray, intrinsics: CameraIntrinsics, T_world_camera: np.ndarray  # noqa: N803
) -> tuple[np.ndarray, np.ndarray]:
    """Project (N, 3) world points into the image.

    Returns ``(uv (N, 2) float64 pixel coordinates, z (N,) depth along the optical axis in m)``;
    points behind the camera have ``z <= 0`` (their ``uv`` is meaningless).
    """
    p_cam = transform_points(invert_transform(T_world_camera), np.asarray(points_world, dtype=np.float64))
    z = p_cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = intrinsics.fx * p_cam[:, 0] / z + intrinsics.cx
        v = intrinsics.fy * p_cam[:, 1] / z + intrinsics.cy
    return np.stack([u, v], axis=1), z


def aabb_iou(min_a: np.ndarray, max_a: np.ndarray, min_b: np.ndarray, max_b: np.ndarray) -> float:
    """Axis-aligned 3D box IoU (the ScanRefer metric)."""
    lo = np.maximum(min_a, min_b)
    hi = np.minimum(max_a, max_b)
    inter = float(np.prod(np.clip(hi - lo, 0.0, None)))
    vol_a = float(np.prod(np.clip(np.asarray(max_a) - min_a, 0.0, None)))
    vol_b = float(np.prod(np.clip(np.asarray(max_b) - min_b, 0.0, None)))
    union = vol_a + vol_b - inter
    return inter / union if union > 0 else 0.0


def _polygon_area(poly: np.ndarray) -> float:
    if len(poly) < 3:
        return 0.0
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _clip_convex(subject: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman clipping of a convex polygon by a counter-clockwise convex polygon."""
    out = subject
    n = len(clip)
    for i in range(n):
        a, b = clip[i], clip[(i + 1) % n]
        edge = b - a
        if len(out) == 0:
            break
        inp, out_list = out, []
        side = edge[0] * (inp[:, 1] - a[1]) - edge[1] * (inp[:, 0] - a[0])
        for j in range(len(inp)):
            cur, prev = inp[j], inp[j - 1]
            s_cur, s_prev = side[j], side[j - 1]
            if s_cur >= 0:
                if s_prev < 0:
                    out_list.append(prev + (cur - prev) * (s_prev / (s_prev - s_cur)))
                out_list.append(cur)
            elif s_prev >= 0:
                out_list.append(prev + (cur - prev) * (s_prev / (s_prev - s_cur)))
        out = np.array(out_list) if out_list else np.zeros((0, 2))
    return out


def _footprint(box: OrientedBox3D) -> np.ndarray:
    """Counter-clockwise (4, 2) footprint of a gravity-aligned box."""
    hx, hy = box.size[0] / 2.0, box.size[1] / 2.0
    local = np.array([[-hx, -hy], [hx, -hy], [hx, hy], [-hx, hy]])
    c, s = np.cos(box.yaw), np.sin(box.yaw)
    R = np.array([[c, -s], [s, c]])
    return local @ R.T + np.asarray(box.center[:2])


def box_iou(a: OrientedBox3D, b: OrientedBox3D) -> float:
    """IoU of two gravity-aligned (yawed) 3D boxes: exact footprint overlap times z overlap."""
    z_lo = max(a.center[2] - a.size[2] / 2.0, b.center[2] - b.size[2] / 2.0)
    z_hi = min(a.center[2] + a.size[2] / 2.0, b.center[2] + b.size[2] / 2.0)
    dz = max(0.0, z_hi - z_lo)
    if dz == 0.0:
        return 0.0
    inter_area = _polygon_area(_clip_convex(_footprint(a), _footprint(b)))
    inter = inter_area * dz
    vol_a = float(np.prod(a.size))
    vol_b = float(np.prod(b.size))
    union = vol_a + vol_b - inter
    return inter / union if union > 0 else 0.0


def box_aabb_iou(a: OrientedBox3D, b: OrientedBox3D) -> float:
    """IoU of the axis-aligned bounds of two boxes (what ScanRefer-style evaluators compute)."""
    amin, amax = a.aabb()
    bmin, bmax = b.aabb()
    return aabb_iou(amin, amax, bmin, bmax)
