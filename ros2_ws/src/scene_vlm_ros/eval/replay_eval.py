"""Rosbag regression evaluation: map a bag, answer its generated questions, score against ground truth.

This is the offline path (no rclpy): the same SceneMemory and QueryEngine the node runs, fed by
the bag reader. ``tests/test_node_e2e.py`` covers the same flow through live topics.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from ..core.memory import MemoryConfig, SceneMemory
from ..core.types import SceneSnapshot
from ..vlm.engine import QueryEngine, QueryRequest
from ..vlm.types import VLMBackend
from .query_metrics import score_answer, summarise


def sidecars(bag: Path) -> tuple[Path, Path]:
    """``X.gt.json`` and ``X.queries.json`` beside a bag directory (or beside ``X.mcap``)."""
    bag = Path(bag)
    stem = bag.parent / (bag.stem if bag.suffix in (".mcap", ".db3") else bag.name)
    return Path(f"{stem}.gt.json"), Path(f"{stem}.queries.json")


def map_bag(bag: Path, config: Optional[MemoryConfig] = None, max_frames: Optional[int] = None) -> SceneMemory:
    from ..bag.reader import read_bag

    memory = SceneMemory(config or MemoryConfig())
    for i, bf in enumerate(read_bag(bag)):
        if max_frames is not None and i >= max_frames:
            break
        memory.integrate(bf.frame)
    return memory


def answer_records(snapshot: SceneSnapshot, records: list[dict], gt_by_id: dict, backend: VLMBackend,
                   timeout_s: float = 30.0) -> list[dict[str, Any]]:
    engine = QueryEngine(backend)
    rows = []
    for rec in records:
        if rec.get("frame_ids"):
            continue  # camera-frame questions need the frame's pose in the request (not part of the srv)
        result = engine.answer(QueryRequest(rec["question"]), snapshot, time.monotonic() + timeout_s)
        rows.append({
            "id": rec["id"], "task": rec["task"], "family": rec.get("family"), "question": rec["question"],
            "expected": rec["answer"], "answer": result.answer, "error_code": int(result.error_code),
            "scores": score_answer(rec, result.answer, result.instances, gt_by_id),
        })
    return rows


def evaluate_bag(bag: Path, backend: Optional[VLMBackend] = None, max_frames: Optional[int] = None,
                 config: Optional[MemoryConfig] = None) -> dict[str, Any]:
    from ..datasets.questions import read_questions
    from ..datasets.synthetic import read_ground_truth
    from ..vlm.backends.fallback import FallbackBackend
    from .mapping_metrics import instance_recall, oracle_ceiling

    gt_path, q_path = sidecars(bag)
    if not gt_path.is_file() or not q_path.is_file():
        raise FileNotFoundError(f"{bag}: expected {gt_path.name} and {q_path.name} beside it "
                                "(written by `scene-vlm make-bag --source synthetic`)")
    gt_objects, _room = read_ground_truth(gt_path)
    records = read_questions(q_path)
    t0 = time.perf_counter()
    memory = map_bag(bag, config, max_frames)
    snap = memory.snapshot(refresh=True)
    t_map = time.perf_counter() - t0
    backend = backend or FallbackBackend()
    backend.load()
    rows = answer_records(snap, records, {o.object_id: o for o in gt_objects}, backend)
    return {
        "bag": str(bag), "frames_integrated": snap.n_frames_integrated, "instances": len(snap.instances),
        "mapping_s": t_map, "instance_recall": instance_recall(snap.instances, gt_objects),
        "oracle_ceiling": oracle_ceiling(snap.instances, gt_objects), "backend": backend.name,
        "summary": summarise(rows), "questions": rows,
    }
