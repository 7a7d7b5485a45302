"""``scene-vlm bench recognition``: instances and names on real images, CPU only, no ground truth used.

Rows for three instance sources: geometry only, Yolo-Fastest 1.1 and YOLOv4-tiny (each plus
geometry), on

- the real 7-Scenes kitchen (50 frames): the instance that answers "where is the table?" (label,
  footprint against the real table's, see :data:`KITCHEN_TABLE_XY_M`), the chair instances, and
  the fallback backend's answers to "where is the table?" and "how many chairs are there?";
- the 5 SUN3D lounge frames: is the sofa found and named ("where is the sofa?");
- synthetic bags mapped without their instance-mask topic (``use_mask=False``: detector plus
  geometry, as on a real camera), beside the mask-source row: instance recall at IoU 0.25 / 0.5 and
  label accuracy (matched ground-truth objects whose instance carries the right label).

Run: ``scene-vlm bench recognition --out out/bench/recognition.json`` (or
``python -m scene_vlm_ros.commands.bench_recognition``). Detectors are looked up like the node does
(``.models/yolov4-tiny`` from ``make setup``, ``../shared/models/yolo-fastest-1.1``); a missing one
gives a row that says so.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..core.detector import PRESETS, DetectorUnavailableError, check_detector_files, default_model_dirs, preset_for_dir
from ..core.memory import MemoryConfig, SceneMemory
from ..core.referring import canonical_label
from ..core.types import Instance, SceneSnapshot
from . import emit_json

logger = logging.getLogger(__name__)

#: The real kitchen table's top in the gravity-aligned 7-Scenes frame (x, y ranges, metres),
#: measured by hand from the fused cloud of the 50 frames (5 cm voxels): height profiles in 5 cm
#: strips along x (at y 1.3-2.0 m) and along y (at x -0.6-0.6 m) show a flat surface at
#: z = 0.73 +- 0.02 m with nothing under it from x = -0.95 to 1.22 m and y = 1.18 to 2.15 m;
#: beyond those edges the strips hold the chairs (points from the floor up to 0.82 m) or nothing.
#: Projecting the corners into frames 0 and 20 puts them on the table's corners and end chairs.
KITCHEN_TABLE_XY_M = ((-0.95, 1.22), (1.18, 2.15))

SOURCES = ("geometry-only", "yolo-fastest", "yolov4-tiny")
QUESTIONS_KITCHEN = ("where is the table?", "how many chairs are there?")


def find_detector_dirs(extra: Optional[dict[str, Path]] = None) -> dict[str, Path]:
    """``{preset name: folder}`` of every detector present (the node's search folders, then ``extra``)."""
    found: dict[str, Path] = {}
    for d in [*default_model_dirs(), *(extra or {}).values()]:
        try:
            p = preset_for_dir(d)
            check_detector_files(d, p)
        except DetectorUnavailableError:
            continue
        found.setdefault(p.name, Path(d))
    return found


def _config(source: str, dirs: dict[str, Path]) -> Optional[MemoryConfig]:
    if source == "geometry-only":
        return MemoryConfig()
    if source not in dirs:
        return None
    return MemoryConfig(use_detector=True, detector_model_dir=str(dirs[source]), detector_preset=source)


def _ask(snapshot: SceneSnapshot, question: str) -> dict:
    from ..vlm.backends.fallback import FallbackBackend
    from ..vlm.engine import QueryEngine, QueryRequest

    res = QueryEngine(FallbackBackend()).answer(QueryRequest(question), snapshot, time.monotonic() + 30.0)
    return {"question": question, "error_code": res.error_code.name, "answer": res.answer,
            "instance_ids": [int(i.instance_id) for i in res.instances]}


def footprint_m(inst: Instance) -> dict[str, float]:
    """Long side, short side (m) and area (m^2) of an instance's gravity-aligned box."""
    a, b = float(inst.box.size[0]), float(inst.box.size[1])
    return {"long_m": round(max(a, b), 3), "short_m": round(min(a, b), 3), "area_m2": round(a * b, 3)}


def real_table_footprint_m() -> dict[str, float]:
    (x0, x1), (y0, y1) = KITCHEN_TABLE_XY_M
    a, b = x1 - x0, y1 - y0
    return {"long_m": round(max(a, b), 3), "short_m": round(min(a, b), 3), "area_m2": round(a * b, 3)}


def _xy_iou_with_real_table(inst: Instance) -> float:
    """IoU of an instance's axis-aligned footprint with the real table's (both in the xy plane)."""
    (x0, x1), (y0, y1) = KITCHEN_TABLE_XY_M
    lo, hi = inst.aabb_min[:2], inst.aabb_max[:2]
    ix = max(0.0, min(hi[0], x1) - max(lo[0], x0))
    iy = max(0.0, min(hi[1], y1) - max(lo[1], y0))
    inter = ix * iy
    union = (x1 - x0) * (y1 - y0) + float(np.prod(hi - lo)) - inter
    return inter / union if union > 0 else 0.0


def best_table_segment(snapshot: SceneSnapshot) -> Optional[dict]:
    """The instance whose footprint overlaps the real table most, labelled or not: what the
    segmentation made of the table, independent of naming."""
    if not snapshot.instances:
        return None
    best = max(snapshot.instances, key=_xy_iou_with_real_table)
    return {"instance_id": int(best.instance_id), "label": best.label,
            "xy_iou_with_real": round(_xy_iou_with_real_table(best), 3), **footprint_m(best)}


def _event_counts(memory: SceneMemory) -> dict[str, int]:
    """Instance events over the run by type (create/merge/split/removed/label): ID stability."""
    out: dict[str, int] = {}
    for e in memory.events:
        out[e["type"]] = out.get(e["type"], 0) + 1
    return dict(sorted(out.items()))


def _labels(snapshot: SceneSnapshot) -> dict[str, int]:
    out: dict[str, int] = {}
    for inst in snapshot.instances:
        key = canonical_label(inst.label) or "(unlabelled)"
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def _map(source_dir: Path, cfg: MemoryConfig, use_mask: bool = True) -> tuple[SceneMemory, dict, float]:
    from .map import map_source

    t0 = time.perf_counter()
    memory, stats = map_source(source_dir, cfg, use_mask=use_mask, progress=False)
    return memory, stats, time.perf_counter() - t0


def _timing(stats: dict) -> dict[str, Any]:
    t = stats["memory"]["timings"]
    det = t.get("detector", {})
    return {"per_frame_ms_p50": _r(stats.get("per_frame_ms_p50")),
            "per_frame_ms_p95": _r(stats.get("per_frame_ms_p95")),
            "detector_ms_p50": _r(det.get("p50_ms")), "detector_runs": det.get("n", 0)}


def _r(v: Optional[float], nd: int = 1) -> Optional[float]:
    return None if v is None else round(float(v), nd)


def kitchen_row(kitchen_dir: Path, source: str, dirs: dict[str, Path]) -> dict:
    """One source on the real kitchen: the table's instance, label and footprint; chairs; answers."""
    cfg = _config(source, dirs)
    if cfg is None:
        return {"source": source, "skipped": "detector files not found (run `make setup` / see README 'Detector')"}
    memory, stats, wall_s = _map(kitchen_dir, cfg)
    snap = memory.snapshot(allow_stale=True)
    memory.close()
    answers = [_ask(snap, q) for q in QUESTIONS_KITCHEN]
    table_ids = answers[0]["instance_ids"]
    table = snap.instance(table_ids[0]) if table_ids else None
    real = real_table_footprint_m()
    row: dict[str, Any] = {"source": source, "wall_s": round(wall_s, 1), **_timing(stats),
                           "instances": len(snap.instances), "labels": _labels(snap), "answers": answers,
                           "table_segment": best_table_segment(snap), "instance_events": _event_counts(memory)}
    if table is not None:
        fp = footprint_m(table)
        row["table"] = {"instance_id": int(table.instance_id), "label": table.label, "score": round(table.score, 2),
                        **fp, "area_vs_real": round(fp["area_m2"] / real["area_m2"] - 1.0, 3),
                        "long_vs_real": round(fp["long_m"] / real["long_m"] - 1.0, 3),
                        "short_vs_real": round(fp["short_m"] / real["short_m"] - 1.0, 3)}
    chairs = [i for i in snap.instances if canonical_label(i.label) == "chair"]
    row["chairs"] = [{"instance_id": int(c.instance_id), "score": round(c.score, 2), **footprint_m(c)} for c in chairs]
    return row


def lounge_row(lounge_dir: Path, source: str, dirs: dict[str, Path]) -> dict:
    """One source on the 5 SUN3D lounge frames: is the sofa found and named."""
    cfg = _config(source, dirs)
    if cfg is None:
        return {"source": source, "skipped": "detector files not found"}
    memory, stats, wall_s = _map(lounge_dir, cfg)
    snap = memory.snapshot(allow_stale=True)
    memory.close()
    ans = _ask(snap, "where is the sofa?")
    sofas = [i for i in snap.instances if canonical_label(i.label) == "sofa"]
    return {"source": source, "wall_s": round(wall_s, 1), **_timing(stats), "instances": len(snap.instances),
            "labels": _labels(snap), "sofa_named": bool(sofas), "answer": ans,
            "sofas": [{"instance_id": int(s.instance_id), "score": round(s.score, 2), **footprint_m(s)} for s in sofas]}


def synthetic_row(bags: list[tuple[Path, Path]], source: str, dirs: dict[str, Path], use_mask: bool) -> dict:
    """Recall at IoU 0.25/0.5 and label accuracy over synthetic bags, for one instance source."""
    from ..datasets.synthetic import read_ground_truth
    from ..eval.mapping_metrics import instance_recall, match_instances

    cfg = _config(source, dirs)
    if cfg is None:
        return {"source": source, "skipped": "detector files not found"}
    recall = {0.25: [], 0.5: []}
    correct = matched = labelled = n_gt = 0
    for bag, gt_path in bags:
        memory, _, _ = _map(bag, cfg, use_mask=use_mask)
        snap = memory.snapshot(allow_stale=True)
        memory.close()
        gt, _ = read_ground_truth(gt_path)
        n_gt += len(gt)
        for t, v in instance_recall(list(snap.instances), gt).items():
            recall[t].append(v * len(gt))
        pairs = match_instances(list(snap.instances), gt, min_iou=0.25)
        by_id = {i.instance_id: i for i in snap.instances}
        for g in gt:
            if g.object_id in pairs:
                matched += 1
                lab = canonical_label(by_id[pairs[g.object_id]].label)
                labelled += bool(lab)
                correct += lab == canonical_label(g.label)
    return {"source": "mask topic" if use_mask else source, "use_mask": use_mask, "bags": len(bags),
            "gt_objects": n_gt,
            "recall_iou_0.25": round(sum(recall[0.25]) / max(1, n_gt), 3),
            "recall_iou_0.5": round(sum(recall[0.5]) / max(1, n_gt), 3),
            "label_accuracy": round(correct / max(1, matched), 3), "matched": matched, "labelled_of_matched": labelled}


def make_synthetic_bags(workdir: Path, seeds: list[int], frames: int) -> list[tuple[Path, Path]]:
    """Write one synthetic bag per seed into ``workdir``; returns ``[(bag, gt.json)]``."""
    from .make_bag import make_bag, sidecar_paths

    out = []
    for seed in seeds:
        bag = workdir / f"synthetic_seed{seed}"
        make_bag(source="synthetic", seed=seed, frames=frames, out=bag, progress=False, overwrite=True)
        out.append((bag, sidecar_paths(bag)[0]))
    return out


def bench_recognition(
    kitchen_dir: Optional[Path],
    lounge_dir: Optional[Path],
    detector_dirs: Optional[dict[str, Path]] = None,
    synthetic_seeds: tuple[int, ...] = (0, 1),
    synthetic_frames: int = 150,
    sources: tuple[str, ...] = SOURCES,
) -> dict:
    """Every row of the recognition benchmark (see the module doc) as one JSON-able dict."""
    dirs = find_detector_dirs(detector_dirs)
    out: dict[str, Any] = {"detectors": {k: str(v) for k, v in dirs.items()},
                           "real_table": {"xy_ranges_m": KITCHEN_TABLE_XY_M, **real_table_footprint_m(),
                                          "how": "hand-measured from the fused cloud, see KITCHEN_TABLE_XY_M"}}
    if kitchen_dir is not None:
        out["kitchen"] = [kitchen_row(kitchen_dir, s, dirs) for s in sources]
    if lounge_dir is not None:
        out["lounge"] = [lounge_row(lounge_dir, s, dirs) for s in sources]
    if synthetic_seeds:
        with tempfile.TemporaryDirectory(prefix="bench_recognition_") as tmp:
            bags = make_synthetic_bags(Path(tmp), list(synthetic_seeds), synthetic_frames)
            rows = [synthetic_row(bags, "geometry-only", dirs, use_mask=True)]
            rows += [synthetic_row(bags, s, dirs, use_mask=False) for s in sources]
            out["synthetic"] = rows
    return out


def main(argv: Optional[list[str]] = None) -> int:
    """Console entry: ``bench recognition [--out FILE] [--kitchen-dir D] [--lounge-dir D] [--seeds 0,1]
    [--frames N] [--sources a,b]``; prints the JSON."""
    import argparse

    from ..paths import find_shared

    ap = argparse.ArgumentParser(prog="scene-vlm bench recognition", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    ap.add_argument("--kitchen-dir", type=Path, default=None, help="default: ../shared/data/7scenes-redkitchen")
    ap.add_argument("--lounge-dir", type=Path, default=None, help="default: ../shared/data/sun3d-lounge")
    ap.add_argument("--seeds", type=str, default="0,1", help="synthetic bag seeds ('' = no synthetic rows)")
    ap.add_argument("--frames", type=int, default=150, help="frames per synthetic bag")
    ap.add_argument("--sources", type=str, default=",".join(SOURCES), help=f"subset of {','.join(SOURCES)}")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sources = tuple(s for s in args.sources.split(",") if s)
    unknown = set(sources) - set(SOURCES)
    if unknown:
        ap.error(f"unknown sources {sorted(unknown)}; use {list(SOURCES)} (presets: {sorted(PRESETS)})")
    kitchen = args.kitchen_dir or find_shared("data", "7scenes-redkitchen")
    lounge = args.lounge_dir or find_shared("data", "sun3d-lounge")
    seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
    result = bench_recognition(kitchen, lounge, synthetic_seeds=seeds, synthetic_frames=args.frames, sources=sources)
    emit_json(result, args.out, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
