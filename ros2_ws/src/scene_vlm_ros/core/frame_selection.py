"""Choosing which keyframes go into a prompt: cover every instance, spread the viewpoints.

GPT4Scene samples frames uniformly from a scan video; a robot's keyframe store is irregular (it
lingers in some places), so uniform sampling wastes the frame budget. Instead a weighted greedy set
cover over "which instances each keyframe sees" (the same depth-tested visibility that places the
markers, :func:`scene_vlm_ros.core.markers.visibility_matrix`) picks frames, with a small pose
diversity bonus that decides ties and fills the budget once everything is covered. Instances named
as candidates for a question weigh more, so their frames come first. Deterministic: no randomness,
ties go to the lower keyframe id.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np

from .markers import FrameVisibility, InstanceSamples, visibility_matrix
from .types import SceneSnapshot

logger = logging.getLogger(__name__)

#: Frames in a prompt by default; GPT4Scene's released model uses 32.
DEFAULT_N_FRAMES = 8
GPT4SCENE_N_FRAMES = 32
#: Weight of an instance named as a candidate for the question (others weigh 1).
CANDIDATE_WEIGHT = 4.0
#: Metres of camera translation that count as much as one radian of viewing-direction change.
ANGLE_WEIGHT_M_PER_RAD = 0.5
#: Weight of the diversity term relative to one fully covered instance.
DIVERSITY_WEIGHT = 0.25


def _pose_distances(T: np.ndarray) -> np.ndarray:
    """(K, K) pose distance: translation (m) + ANGLE_WEIGHT * angle between optical axes (rad)."""
    t = T[:, :3, 3]
    z = T[:, :3, 2]
    dt = np.linalg.norm(t[:, None, :] - t[None, :, :], axis=-1)
    cosang = np.clip(z @ z.T, -1.0, 1.0)
    return dt + ANGLE_WEIGHT_M_PER_RAD * np.arccos(cosang)


def select_frames(
    snapshot: SceneSnapshot,
    n: int = DEFAULT_N_FRAMES,
    candidate_ids: Iterable[int] | None = None,
    samples: InstanceSamples | None = None,
    visibility_cache: dict[int, FrameVisibility] | None = None,
) -> list[int]:
    """Pick up to ``n`` keyframe ids for a prompt, returned in temporal (stamp, then id) order.

    Greedy: each step takes the keyframe with the largest gain
    ``sum_i w_i * (min(1, c_i + q_ki) - c_i) + DIVERSITY_WEIGHT * d_k / d_max`` where ``q_ki`` is how
    well keyframe k shows instance i (visible fraction, saturating at 0.5, 0 when not visible),
    ``c_i`` the coverage gathered so far, ``w_i`` 1 or :data:`CANDIDATE_WEIGHT` for ``candidate_ids``,
    and ``d_k`` the pose distance to the nearest chosen keyframe. With ``n >= len(keyframes)``
    all keyframes are returned. ``samples``/``visibility_cache`` let a caller share the per-frame
    visibility tests with marker drawing (see :func:`~scene_vlm_ros.core.markers.visibility_matrix`).
    """
    if int(n) < 1:
        raise ValueError(f"n must be >= 1 frames, got {n}")
    n = int(n)
    kfs = sorted(snapshot.keyframes, key=lambda k: (k.stamp_s, k.keyframe_id))
    if not kfs:
        return []
    if n >= len(kfs):
        return [k.keyframe_id for k in kfs]

    kf_ids, inst_ids, visible, frac = visibility_matrix(snapshot, samples=samples, cache=visibility_cache)
    order = {kid: j for j, kid in enumerate(kf_ids.tolist())}
    rows = np.array([order[k.keyframe_id] for k in kfs])
    visible, frac = visible[rows], frac[rows]
    ids_sorted = np.array([k.keyframe_id for k in kfs])
    quality = np.where(visible, np.minimum(1.0, frac / 0.5), 0.0)  # (K, I)

    weights = np.ones(len(inst_ids))
    if candidate_ids is not None:
        cand = set(int(c) for c in candidate_ids)
        unknown = cand - set(inst_ids.tolist())
        if unknown:
            logger.debug("select_frames: candidate ids %s are not instances of the snapshot", sorted(unknown))
        weights[np.isin(inst_ids, list(cand))] = CANDIDATE_WEIGHT

    dist = _pose_distances(np.stack([k.T_world_camera for k in kfs]))
    d_max = max(float(dist.max()), 1e-9)
    coverage = np.zeros(len(inst_ids))
    chosen: list[int] = []
    available = np.ones(len(kfs), dtype=bool)
    for _ in range(n):
        cover_gain = ((np.minimum(1.0, coverage[None, :] + quality) - coverage[None, :]) * weights).sum(axis=1)
        if chosen:
            diversity = dist[:, chosen].min(axis=1) / d_max
        else:
            diversity = np.zeros(len(kfs))
        gain = np.where(available, cover_gain + DIVERSITY_WEIGHT * diversity, -np.inf)
        j = int(np.argmax(gain))  # argmax returns the first maximum: ties go to the earlier keyframe
        chosen.append(j)
        available[j] = False
        coverage = np.minimum(1.0, coverage + quality[j])
    return [int(ids_sorted[j]) for j in sorted(chosen)]


def instances_seen(
    snapshot: SceneSnapshot, keyframe_ids: Iterable[int], samples: InstanceSamples | None = None
) -> set[int]:
    """Instance ids visible (depth-tested) in at least one of ``keyframe_ids``."""
    kf_ids, inst_ids, visible, _ = visibility_matrix(snapshot, samples=samples)
    rows = np.isin(kf_ids, list(keyframe_ids))
    return set(inst_ids[visible[rows].any(axis=0)].tolist()) if rows.any() else set()
