"""``scene-vlm bench synthetic``: how fast the synthetic RGB-D renderer runs on this machine.

Renders a walkthrough of a generated room (ray cast + shading + texture + depth noise, i.e. exactly
what :func:`scene_vlm_ros.datasets.render.generate_sequence` does per frame) at each width and reports
frames per second and the milliseconds per frame, split into the ray cast and the rest.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Optional

from ..datasets.render import DEFAULT_T_BASE_CAMERA_OPTICAL, SyntheticScene, make_trajectory
from ..datasets.synthetic import generate_layout

logger = logging.getLogger(__name__)


def bench_synthetic(frames: int = 60, widths: Sequence[int] = (320, 640), seed: int = 0, warmup: int = 3) -> dict:
    """Time ``frames`` rendered frames per width (4:3 images) of a seeded room's walkthrough.

    Returns ``{"WxH": {"fps", "ms_per_frame", "ms_raycast", "ms_median", "frames", "triangles"}, ...,
    "layout_seed": seed, "n_objects": n}``; ``ms_per_frame`` is the mean wall time of
    :meth:`SyntheticScene.render` with noise on, ``ms_raycast`` the mean time inside Open3D's cast.
    """
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    layout = generate_layout(seed)
    poses = make_trajectory(layout, "walkthrough", frames + warmup, speed_mps=None, seed=seed)
    cams = [T @ DEFAULT_T_BASE_CAMERA_OPTICAL for T in poses]
    result: dict = {"layout_seed": seed, "n_objects": len(layout.objects)}
    for width in widths:
        height = int(round(width * 3 / 4))
        scene = SyntheticScene(layout, width, height, seed=seed)
        for T in cams[:warmup]:
            scene.render(T)
        totals, casts = [], []
        t_start = time.perf_counter()
        for i, T in enumerate(cams[warmup:]):
            scene.render(T, stamp_s=i / 30.0, frame_index=i)
            totals.append(scene.last_timings_ms["total"])
            casts.append(scene.last_timings_ms["raycast"])
        wall = time.perf_counter() - t_start
        result[f"{width}x{height}"] = {
            "fps": frames / wall,
            "ms_per_frame": 1e3 * wall / frames,
            "ms_median": statistics.median(totals),
            "ms_raycast": statistics.fmean(casts),
            "frames": frames,
            "triangles": scene.n_triangles,
        }
        logger.info("%dx%d: %.1f fps (%.1f ms/frame, ray cast %.1f ms)", width, height, frames / wall,
                    1e3 * wall / frames, statistics.fmean(casts))
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry (no typer): ``--frames N --widths 320 640 --seed S``; prints JSON, returns 0."""
    parser = argparse.ArgumentParser(prog="scene-vlm bench synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60, help="frames to time per resolution")
    parser.add_argument("--widths", type=int, nargs="+", default=[320, 640], help="image widths (4:3)")
    parser.add_argument("--seed", type=int, default=0, help="layout seed")
    args = parser.parse_args(argv)
    try:
        result = bench_synthetic(args.frames, tuple(args.widths), args.seed)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
