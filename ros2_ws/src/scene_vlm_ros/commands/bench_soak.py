"""``scene-vlm bench soak``: is memory flat over a long replay that keeps revisiting one room?

The real 7-Scenes kitchen slice (50 frames) is replayed in a loop with stamps continuing at 30 Hz,
for ``minutes`` of sensor time, through the same SceneMemory the node runs (refresh every 30
frames, as the node's mapping thread does at 30 Hz with a 1 s period). Every sensor minute the
process RSS, the TSDF block count, keyframes and instances are recorded; the report gives the
largest deviation from the first minute's value, and from the second's.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np


def current_rss_mb() -> float:
    """Resident set size of this process now (not the peak), from /proc."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def bench_soak(kitchen_dir: Path, minutes: float = 10.0, camera_hz: float = 30.0,
               progress: bool = True) -> dict[str, Any]:
    from ..core.memory import MemoryConfig, SceneMemory
    from ..datasets.seven_scenes import load_seven_scenes

    base = list(load_seven_scenes(kitchen_dir, gravity_align=True).frames())
    n_total = int(minutes * 60 * camera_hz)
    per_minute = int(60 * camera_hz)
    mem = SceneMemory(MemoryConfig(refresh_every_n_frames=30))
    samples: list[dict[str, float]] = []
    t0 = time.perf_counter()
    accepted = 0
    bar: Optional[Any] = None
    if progress:
        from rich.progress import Progress

        bar = Progress()
        bar.start()
        task = bar.add_task("soak (sensor minutes)", total=n_total)
    try:
        for i in range(n_total):
            f = base[i % len(base)]
            # the slice ends away from where it starts: each revisit begins after a 2 s pause, as a
            # robot driving back to the door would (no teleport for the pose-jump check to reject)
            frame = dataclasses.replace(f, stamp_s=i / camera_hz + 2.0 * (i // len(base)), frame_index=i)
            accepted += mem.integrate(frame).accepted
            if (i + 1) % 30 == 0:
                mem.snapshot()  # refresh, as the node's mapping thread does
            if (i + 1) % per_minute == 0:
                st = mem.stats()
                snap = mem.snapshot()
                n_keyframes, n_instances = len(snap.keyframes), len(snap.instances)
                # A snapshot keeps its keyframes alive after the memory evicts them (it is immutable):
                # holding one across the next minute would count ~64 old keyframe images as memory.
                del snap
                samples.append({"minute": (i + 1) / per_minute, "rss_mb": current_rss_mb(),
                                "blocks": float(st["blocks"]), "keyframes": float(n_keyframes),
                                "instances": float(n_instances)})
            if bar is not None:
                bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
    def drift(key: str, first: int = 0) -> float:
        vals = np.array([s[key] for s in samples[first:]])
        if len(vals) == 0:
            return 0.0
        return float(np.max(np.abs(vals - vals[0])) / max(vals[0], 1e-9))

    return {
        "sensor_minutes": minutes, "frames": n_total, "accepted": accepted, "wall_s": time.perf_counter() - t0,
        "samples": samples,
        # relative to the first sensor minute, and to the second
        "rss_max_deviation": drift("rss_mb"), "blocks_max_deviation": drift("blocks"),
        "rss_max_deviation_after_warmup": drift("rss_mb", 1), "blocks_max_deviation_after_warmup": drift("blocks", 1),
        "flat_within_10pct": drift("rss_mb") <= 0.10 and drift("blocks") <= 0.10,
        "flat_within_10pct_after_warmup": drift("rss_mb", 1) <= 0.10 and drift("blocks", 1) <= 0.10,
    }
