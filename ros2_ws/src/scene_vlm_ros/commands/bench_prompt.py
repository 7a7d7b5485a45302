"""``scene-vlm bench prompt``: time the visual prompt (BEV, markers, whole prompt) on a box room.

The scene is a deterministic room of coloured boxes (:func:`build_box_scene`): surfaces sampled as
points for the fused cloud and the instances, keyframes ray cast with Open3D so colour and depth are
exact. The golden-image tests and ``scripts/regen_golden.py`` use the same builder.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from ..core.geometry import make_transform
from ..core.types import CameraIntrinsics, Instance, Keyframe, OrientedBox3D, SceneSnapshot

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BoxSpec:
    """One box of the synthetic room: world centre/size (m), yaw (rad), flat RGB colour."""

    instance_id: int
    label: str
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    rgb: tuple[int, int, int]
    yaw: float = 0.0


#: The fixed layout (room x in [0, 4] m, y in [0, 3] m, ceiling at 2.6 m). The yellow box hides
#: behind the tall blue cabinet as seen from keyframe 2 (the occlusion case of the marker tests).
BOX_LAYOUT: tuple[BoxSpec, ...] = (
    BoxSpec(1, "table", (1.5, 1.5, 0.375), (1.2, 0.8, 0.75), (125, 80, 45)),
    BoxSpec(2, "chair", (1.5, 0.7, 0.45), (0.5, 0.5, 0.9), (200, 40, 40)),
    BoxSpec(3, "cabinet", (3.2, 2.4, 0.9), (0.6, 0.5, 1.8), (50, 90, 200)),
    BoxSpec(4, "box", (3.75, 2.8, 0.15), (0.3, 0.3, 0.3), (230, 210, 50)),
    BoxSpec(5, "sofa", (0.75, 2.4, 0.4), (1.0, 0.7, 0.8), (60, 160, 70), yaw=0.3),
    BoxSpec(12, "bin", (2.8, 0.6, 0.25), (0.4, 0.4, 0.5), (130, 60, 170)),
)
ROOM_XY_M = (4.0, 3.0)
CEILING_Z_M = 2.6
FLOOR_RGB = (150, 150, 150)
WALL_RGB = (235, 235, 230)
CEILING_RGB = (250, 250, 250)

#: Fixed keyframe cameras: (eye xyz, look-at xyz) in the world frame.
FIXED_VIEWS: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...] = (
    ((0.3, 0.3, 1.5), (2.2, 1.8, 0.4)),
    ((3.8, 0.3, 1.5), (1.5, 1.8, 0.4)),
    ((2.3, 1.5, 0.5), (3.75, 2.8, 0.15)),
    ((3.8, 1.2, 1.6), (3.4, 2.6, 0.2)),
    ((0.3, 2.9, 1.4), (2.5, 0.8, 0.3)),
)


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """T_world_camera (optical frame: x right, y down, z forward) of a camera at ``eye`` facing ``target``."""
    eye = np.asarray(eye, dtype=np.float64)
    z = np.asarray(target, dtype=np.float64) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    if np.linalg.norm(x) < 1e-6:
        raise ValueError("look_at: viewing direction parallel to world z is not supported")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return make_transform(np.stack([x, y, z], axis=1), eye)


def _box_surface(spec_size: tuple[float, float, float], spacing_m: float, with_bottom: bool = False) -> np.ndarray:
    """Grid samples (N, 3) of a box's faces in its own frame (centre at origin), bottom face optional."""
    hx, hy, hz = (s / 2.0 for s in spec_size)

    def axis(h: float) -> np.ndarray:
        n = max(1, int(np.ceil(2 * h / spacing_m)))
        return -h + (np.arange(n) + 0.5) * (2 * h / n)

    ax, ay, az = axis(hx), axis(hy), axis(hz)
    faces = []
    gx, gy = np.meshgrid(ax, ay, indexing="ij")
    faces.append(np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, hz)], axis=1))
    if with_bottom:
        faces.append(np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, -hz)], axis=1))
    gy2, gz2 = np.meshgrid(ay, az, indexing="ij")
    for sx in (-hx, hx):
        faces.append(np.stack([np.full(gy2.size, sx), gy2.ravel(), gz2.ravel()], axis=1))
    gx3, gz3 = np.meshgrid(ax, az, indexing="ij")
    for sy in (-hy, hy):
        faces.append(np.stack([gx3.ravel(), np.full(gx3.size, sy), gz3.ravel()], axis=1))
    return np.concatenate(faces, axis=0)


