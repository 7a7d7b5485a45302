"""Frame selection: instance coverage, candidate bias, pose diversity, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from scene_vlm_ros.commands.bench_prompt import build_box_scene, look_at
from scene_vlm_ros.core.frame_selection import instances_seen, select_frames
from scene_vlm_ros.core.types import CameraIntrinsics, Keyframe, SceneSnapshot

BOX_ID, SIDE_KF = 4, 3  # the yellow box is visible only from keyframe 3 of the box room


@pytest.fixture(scope="module")
def room() -> SceneSnapshot:
    return build_box_scene(n_orbit_keyframes=8)


def test_covers_every_instance_seen_anywhere(room):
    all_ids = [k.keyframe_id for k in room.keyframes]
    everything = instances_seen(room, all_ids)
    assert BOX_ID in everything and len(everything) == len(room.instances)
    only_side = [k for k in all_ids if BOX_ID in instances_seen(room, [k])]
    assert only_side == [SIDE_KF], "setup: one keyframe alone sees the box"
    for n in (2, 3, 8):
        chosen = select_frames(room, n=n)
        assert len(chosen) == n and len(set(chosen)) == n
        assert instances_seen(room, chosen) == everything, f"n={n}: {chosen}"
        assert chosen == sorted(chosen, key=lambda k: room.keyframe(k).stamp_s), "temporal order"


def test_prefers_frames_with_candidates(room):
    plain = select_frames(room, n=1)
    assert plain != [SIDE_KF]
    assert select_frames(room, n=1, candidate_ids=[BOX_ID]) == [SIDE_KF]
    assert SIDE_KF in select_frames(room, n=2, candidate_ids=[BOX_ID, 999])  # unknown ids are ignored


def test_deterministic_and_small_cases(room):
    assert select_frames(room, n=5) == select_frames(room, n=5)
    n_kf = len(room.keyframes)
    assert select_frames(room, n=n_kf + 3) == [k.keyframe_id for k in room.keyframes]
    with pytest.raises(ValueError, match="n must be"):
        select_frames(room, n=0)
    empty = SceneSnapshot(0.0, "map", np.zeros((0, 3)), np.zeros((0, 3)))
    assert select_frames(empty, n=4) == []


def test_view_diversity_spreads_frames_without_objects():
    intr = CameraIntrinsics(32, 24, 20.0, 20.0, 15.5, 11.5)
    kfs = []
    for k in range(10):
        T = look_at(np.array([float(k), 0.0, 1.0]), np.array([float(k), 5.0, 1.0]))
        kfs.append(Keyframe(k, float(k), np.zeros((24, 32, 3), np.uint8), np.ones((24, 32), np.float32), intr, T))
    snap = SceneSnapshot(0.0, "map", np.zeros((0, 3)), np.zeros((0, 3)), keyframes=tuple(kfs))
    chosen = select_frames(snap, n=3)
    assert chosen[0] == 0 and chosen[-1] == 9 and chosen[1] in (4, 5), chosen
