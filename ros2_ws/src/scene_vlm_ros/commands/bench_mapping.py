"""``scene-vlm bench mapping``: speed, memory and instance quality of the scene memory.

Runs the default synthetic scene (``datasets.synthetic.generate_layout(seed)`` rendered along the
walkthrough trajectory, true poses) through a fresh :class:`SceneMemory` once per instance source:

- ``mask``: the renderer's instance mask (upstream segmenter), plus geometry;
- ``detector``: Yolo-Fastest on keyframes (needs ``detector_dir``), plus geometry;
- ``geometry``: geometric segmentation of the fused map only.

Per source it reports per-frame integration time p50/p95 (ms; rendering excluded), sustained
frames/s, TSDF blocks and their memory, peak RSS, instance recall at box IoU 0.25/0.5, the
oracle-ID grounding ceiling, and ID switches per 100 frames (GT matched on a snapshot every
``eval_every`` frames). Optionally it also times plain fusion on the real 7-Scenes kitchen.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ..core.fusion import TSDFVolume
from ..core.memory import MemoryConfig, SceneMemory
from ..eval.mapping_metrics import id_switches, instance_recall, match_instances, oracle_ceiling
from .map import peak_rss_mb

logger = logging.getLogger(__name__)


def _run_source(source: str, layout, n_frames: int, width: int, height: int, seed: int, voxel_size_m: float,
                detector_dir: Optional[str], eval_every: int, noise: bool) -> dict:
    from ..datasets.render import generate_sequence

    cfg = MemoryConfig(
        voxel_size_m=voxel_size_m,
        use_mask=source == "mask",
        use_detector=source == "detector",
        detector_model_dir=detector_dir if source == "detector" else None,
        use_geometry=True,
    )
    mem = SceneMemory(cfg)
    gt = list(layout.objects)
    # Pixels per GT object over the sequence (the renderer's mask is ground truth whatever source
    # the memory uses): an object never in view cannot be mapped, so recall is also reported over
    # the observed objects (>= 200 pixels in >= 3 frames).
    seen_frames: dict[int, int] = {}
    history = []
    render_s = 0.0
    refresh_ms = []
    t_render = time.perf_counter()
    for i, sf in enumerate(generate_sequence(layout, n_frames, width, height, seed=seed, noise=noise,
                                                      speed_mps=None)):
        render_s += time.perf_counter() - t_render
        if sf.frame.instance_mask is not None:
            ids, counts = np.unique(sf.frame.instance_mask, return_counts=True)
            for oid in ids[(counts >= 200) & (ids > 0)]:
                seen_frames[int(oid)] = seen_frames.get(int(oid), 0) + 1
        mem.integrate(sf.frame)
        if (i + 1) % eval_every == 0:
            t = time.perf_counter()
            snap = mem.snapshot(refresh=True)
            refresh_ms.append((time.perf_counter() - t) * 1e3)
            history.append(match_instances(snap.instances, gt, 0.25))
        t_render = time.perf_counter()
    t = time.perf_counter()
    snap = mem.snapshot(refresh=True)
    refresh_ms.append((time.perf_counter() - t) * 1e3)
    t = time.perf_counter()
    for _ in range(100):
        mem.snapshot()
    cached_snapshot_ms = (time.perf_counter() - t) * 10.0
    st = mem.stats()
    total = st["timings"]["total"]
    recall = instance_recall(snap.instances, gt, (0.25, 0.5))
    ceiling = oracle_ceiling(snap.instances, gt, (0.25, 0.5))
    switches = id_switches(history)
    observed = [g for g in gt if seen_frames.get(g.object_id, 0) >= 3]
    recall_obs = instance_recall(snap.instances, observed, (0.25, 0.5)) if observed else {0.25: 0.0, 0.5: 0.0}
    return {
        "source": source,
        "frames": st["frames_integrated"],
        "rejected": st["frames_rejected"],
        "per_frame_ms_p50": total["p50_ms"],
        "per_frame_ms_p95": total["p95_ms"],
        "stage_ms_p95": {k: v["p95_ms"] for k, v in st["timings"].items()},
        "sustained_fps_from_p50": 1000.0 / total["p50_ms"],
        "refresh_ms_p50": float(np.median(refresh_ms)),
        "cached_snapshot_ms": cached_snapshot_ms,
        "blocks": st["blocks"],
        "tsdf_mb": st["tsdf_bytes_est"] / 1e6,
        "memory_mb_est": st["memory_bytes_est"] / 1e6,
        "n_gt": len(gt),
        "n_instances": len(snap.instances),
        "recall@0.25": recall[0.25],
        "recall@0.5": recall[0.5],
        "n_gt_observed": len(observed),
        "unobserved_gt": [f"{g.object_id}:{g.label}" for g in gt if g not in observed],
        "recall_observed@0.25": recall_obs[0.25],
        "recall_observed@0.5": recall_obs[0.5],
        "oracle_ceiling@0.25": ceiling[0.25],
        "oracle_ceiling@0.5": ceiling[0.5],
        "id_switches": switches,
        "id_switches_per_100_frames": 100.0 * switches / max(1, st["frames_integrated"]),
        "render_s": render_s,
        "instance_status": st["instance_source"],
    }


def bench_kitchen(kitchen_dir: Path, voxel_size_m: float = 0.05) -> dict:
    """Per-frame time (ms) of the whole integrate path on the real 7-Scenes kitchen (50 frames)."""
    from ..datasets.seven_scenes import load_seven_scenes

    frames = list(load_seven_scenes(kitchen_dir, gravity_align=True).frames())
    # The yardstick: a bare VoxelBlockGrid loop (research-notes: 5.9 / 7.6 ms on 2 idle cores),
    # timed in the same process and moment, so the ratio holds even on a loaded machine.
    bare = TSDFVolume(MemoryConfig(voxel_size_m=voxel_size_m).fusion_params())
    bare_ms = []
    for f in frames:
        t = time.perf_counter()
        bare.integrate(f.depth_m, f.color_rgb, f.intrinsics, f.T_world_camera)
        bare_ms.append((time.perf_counter() - t) * 1e3)
    mem = SceneMemory(MemoryConfig(voxel_size_m=voxel_size_m))
    for f in frames:
        mem.integrate(f)
    st = mem.stats()["timings"]
    t = time.perf_counter()
    snap = mem.snapshot(refresh=True)
    return {
        "frames": len(frames),
        "bare_fusion_ms_p50": float(np.percentile(bare_ms, 50)),
        "bare_fusion_ms_p95": float(np.percentile(bare_ms, 95)),
        "per_frame_ms_p50": st["total"]["p50_ms"],
        "per_frame_ms_p95": st["total"]["p95_ms"],
        "fusion_ms_p50": st["fusion"]["p50_ms"],
        "fusion_ms_p95": st["fusion"]["p95_ms"],
        "refresh_ms": (time.perf_counter() - t) * 1e3,
        "instances": len(snap.instances),
    }


def bench_mapping(
    seed: int = 0,
    n_frames: int = 300,
    width: int = 640,
    height: int = 480,
    sources: tuple[str, ...] = ("mask", "geometry", "detector"),
    detector_dir: Optional[str] = None,
    voxel_size_m: float = 0.05,
    eval_every: int = 30,
    noise: bool = True,
    kitchen_dir: Optional[Path] = None,
) -> dict:
    """Run the mapping benchmark; returns a JSON-able dict (see module doc). The ``detector`` source
    is skipped (with a note) when ``detector_dir`` is None."""
    from ..datasets.synthetic import generate_layout

    layout = generate_layout(seed)
    out: dict = {
        "seed": seed, "n_frames": n_frames, "image": [width, height], "voxel_size_m": voxel_size_m,
        "room_size_m": list(layout.size), "sources": {},
    }
    for source in sources:
        if source == "detector" and not detector_dir:
            out["sources"][source] = {"skipped": "no detector_dir given"}
            continue
        logger.info("benchmarking source %s", source)
        out["sources"][source] = _run_source(source, layout, n_frames, width, height, seed, voxel_size_m,
                                             detector_dir, eval_every, noise)
    if kitchen_dir is not None and Path(kitchen_dir).is_dir():
        out["kitchen"] = bench_kitchen(Path(kitchen_dir), voxel_size_m)
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def main(argv: Optional[list[str]] = None) -> int:
    """Console entry (the lead registers it as ``scene-vlm bench mapping``)."""
    import argparse

    ap = argparse.ArgumentParser(prog="scene-vlm bench mapping", description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--sources", default="mask,geometry,detector")
    ap.add_argument("--detector-dir", default=None)
    ap.add_argument("--voxel-size-m", type=float, default=0.05)
    ap.add_argument("--eval-every", type=int, default=30)
    ap.add_argument("--kitchen-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = bench_mapping(args.seed, args.frames, args.width, args.height, tuple(args.sources.split(",")),
                           args.detector_dir, args.voxel_size_m, args.eval_every, kitchen_dir=args.kitchen_dir)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
