"""``scene-vlm bench query``: what a query costs besides the model, and what it costs mapping.

1. Query overhead: snapshot + frame selection + BEV + markers + prompt + parsing, with a backend
   that answers instantly (so only our code is timed), 8 frames, 512 px; p50 / p95.
2. Mapping under query load: the same frames integrated once alone and once while a second
   thread runs queries back to back (what the node does: mapping and queries on separate threads).
   Two views: the unpaced throughput ratio (frames/s with queries / frames/s alone; both threads
   share one GIL and 2 cores, so this drops), and the share of frames integrated when they arrive
   at the camera rate (30 Hz, a frame more than one period late is dropped like a keep-last queue),
   which is what a robot sees.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Optional

import numpy as np

from ..core.memory import MemoryConfig, SceneMemory
from ..vlm.engine import ErrorCode, QueryEngine, QueryRequest
from ..vlm.types import GenerationRequest, Task, VLMBackend


class InstantBackend(VLMBackend):
    """Answers with the first instance's ID at once; stands in for model time = 0 (benchmark only)."""

    name = "instant"
    needs_images = True

    def load(self) -> None:
        pass

    def generate(self, request: GenerationRequest, *, timeout_s: float, cancel: Optional[threading.Event] = None
                 ) -> str:
        n_images = sum(c.get("type") == "image" for m in request.messages for c in m["content"])
        if n_images == 0:
            raise RuntimeError("prompt carried no images")
        inst = request.snapshot.instances[0] if request.snapshot and request.snapshot.instances else None
        return f"<OBJ{inst.instance_id:03d}>." if inst else "No."


def _percentiles(ms: list[float]) -> dict[str, float]:
    arr = np.asarray(ms)
    return {"p50_ms": float(np.percentile(arr, 50)), "p95_ms": float(np.percentile(arr, 95)),
            "mean_ms": float(arr.mean()), "n": int(len(arr))}


def bench_query(repeats: int = 30, n_frames: int = 8, seed: int = 0, n_scene_frames: int = 150,
                width: int = 640, height: int = 480, camera_hz: float = 30.0) -> dict[str, Any]:
    from ..datasets.render import generate_sequence
    from ..datasets.synthetic import generate_layout

    layout = generate_layout(seed)
    frames = [sf.frame for sf in generate_sequence(layout, n_frames=n_scene_frames, width=width, height=height,
                                                   speed_mps=None, seed=seed)]
    memory = SceneMemory(MemoryConfig())
    for f in frames:
        memory.integrate(f)
    engine = QueryEngine(InstantBackend(), n_frames=n_frames, image_size_px=512)
    questions = ["where is the chair next to the table?", "find the lamp", "which object is the cabinet?"]

    def one_query(i: int) -> float:
        t0 = time.perf_counter()
        snap = memory.snapshot()
        res = engine.answer(QueryRequest(questions[i % len(questions)], Task.GROUNDING), snap,
                            time.monotonic() + 60.0)
        if res.error_code not in (ErrorCode.SUCCESS, ErrorCode.NO_MATCH):
            raise RuntimeError(f"query failed: {res.error_code.name} {res.error_msg}")
        return (time.perf_counter() - t0) * 1e3

    one_query(0)  # warm caches (first BEV splat radius estimate, visibility cache)
    overhead = [one_query(i) for i in range(repeats)]

    # Mapping rate alone vs with queries back to back, on a fresh memory each time.
    def map_all(mem: SceneMemory) -> float:
        t0 = time.perf_counter()
        for f in frames:
            mem.integrate(f)
        return len(frames) / (time.perf_counter() - t0)

    def map_paced(mem: SceneMemory) -> float:
        period = 1.0 / camera_hz
        t0 = time.perf_counter()
        integrated = 0
        for i, f in enumerate(frames):
            t_arrive = t0 + i * period
            now = time.perf_counter()
            if now < t_arrive:
                time.sleep(t_arrive - now)
            elif now - t_arrive > period:
                continue  # the mapper is more than a frame behind: this frame is overwritten
            mem.integrate(f)
            integrated += 1
        return integrated / len(frames)

    def with_queries(run: Any) -> tuple[float, int]:
        loaded = SceneMemory(MemoryConfig())
        stop = threading.Event()
        n_queries = [0]

        def query_loop() -> None:
            eng = QueryEngine(InstantBackend(), n_frames=n_frames)
            while not stop.is_set():
                snap = loaded.snapshot()
                if snap.is_empty:
                    time.sleep(0.005)
                    continue
                eng.answer(QueryRequest(questions[0], Task.GROUNDING), snap, time.monotonic() + 60.0)
                n_queries[0] += 1

        th = threading.Thread(target=query_loop, daemon=True)
        th.start()
        try:
            value = run(loaded)
        finally:
            stop.set()
            th.join()
        return value, n_queries[0]

    fps_alone = map_all(SceneMemory(MemoryConfig()))
    fps_loaded, n_q_unpaced = with_queries(map_all)
    paced_alone = map_paced(SceneMemory(MemoryConfig()))
    paced_loaded, n_q_paced = with_queries(map_paced)
    return {
        "query_overhead": {**_percentiles(overhead), "n_frames": n_frames, "image_px": 512,
                           "instances": len(memory.snapshot().instances)},
        "mapping_fps_alone": fps_alone,
        "mapping_fps_with_queries": fps_loaded,
        "mapping_rate_kept": fps_loaded / fps_alone,
        "queries_during_mapping": n_q_unpaced,
        "camera_hz": camera_hz,
        "paced_frames_integrated_alone": paced_alone,
        "paced_frames_integrated_with_queries": paced_loaded,
        "paced_rate_kept": paced_loaded / paced_alone if paced_alone else 0.0,
        "queries_during_paced_mapping": n_q_paced,
        "frames": len(frames), "resolution": [width, height],
    }