def _structure_boxes() -> list[tuple[tuple[float, float, float], tuple[float, float, float], tuple[int, int, int]]]:
    """Floor, ceiling and two walls as thin boxes: (centre, size, rgb)."""
    rx, ry = ROOM_XY_M
    t = 0.02
    return [
        ((rx / 2, ry / 2, -t / 2), (rx, ry, t), FLOOR_RGB),
        ((rx / 2, ry / 2, CEILING_Z_M + t / 2), (rx, ry, t), CEILING_RGB),
        ((-t / 2, ry / 2, CEILING_Z_M / 2), (t, ry, CEILING_Z_M), WALL_RGB),
        ((rx / 2, ry + t / 2, CEILING_Z_M / 2), (rx, t, CEILING_Z_M), WALL_RGB),
    ]


def _plane_samples(center, size, spacing_m: float) -> np.ndarray:
    """Grid samples (N, 3) of the room-facing face of a thin structure box (floor, ceiling, wall)."""
    c = np.asarray(center)
    s = np.asarray(size)
    thin = int(np.argmin(s))
    others = [i for i in range(3) if i != thin]
    axes = []
    for i in others:
        n = max(1, int(np.ceil(s[i] / spacing_m)))
        axes.append(c[i] - s[i] / 2 + (np.arange(n) + 0.5) * (s[i] / n))
    g0, g1 = np.meshgrid(axes[0], axes[1], indexing="ij")
    out = np.empty((g0.size, 3))
    out[:, others[0]] = g0.ravel()
    out[:, others[1]] = g1.ravel()
    # The face towards the room centre is the one a camera inside the room sees.
    room_centre = np.array([ROOM_XY_M[0] / 2, ROOM_XY_M[1] / 2, CEILING_Z_M / 2])
    faces = (c[thin] - s[thin] / 2, c[thin] + s[thin] / 2)
    out[:, thin] = min(faces, key=lambda f: abs(f - room_centre[thin]))
    return out


def _render_keyframe(scene, id_to_rgb: dict[int, np.ndarray], intr: CameraIntrinsics, T_world_camera: np.ndarray):  # noqa: N803
    """Ray cast one pinhole view: (color (H, W, 3) uint8, depth (H, W) float32 m, 0 = miss)."""
    import open3d as o3d

    vs, us = np.mgrid[0 : intr.height, 0 : intr.width]
    # Unnormalised directions with unit optical-axis component, so t_hit is the depth directly.
    d_cam = np.stack([(us - intr.cx) / intr.fx, (vs - intr.cy) / intr.fy, np.ones_like(us, dtype=np.float64)], -1)
    d_world = d_cam.reshape(-1, 3) @ T_world_camera[:3, :3].T
    origins = np.broadcast_to(T_world_camera[:3, 3], d_world.shape)
    rays = o3d.core.Tensor(np.concatenate([origins, d_world], axis=1).astype(np.float32))
    hit = scene.cast_rays(rays)
    t = hit["t_hit"].numpy()
    gid = hit["geometry_ids"].numpy()
    normals = hit["primitive_normals"].numpy()
    valid = np.isfinite(t)
    depth = np.where(valid, t, 0.0).astype(np.float32).reshape(intr.height, intr.width)
    color = np.zeros((t.size, 3), dtype=np.float64)
    lut = np.zeros((max(id_to_rgb) + 1, 3))
    for k, rgb in id_to_rgb.items():
        lut[k] = rgb
    shade = 0.75 + 0.25 * np.abs(normals[:, 2])
    color[valid] = lut[gid[valid]] * shade[valid, None]
    return np.clip(color, 0, 255).astype(np.uint8).reshape(intr.height, intr.width, 3), depth


