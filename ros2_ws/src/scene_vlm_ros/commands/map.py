"""``scene-vlm map SOURCE OUT``: fuse a rosbag or a 7-Scenes-layout folder into a scene memory.

Writes ``OUT/objects.json`` (``[Instance.to_json()]``), ``OUT/stats.json`` (frames, per-frame
time p50/p95 in ms, peak RSS in MB, the memory's own stats) and ``OUT/memory/`` (the saved
:class:`~scene_vlm_ros.core.memory.SceneMemory`, reloadable with ``SceneMemory.load``).
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

from ..core.memory import MemoryConfig, SceneMemory
from ..core.types import RGBDFrame

logger = logging.getLogger(__name__)


class MapSourceError(ValueError):
    """The map source is neither a rosbag nor a 7-Scenes-layout folder."""


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB; Linux reports ru_maxrss in KiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if sys.platform != "darwin" else rss / (1024.0 * 1024.0)


def iter_source_frames(source: Path, gravity_align: bool = True) -> tuple[Iterator[RGBDFrame], Optional[int]]:
    """Frames of ``source`` and their count when known cheaply.

    A folder with ``camera-intrinsics.txt`` is read as 7-Scenes (gravity-aligned: the memory
    needs z up); any other folder or a ``.mcap``/``.db3`` file is read as a rosbag.
    """
    source = Path(source)
    if not source.exists():
        raise MapSourceError(f"map source {source} does not exist (give a rosbag or a 7-Scenes folder)")
    if source.is_dir() and (source / "camera-intrinsics.txt").is_file():
        from ..datasets.seven_scenes import load_seven_scenes

        seq = load_seven_scenes(source, gravity_align=gravity_align)
        return seq.frames(), len(seq)
    if source.is_dir() or source.suffix in (".mcap", ".db3"):
        from ..bag.reader import read_bag

        return (bf.frame for bf in read_bag(source)), None
    raise MapSourceError(f"{source}: not a rosbag (folder, .mcap, .db3) nor a 7-Scenes folder (camera-intrinsics.txt)")


def map_command(
    source: Path,
    out: Path,
    config: Optional[MemoryConfig] = None,
    max_frames: Optional[int] = None,
    progress: bool = True,
) -> dict:
    """Fuse every frame of ``source`` into a fresh memory and write the outputs into ``out``.

    Returns the stats dict that is also written to ``out/stats.json``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    memory = SceneMemory(config or MemoryConfig())
    frames, total = iter_source_frames(Path(source))
    if max_frames is not None and total is not None:
        total = min(total, max_frames)
    t_start = time.perf_counter()
    n = 0
    if progress:
        from rich.progress import Progress

        with Progress(transient=False) as bar:
            task = bar.add_task(f"mapping {Path(source).name}", total=total)
            for frame in frames:
                if max_frames is not None and n >= max_frames:
                    break
                memory.integrate(frame)
                n += 1
                bar.advance(task)
    else:
        for frame in frames:
            if max_frames is not None and n >= max_frames:
                break
            memory.integrate(frame)
            n += 1
    wall_s = time.perf_counter() - t_start
    snap = memory.snapshot(refresh=True)
    mstats = memory.stats()
    total_t = mstats["timings"].get("total", {})
    stats = {
        "source": str(source),
        "frames_read": n,
        "frames_integrated": mstats["frames_integrated"],
        "frames_rejected": mstats["frames_rejected"],
        "per_frame_ms_p50": total_t.get("p50_ms"),
        "per_frame_ms_p95": total_t.get("p95_ms"),
        "wall_s": wall_s,
        "peak_rss_mb": peak_rss_mb(),
        "instances": len(snap.instances),
        "points": int(len(snap.points)),
        "memory": mstats,
    }
    (out / "objects.json").write_text(json.dumps([inst.to_json() for inst in snap.instances], indent=2))
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    memory.save(out / "memory")
    logger.info("mapped %d frames -> %d instances in %.1f s; outputs in %s", n, len(snap.instances), wall_s, out)
    return stats


def main(argv: Optional[list[str]] = None) -> int:
    """Console entry: ``map SOURCE OUT [--voxel-size-m V] [--detector-dir D] [--max-frames N]``."""
    import argparse

    ap = argparse.ArgumentParser(prog="scene-vlm map", description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--voxel-size-m", type=float, default=0.05)
    ap.add_argument("--detector-dir", type=str, default=None, help="Yolo-Fastest folder: enables the detector")
    ap.add_argument("--no-geometry", action="store_true", help="no geometric segmentation instances")
    ap.add_argument("--max-frames", type=int, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = MemoryConfig(
        voxel_size_m=args.voxel_size_m,
        use_detector=args.detector_dir is not None,
        detector_model_dir=args.detector_dir,
        use_geometry=not args.no_geometry,
    )
    stats = map_command(args.source, args.out, cfg, args.max_frames)
    print(json.dumps({k: v for k, v in stats.items() if k != "memory"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
