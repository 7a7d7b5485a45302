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
from typing import Any, Optional

from ..core.mapping_worker import MappingWorker, MappingWorkerConfig
from ..core.memory import MemoryConfig, SceneMemory
from ..core.types import RGBDFrame

logger = logging.getLogger(__name__)


class MapSourceError(ValueError):
    """The map source is neither a rosbag nor a 7-Scenes-layout folder."""


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB; Linux reports ru_maxrss in KiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if sys.platform != "darwin" else rss / (1024.0 * 1024.0)


def iter_source_frames(source: Path, gravity_align: bool = True, topics: Optional[Any] = None,
                       use_mask: bool = True, ingest_stats: Optional[dict] = None
                       ) -> tuple[Iterator[RGBDFrame], Optional[int]]:
    """Frames of ``source`` and their count when known cheaply.

    A folder with ``camera-intrinsics.txt`` is read as 7-Scenes (gravity-aligned: the memory
    needs z up), one with ``color/ depth/ pose/ intrinsic/`` as an exported ScanNet scan; any other
    folder or a ``.mcap``/``.db3`` file is read as a rosbag, through the
    node's own ingest pipeline (``ingest_stats`` receives its counts and drop reasons at the end).
    """
    source = Path(source)
    if not source.exists():
        raise MapSourceError(f"map source {source} does not exist (give a rosbag, a 7-Scenes folder or a ScanNet scan)")
    if source.is_dir() and (source / "camera-intrinsics.txt").is_file():
        from ..datasets.seven_scenes import load_seven_scenes

        seq = load_seven_scenes(source, gravity_align=gravity_align)
        return seq.frames(), len(seq)
    if source.is_dir() and all((source / sub).is_dir() for sub in ("color", "depth", "pose", "intrinsic")):
        from ..datasets.scannet import load_scannet

        scan = load_scannet(source)  # an exported ScanNet scan (posed frames, already synchronised)
        return scan.frames(), len(scan)
    if source.is_dir() or source.suffix in (".mcap", ".db3"):
        from ..bag.reader import BagTopics, read_bag

        topics = topics or BagTopics()
        return (bf.frame for bf in read_bag(source, topics, use_mask=use_mask, stats_out=ingest_stats)), None
    raise MapSourceError(f"{source}: not a rosbag (folder, .mcap, .db3), a 7-Scenes folder (camera-intrinsics.txt) "
                         "nor a ScanNet scan (color/ depth/ pose/ intrinsic/)")


def map_source(
    source: Path,
    config: Optional[MemoryConfig] = None,
    *,
    topics: Optional[Any] = None,
    use_mask: bool = True,
    max_frames: Optional[int] = None,
    progress: Any = False,
    worker_config: Optional[MappingWorkerConfig] = None,
) -> tuple[SceneMemory, dict]:
    """Fuse ``source`` (a rosbag, a 7-Scenes folder) into a fresh memory; return it and its stats.

    ``topics`` (a :class:`~scene_vlm_ros.bag.reader.BagTopics`) renames a bag's topics;
    ``use_mask=False`` ignores a recorded instance mask (instances then come from the detector and
    geometry, as on a real camera). ``progress``: a bar (truthy), and when callable it is also called
    with ``(frames_done, total_or_None)`` after every frame. Frames go through the node's :class:`MappingWorker` in this
    thread (``worker_config``: rate policy, stamp-based refresh; default: every frame, a refresh per
    second of sensor time), so the same bag gives the same map here, in the node and run after run.
    The memory is refreshed before it is returned.
    """
    memory = SceneMemory(config or MemoryConfig())
    # The node's mapping worker, run in this thread: same rate policy, same stamp-based refreshes.
    worker = MappingWorker(memory, worker_config or MappingWorkerConfig())
    ingest: dict = {}
    frames, total = iter_source_frames(Path(source), topics=topics, use_mask=use_mask, ingest_stats=ingest)
    if max_frames is not None and total is not None:
        total = min(total, max_frames)
    t_start = time.perf_counter()
    n = 0
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=False)
        bar.start()
        task = bar.add_task(f"mapping {Path(source).name}", total=total)
    try:
        for frame in frames:
            if max_frames is not None and n >= max_frames:
                break
            worker.submit([frame])
            worker.drain()
            n += 1
            if bar is not None:
                bar.advance(task)
            if callable(progress):
                progress(n, total)
        worker.finish()
    finally:
        if bar is not None:
            bar.stop()
    wall_s = time.perf_counter() - t_start
    snap = memory.snapshot(allow_stale=True)
    mstats = memory.stats()
    wstats = worker.stats()
    total_t = mstats["timings"].get("total", {})
    stats = {
        "source": str(source),
        "frames_read": n,
        "frames_integrated": mstats["frames_integrated"],
        "frames_rejected": mstats["frames_rejected"],
        "frames_skipped_by_rate_policy": wstats["skipped_by_rate_policy"],
        "frames_dropped": {**ingest.get("dropped", {}), **wstats["dropped"]},
        "input_warnings": ingest.get("warnings", []),
        "per_frame_ms_p50": total_t.get("p50_ms"),
        "per_frame_ms_p95": total_t.get("p95_ms"),
        "wall_s": wall_s,
        "peak_rss_mb": peak_rss_mb(),
        "instances": len(snap.instances),
        "points": int(len(snap.points)),
        "memory": mstats,
    }
    return memory, stats


def map_command(
    source: Path,
    out: Path,
    config: Optional[MemoryConfig] = None,
    max_frames: Optional[int] = None,
    progress: bool = True,
    worker_config: Optional[MappingWorkerConfig] = None,
) -> dict:
    """Fuse every frame of ``source`` into a fresh memory and write the outputs into ``out``.

    Returns the stats dict that is also written to ``out/stats.json``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    memory, stats = map_source(source, config, max_frames=max_frames, progress=progress, worker_config=worker_config)
    snap = memory.snapshot(allow_stale=True)
    (out / "objects.json").write_text(json.dumps([inst.to_json() for inst in snap.instances], indent=2))
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    memory.save(out / "memory")
    logger.info("mapped %d frames -> %d instances in %.1f s; outputs in %s", stats["frames_read"],
                len(snap.instances), stats["wall_s"], out)
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
