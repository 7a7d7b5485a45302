#!/usr/bin/env python3
"""Regenerate the golden BEV images of the prompt tests, or write the README example pair.

Golden images (``tests/golden/``) are the BEV of the fixed box room of
``scene_vlm_ros.commands.bench_prompt.build_box_scene`` at 256 px, without and with ID markers.
Regenerate them only after an intended change of the BEV or marker style, and look at the new
PNGs before committing them::

    .venv/bin/python scripts/regen_golden.py

README example (real data, not committed by the tests): fuse the 7-Scenes kitchen slice by plain
back-projection (every 4th pixel, gravity-aligned with its ``gravity-direction.txt``), render the
BEV and one frame side by side::

    .venv/bin/python scripts/regen_golden.py --kitchen ../shared/data/7scenes-redkitchen --out docs/images
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from scene_vlm_ros.commands.bench_prompt import build_box_scene
from scene_vlm_ros.core.bev import render_bev
from scene_vlm_ros.core.geometry import backproject_depth, make_transform, transform_points
from scene_vlm_ros.core.markers import draw_bev_markers
from scene_vlm_ros.core.types import CameraIntrinsics, Keyframe, SceneSnapshot

logger = logging.getLogger("regen_golden")

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "tests" / "golden"
GOLDEN_SIZE_PX = 256
GOLDEN_BEV = "bev_box_room_256.png"
GOLDEN_BEV_MARKERS = "bev_box_room_markers_256.png"


def golden_images() -> dict[str, np.ndarray]:
    """The golden images by file name, rendered by the current code."""
    scene = build_box_scene()
    bev = render_bev(scene, size_px=GOLDEN_SIZE_PX)
    marked, _ = draw_bev_markers(bev, scene)
    return {GOLDEN_BEV: bev.image, GOLDEN_BEV_MARKERS: marked}


def _gravity_alignment(gravity_world: np.ndarray) -> np.ndarray:
    """Rotation taking the dataset's world frame to one whose -z is ``gravity_world`` (down)."""
    g = np.asarray(gravity_world, dtype=np.float64)
    g /= np.linalg.norm(g)
    up = -g
    # Rodrigues rotation of `up` onto +z.
    v = np.cross(up, [0.0, 0.0, 1.0])
    c = float(up[2])
    if np.linalg.norm(v) < 1e-9:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def kitchen_snapshot(kitchen_dir: Path, stride: int = 4, max_frames: int | None = None) -> SceneSnapshot:
    """A geometry-only snapshot of an RGB-D folder in the 7-Scenes layout (no instances).

    Depth pixels (uint16 mm) are back-projected every ``stride`` pixels, moved to the world with
    each ``pose.txt`` (camera-to-world), and the world is rotated so gravity points along -z.
    """
    kitchen_dir = Path(kitchen_dir)
    K = np.loadtxt(kitchen_dir / "camera-intrinsics.txt")
    R_align = _gravity_alignment(np.loadtxt(kitchen_dir / "gravity-direction.txt"))
    T_align = make_transform(R_align, np.zeros(3))
    colors_paths = sorted(kitchen_dir.glob("frame-*.color.*"))[:max_frames]
    if not colors_paths:
        raise FileNotFoundError(f"no frame-*.color.* files in {kitchen_dir}")
    pts, cols, kfs = [], [], []
    for k, cpath in enumerate(colors_paths):
        stem = cpath.name.split(".")[0]
        rgb = np.asarray(Image.open(cpath).convert("RGB"))
        depth = np.asarray(Image.open(kitchen_dir / f"{stem}.depth.png")).astype(np.float32) / 1000.0
        depth[depth >= 65.0] = 0.0  # 65535 marks "no reading" in some 7-Scenes exports
        intr = CameraIntrinsics.from_K(K, depth.shape[1], depth.shape[0])
        T = T_align @ np.loadtxt(kitchen_dir / f"{stem}.pose.txt")
        p_cam, vu = backproject_depth(depth, intr, stride=stride, min_m=0.2, max_m=4.0)
        pts.append(transform_points(T, p_cam))
        cols.append(rgb[vu[:, 0], vu[:, 1]])
        kfs.append(Keyframe(k, float(k), rgb, depth, intr, T))
    points = np.concatenate(pts).astype(np.float32)
    colors = np.concatenate(cols).astype(np.uint8)
    return SceneSnapshot(
        stamp_s=float(len(kfs)),
        frame_id="map",
        points=points,
        colors=colors,
        keyframes=tuple(kfs),
        n_frames_integrated=len(kfs),
        metadata={"source": str(kitchen_dir)},
    )


def write_kitchen_example(kitchen_dir: Path, out_dir: Path, size_px: int = 512) -> list[Path]:
    """Write ``kitchen_bev.png`` and ``kitchen_frame.png`` (the middle keyframe) into ``out_dir``."""
    snap = kitchen_snapshot(kitchen_dir)
    bev = render_bev(snap, size_px=size_px)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = snap.keyframes[len(snap.keyframes) // 2].color_rgb
    paths = [out_dir / "kitchen_bev.png", out_dir / "kitchen_frame.png"]
    Image.fromarray(bev.image).save(paths[0])
    Image.fromarray(frame).save(paths[1])
    logger.info("kitchen BEV: %d points, %.1f px/m, cut at %.2f m", bev.n_points, bev.bev_px_per_m, bev.height_cut_m)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kitchen", type=Path, help="7-Scenes style folder: write the README example instead")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: tests/golden)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.kitchen is not None:
        for p in write_kitchen_example(args.kitchen, args.out or Path("docs/images")):
            print(p)
        return
    out = args.out or GOLDEN_DIR
    out.mkdir(parents=True, exist_ok=True)
    for name, img in golden_images().items():
        Image.fromarray(img).save(out / name)
        print(out / name)


if __name__ == "__main__":
    main()