def build_box_scene(
    point_spacing_m: float = 0.03,
    image_size: tuple[int, int] = (320, 240),
    n_orbit_keyframes: int = 0,
    layout: tuple[BoxSpec, ...] = BOX_LAYOUT,
) -> SceneSnapshot:
    """A deterministic room of coloured boxes as a :class:`SceneSnapshot` (world frame, z up, metres).

    Cloud: grid samples of the floor, ceiling, two walls and every box's top and sides at
    ``point_spacing_m``; objects are shaded like the ray cast frames (top faces brighter).
    Instances: one per box, its own surface points, the exact box. Keyframes: the five
    :data:`FIXED_VIEWS` plus ``n_orbit_keyframes`` cameras on a circle around the room centre,
    each ``image_size`` = (width, height) pixels with a 70 degree horizontal field of view.
    """
    import open3d as o3d

    if point_spacing_m <= 0:
        raise ValueError(f"point_spacing_m must be > 0, got {point_spacing_m}")
    width, height = int(image_size[0]), int(image_size[1])
    f = (width / 2.0) / np.tan(np.deg2rad(35.0))
    intr = CameraIntrinsics(width, height, f, f, (width - 1) / 2.0, (height - 1) / 2.0)

    scene = o3d.t.geometry.RaycastingScene()
    id_to_rgb: dict[int, np.ndarray] = {}
    cloud_pts: list[np.ndarray] = []
    cloud_rgb: list[np.ndarray] = []
    instances: list[Instance] = []

    for center, size, rgb in _structure_boxes():
        mesh = o3d.geometry.TriangleMesh.create_box(*size)
        mesh.translate(np.asarray(center) - np.asarray(size) / 2.0)
        gid = scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
        id_to_rgb[gid] = np.asarray(rgb, dtype=np.float64)
        p = _plane_samples(center, size, point_spacing_m)
        cloud_pts.append(p)
        cloud_rgb.append(np.tile(np.asarray(rgb, dtype=np.float64), (len(p), 1)))

    for spec in layout:
        box = OrientedBox3D(spec.center, spec.size, spec.yaw)
        mesh = o3d.geometry.TriangleMesh.create_box(*spec.size)
        mesh.translate(-np.asarray(spec.size) / 2.0)
        mesh.rotate(box.rotation(), center=(0.0, 0.0, 0.0))
        mesh.translate(np.asarray(spec.center))
        gid = scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
        id_to_rgb[gid] = np.asarray(spec.rgb, dtype=np.float64)
        local = _box_surface(spec.size, point_spacing_m)
        pts = local @ box.rotation().T + np.asarray(spec.center)
        # Same shading rule as the ray cast frames: top faces full brightness, sides 0.75.
        top = np.isclose(local[:, 2], spec.size[2] / 2.0)
        rgb = np.asarray(spec.rgb, dtype=np.float64)[None, :] * np.where(top, 1.0, 0.75)[:, None]
        rgb8 = np.clip(rgb, 0, 255).astype(np.uint8)
        cloud_pts.append(pts)
        cloud_rgb.append(rgb8.astype(np.float64))
        amin, amax = box.aabb()
        instances.append(
            Instance(
                instance_id=spec.instance_id,
                label=spec.label,
                score=1.0,
                box=box,
                aabb_min=amin,
                aabb_max=amax,
                points=pts.astype(np.float32),
                colors=rgb8,
                n_observations=1,
                source="mask",
            )
        )

    views = list(FIXED_VIEWS)
    rx, ry = ROOM_XY_M
    for k in range(int(n_orbit_keyframes)):
        a = 2 * np.pi * k / n_orbit_keyframes
        eye = (rx / 2 + 1.6 * np.cos(a), ry / 2 + 1.2 * np.sin(a), 1.5)
        views.append((eye, (rx / 2, ry / 2, 0.4)))
    keyframes = []
    for k, (eye, target) in enumerate(views):
        T = look_at(np.asarray(eye), np.asarray(target))
        color, depth = _render_keyframe(scene, id_to_rgb, intr, T)
        keyframes.append(Keyframe(k, float(k), color, depth, intr, T))

    points = np.concatenate(cloud_pts, axis=0).astype(np.float32)
    colors = np.clip(np.concatenate(cloud_rgb, axis=0), 0, 255).astype(np.uint8)
    return SceneSnapshot(
        stamp_s=float(len(views)),
        frame_id="map",
        points=points,
        colors=colors,
        instances=tuple(instances),
        keyframes=tuple(keyframes),
        T_world_camera_latest=keyframes[-1].T_world_camera,
        n_frames_integrated=len(keyframes),
        metadata={"source": "build_box_scene", "point_spacing_m": point_spacing_m},
    )


