"""Metrics of the scene memory's instances against ground-truth objects (world frame, metres).

- :func:`instance_recall`: share of ground-truth objects matched one-to-one (Hungarian on box
  IoU) by an instance whose box reaches each IoU threshold;
- :func:`oracle_ceiling`: share of ground-truth objects whose *best* instance box (no one-to-one
  constraint) reaches each threshold, i.e. the grounding accuracy an oracle picking the right ID
  would get: no VLM can do better than this on top of the map;
- :func:`id_switches`: how often the instance matched to a ground-truth object changes ID over a
  sequence of snapshots.
IoU is :func:`scene_vlm_ros.core.geometry.box_iou` (gravity-aligned yawed boxes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..core.geometry import box_iou
from ..core.types import GroundTruthObject, Instance


def iou_matrix(instances: Sequence[Instance], gt_objects: Sequence[GroundTruthObject]) -> np.ndarray:
    """(n_gt, n_instances) box IoU matrix."""
    m = np.zeros((len(gt_objects), len(instances)))
    for i, gt in enumerate(gt_objects):
        gbox = gt.box
        for j, inst in enumerate(instances):
            m[i, j] = box_iou(gbox, inst.box)
    return m


def match_instances(
    instances: Sequence[Instance], gt_objects: Sequence[GroundTruthObject], min_iou: float = 0.25
) -> dict[int, int]:
    """One-to-one matching (Hungarian, maximising IoU): ``{gt object_id: instance_id}`` for pairs
    with IoU >= ``min_iou``."""
    if not instances or not gt_objects:
        return {}
    m = iou_matrix(instances, gt_objects)
    rows, cols = linear_sum_assignment(-m)
    return {
        gt_objects[r].object_id: instances[c].instance_id for r, c in zip(rows, cols) if m[r, c] >= min_iou
    }


def instance_recall(
    instances: Sequence[Instance], gt_objects: Sequence[GroundTruthObject], thresholds: Sequence[float] = (0.25, 0.5)
) -> dict[float, float]:
    """``{threshold: recall}``: share of ground-truth objects with a one-to-one matched instance
    of box IoU >= threshold. Raises ``ValueError`` when there are no ground-truth objects."""
    if not gt_objects:
        raise ValueError("instance_recall needs at least one ground-truth object")
    if not instances:
        return {float(t): 0.0 for t in thresholds}
    m = iou_matrix(instances, gt_objects)
    rows, cols = linear_sum_assignment(-m)
    matched = m[rows, cols]
    return {float(t): float(np.sum(matched >= t)) / len(gt_objects) for t in thresholds}


def oracle_ceiling(
    instances: Sequence[Instance], gt_objects: Sequence[GroundTruthObject], thresholds: Sequence[float] = (0.25, 0.5)
) -> dict[float, float]:
    """``{threshold: share}`` of ground-truth objects whose best-IoU instance reaches the threshold."""
    if not gt_objects:
        raise ValueError("oracle_ceiling needs at least one ground-truth object")
    if not instances:
        return {float(t): 0.0 for t in thresholds}
    best = iou_matrix(instances, gt_objects).max(axis=1)
    return {float(t): float(np.mean(best >= t)) for t in thresholds}


def id_switches(history: Sequence[Mapping[int, int]]) -> int:
    """Number of ID switches in a sequence of matchings ``{gt object_id: instance_id}`` (one per
    evaluated snapshot, in time order, e.g. from :func:`match_instances`).

    A switch is counted when a ground-truth object is matched to a different instance ID than the
    last time it was matched (being unmatched in between is not a switch by itself).
    """
    last: dict[int, int] = {}
    switches = 0
    for matching in history:
        for gt_id, inst_id in matching.items():
            if gt_id in last and last[gt_id] != inst_id:
                switches += 1
            last[gt_id] = inst_id
    return switches
