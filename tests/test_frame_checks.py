"""Bad frames are rejected with stable, counted reasons and never corrupt the memory."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from scene_vlm_ros.core.frame_checks import check_frame_content, check_frame_sequence
from scene_vlm_ros.core.memory import MemoryConfig, SceneMemory
from scene_vlm_ros.core.types import CameraIntrinsics
from tests.test_fusion import RoomRenderer, orbit_frames


@pytest.fixture(scope="module")
def frames():
    return orbit_frames(RoomRenderer(), 24)


def _bad_variants(good):
    """(reason, frame) pairs, each broken in one way."""
    out = []
    d = good.depth_m.copy()
    d[:] = np.nan
    out.append(("depth_all_invalid", dataclasses.replace(good, depth_m=d)))
    out.append(("depth_all_invalid", dataclasses.replace(good, depth_m=np.zeros_like(good.depth_m))))
    d = good.depth_m.copy()
    d[:] = np.inf
    out.append(("depth_all_invalid", dataclasses.replace(good, depth_m=d)))
    d = good.depth_m.copy()
    d[10, 10] = -1.0
    out.append(("depth_negative", dataclasses.replace(good, depth_m=d)))
    intr = good.intrinsics
    out.append(("size_mismatch", dataclasses.replace(
        good, intrinsics=CameraIntrinsics(intr.width * 2, intr.height * 2, intr.fx, intr.fy, intr.cx, intr.cy))))
    out.append(("size_mismatch", dataclasses.replace(good, color_rgb=good.color_rgb[:-4])))
    T = good.T_world_camera.copy()
    T[0, 3] = np.nan
    out.append(("pose_invalid", dataclasses.replace(good, T_world_camera=T)))
    T = good.T_world_camera.copy()
    T[:3, :3] *= 1.5
    out.append(("pose_invalid", dataclasses.replace(good, T_world_camera=T)))
    return out


def test_content_checks_name_each_defect(frames):
    good = frames[0]
    assert check_frame_content(good) is None
    for reason, bad in _bad_variants(good):
        assert check_frame_content(bad) == reason


def test_isolated_nan_pixels_are_not_a_rejection(frames):
    d = frames[0].depth_m.copy()
    d[::7, ::5] = np.nan
    assert check_frame_content(dataclasses.replace(frames[0], depth_m=d)) is None


def test_sequence_checks():
    f = orbit_frames(RoomRenderer(), 2)[1]
    T = f.T_world_camera
    assert check_frame_sequence(f, f.stamp_s - 0.1, T, 2.0, 2.0) is None
    assert check_frame_sequence(f, f.stamp_s + 0.5, T, 2.0, 2.0) == "stamp_backwards"
    far = T.copy()
    far[0, 3] += 5.0
    assert check_frame_sequence(f, f.stamp_s - 0.1, far, 2.0, 2.0) == "pose_jump"
    # Long pauses allow proportionally longer moves (robot drove while the camera was off).
    assert check_frame_sequence(f, f.stamp_s - 10.0, far, 2.0, 2.0) is None


def test_memory_counts_rejections_and_stays_intact(frames):
    mem = SceneMemory(MemoryConfig(use_geometry=False, voxel_size_m=0.05))
    assert mem.integrate(frames[0]).accepted
    assert mem.integrate(frames[1]).accepted
    snap_before = mem.snapshot(refresh=True)
    blocks_before = mem.stats()["blocks"]
    expected: dict[str, int] = {}
    for reason, bad in _bad_variants(frames[2]):
        res = mem.integrate(bad)
        assert not res.accepted and res.reason == reason
        expected[reason] = expected.get(reason, 0) + 1
    backwards = dataclasses.replace(frames[2], stamp_s=frames[0].stamp_s - 1.0)
    assert mem.integrate(backwards).reason == "stamp_backwards"
    T = frames[2].T_world_camera.copy()
    T[:3, 3] += [6.0, 0.0, 0.0]
    assert mem.integrate(dataclasses.replace(frames[2], T_world_camera=T)).reason == "pose_jump"
    expected.update({"stamp_backwards": 1, "pose_jump": 1})
    stats = mem.stats()
    assert stats["frames_rejected"] == expected
    assert stats["frames_integrated"] == 2
    assert stats["blocks"] == blocks_before
    snap_after = mem.snapshot(refresh=True)
    # Extraction order follows the hash map, so compare the clouds as sorted sets.
    a, b = snap_after.points, snap_before.points
    np.testing.assert_array_equal(a[np.lexsort(a.T)], b[np.lexsort(b.T)])
    # The next good frame integrates normally.
    res = mem.integrate(frames[2])
    assert res.accepted and res.reason is None
    assert mem.stats()["frames_integrated"] == 3


def test_persistent_pose_jump_is_taken_as_relocalisation(frames):
    mem = SceneMemory(MemoryConfig(use_geometry=False, relocalize_after_n_jumps=3))
    assert mem.integrate(frames[0]).accepted
    results = []
    for i in range(5):
        T = frames[0].T_world_camera.copy()
        T[0, 3] += 10.0
        results.append(mem.integrate(dataclasses.replace(frames[0], stamp_s=0.01 * (i + 1), T_world_camera=T)))
    assert [r.accepted for r in results] == [False, False, False, True, True]