def resample_points(snapshot: SceneSnapshot, n_points: int, seed: int = 0) -> SceneSnapshot:
    """The same snapshot with its cloud resampled (with 2 mm jitter) to exactly ``n_points`` points."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(snapshot.points), size=int(n_points), replace=n_points > len(snapshot.points))
    pts = snapshot.points[idx] + rng.normal(0.0, 0.002, size=(len(idx), 3)).astype(np.float32)
    return SceneSnapshot(
        stamp_s=snapshot.stamp_s,
        frame_id=snapshot.frame_id,
        points=pts,
        colors=snapshot.colors[idx],
        instances=snapshot.instances,
        keyframes=snapshot.keyframes,
        T_world_camera_latest=snapshot.T_world_camera_latest,
        n_frames_integrated=snapshot.n_frames_integrated,
        metadata=dict(snapshot.metadata),
    )


def _stats(samples_ms: list[float]) -> dict[str, float]:
    arr = np.asarray(samples_ms)
    return {"p50_ms": float(np.percentile(arr, 50)), "p95_ms": float(np.percentile(arr, 95)), "n": int(arr.size)}


def bench_prompt(
    n_points: int = 1_000_000,
    size_px: int = 512,
    n_frames: int = 8,
    repeats: int = 20,
    frame_size: tuple[int, int] = (640, 480),
    seed: int = 0,
) -> dict:
    """Time BEV rendering, marker drawing on ``n_frames`` frames and the whole prompt build.

    Returns ``{"bev": {p50_ms, p95_ms, n, cpu_p50_ms}, "markers": {...}, "prompt": {...}, "n_points",
    "size_px", "n_frames", "frame_size", "splat_radius_px"}`` (wall-clock percentiles, process CPU time
    median); "markers" covers visibility tests and drawing on all frames
    (already resized to ``size_px``), "prompt" is :func:`scene_vlm_ros.vlm.prompts.build_prompt` end to end.
    """
    from ..core.bev import render_bev
    from ..core.frame_selection import select_frames
    from ..core.markers import mark_frame, prepare_instance_samples
    from ..vlm.prompts import build_prompt
    from ..vlm.types import Task

    if n_points < 1 or repeats < 1 or n_frames < 1:
        raise ValueError("n_points, repeats and n_frames must be >= 1")
    base = build_box_scene(point_spacing_m=0.02, image_size=frame_size, n_orbit_keyframes=max(0, n_frames))
    snap = resample_points(base, n_points, seed=seed)
    frame_ids = select_frames(snap, n=n_frames)
    keyframes = [snap.keyframe(k) for k in frame_ids]
    samples = prepare_instance_samples(snap)

    wall: dict[str, list[float]] = {"bev": [], "markers": [], "prompt": []}
    cpu: dict[str, list[float]] = {"bev": [], "markers": [], "prompt": []}
    bev = None
    question = "the yellow box behind the cabinet"
    for it in range(repeats + 1):  # the first iteration warms caches and is dropped
        marks = [(time.perf_counter(), time.process_time())]
        bev = render_bev(snap, size_px=size_px)
        marks.append((time.perf_counter(), time.process_time()))
        for kf in keyframes:
            mark_frame(kf, snap, samples=samples, image_size=size_px)
        marks.append((time.perf_counter(), time.process_time()))
        build_prompt(snap, question, Task.GROUNDING, n_frames=n_frames, image_size=size_px)
        marks.append((time.perf_counter(), time.process_time()))
        if it == 0:
            continue
        for k, name in enumerate(("bev", "markers", "prompt")):
            wall[name].append((marks[k + 1][0] - marks[k][0]) * 1e3)
            cpu[name].append((marks[k + 1][1] - marks[k][1]) * 1e3)
    # CPU time beside wall time: on a shared machine wall time mostly measures the neighbours.
    result = {
        **{name: {**_stats(wall[name]), "cpu_p50_ms": float(np.median(cpu[name]))} for name in wall},
        "n_points": int(n_points),
        "size_px": int(size_px),
        "n_frames": len(keyframes),
        "frame_size": list(frame_size),
        "splat_radius_px": int(bev.splat_radius_px) if bev is not None else 0,
    }
    logger.info("bench_prompt: %s", result)
    return result


if __name__ == "__main__":  # pragma: no cover - convenience entry until the CLI registers it
    import json

    logging.basicConfig(level=logging.INFO)
    print(json.dumps(bench_prompt(), indent=2))
