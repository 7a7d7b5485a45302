"""Scoring query answers against ground truth, the way the reference evaluators do.

- Grounding (ScanRefer): Acc@0.25 / Acc@0.5 = share of questions whose chosen instance's box has
  IoU >= 0.25 / 0.5 with the target's ground-truth box.
- Multi-grounding (Multi3DRefer): F1 at an IoU threshold with one-to-one (Hungarian) matching;
  a zero-target question scores 1 only when nothing is predicted.
- Spatial / QA (SPAR): numbers by Mean Relative Accuracy over thresholds 0.50:0.05:0.95, words by
  exact match after normalisation.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

from ..core.geometry import box_iou
from ..core.types import GroundTruthObject, Instance, OrientedBox3D
from .benchmark_metrics import MRA_THRESHOLDS as MRA_THRESHOLDS  # one MRA, one F1: benchmark_metrics
from .benchmark_metrics import mean_relative_accuracy, target_f1

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def grounding_iou(instances: Sequence[Instance], target: GroundTruthObject) -> float:
    """IoU of the first predicted instance with the target (0 when nothing was predicted)."""
    if not instances:
        return 0.0
    return box_iou(instances[0].box, target.box)


def multi_grounding_f1(pred_boxes: Sequence[OrientedBox3D], gt_boxes: Sequence[OrientedBox3D],
                       threshold: float) -> float:
    """Multi3DRefer's F1 of one answer with our oriented-box IoU (see ``benchmark_metrics.target_f1``)."""
    return target_f1(pred_boxes, gt_boxes, (threshold,), iou=box_iou)[float(threshold)]


def first_number(text: str) -> Optional[float]:
    m = _NUMBER.search(text.replace(",", ""))
    return float(m.group()) if m else None


def normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()


def score_answer(record: dict[str, Any], answer_text: str, instances: Sequence[Instance],
                 gt_by_id: dict[int, GroundTruthObject]) -> dict[str, float]:
    """Scores of one answered question record (``X.queries.json`` schema)."""
    task = record["task"]
    targets = [gt_by_id[t] for t in record.get("target_ids", []) if t in gt_by_id]
    if task == "grounding":
        iou = grounding_iou(instances, targets[0]) if targets else 0.0
        return {"iou": iou, "acc@0.25": float(iou >= 0.25), "acc@0.5": float(iou >= 0.5)}
    if task == "multi_grounding":
        pred = [i.box for i in instances]
        gt = [t.box for t in targets]
        return {"f1@0.25": multi_grounding_f1(pred, gt, 0.25), "f1@0.5": multi_grounding_f1(pred, gt, 0.5)}
    value = record.get("value")
    if value is not None:
        got = first_number(answer_text)
        return {"mra": mean_relative_accuracy(got, float(value)) if got is not None else 0.0}
    expected = normalise(str(record.get("answer", "")))
    got = normalise(answer_text)
    return {"exact": float(bool(expected) and (got == expected or got.startswith(expected + " ")))}


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean of each score per task, with counts."""
    by_task: dict[str, list[dict[str, float]]] = defaultdict(list)
    for row in rows:
        by_task[row["task"]].append(row["scores"])
    out: dict[str, dict[str, float]] = {}
    for task, scores in sorted(by_task.items()):
        keys = sorted({k for s in scores for k in s})
        out[task] = {k: float(np.mean([s[k] for s in scores if k in s])) for k in keys}
        out[task]["n"] = float(len(scores))
    return out
