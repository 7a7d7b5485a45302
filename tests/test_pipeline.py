"""Unit tests of :mod:`scene_vlm_ros.core.pipeline`: streams -> posed RGB-D frames."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp

from scene_vlm_ros.core.geometry import R_LINK_OPTICAL, make_transform
from scene_vlm_ros.core.pipeline import FramePipeline, PipelineConfig
from scene_vlm_ros.core.types import CameraIntrinsics

H, W = 6, 8
INTR = CameraIntrinsics(W, H, 10.0, 10.0, 4.0, 3.0)
# base_link -> camera optical frame: 0.2 m forward, 1.1 m up, optical axes.
T_BASE_CAMERA = make_transform(R_LINK_OPTICAL, [0.2, 0.0, 1.1])


def _odom(t: float) -> np.ndarray:
    """A robot driving and turning: T_odom_base at time t (s)."""
    return make_transform(Rotation.from_euler("z", 0.8 * t).as_matrix(), [0.5 * t, 0.1 * t * t, 0.0])


def _expected_T_world_camera(t: float, t0: float, t1: float) -> np.ndarray:  # noqa: N802
    """Reference: odometry interpolated at t (scipy slerp + lerp) composed with the extrinsic."""
    T0, T1 = _odom(t0), _odom(t1)  # noqa: N806
    alpha = (t - t0) / (t1 - t0)
    R = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([T0[:3, :3], T1[:3, :3]])))([alpha]).as_matrix()[0]
    return make_transform(R, (1 - alpha) * T0[:3, 3] + alpha * T1[:3, 3]) @ T_BASE_CAMERA


def _color(v: int) -> np.ndarray:
    return np.full((H, W, 3), v, np.uint8)


def _depth(v: float) -> np.ndarray:
    return np.full((H, W), v, np.float32)


def _mask(v: int) -> np.ndarray:
    return np.full((H, W), v, np.uint16)


def _pipeline(**cfg) -> FramePipeline:
    p = FramePipeline(T_BASE_CAMERA, PipelineConfig(**cfg))
    p.set_intrinsics(INTR)
    return p


def test_frames_get_pose_interpolated_at_image_stamp():
    p = _pipeline()
    for t in (0.0, 0.1, 0.2):
        assert p.add_odometry(t, _odom(t)) == []
    out = p.add_image("color", 0.137, _color(7))
    out += p.add_image("depth", 0.137, _depth(1.5))
    assert len(out) == 1
    f = out[0]
    assert f.stamp_s == pytest.approx(0.137)
    assert f.intrinsics == INTR
    assert f.frame_index == 0
    assert f.instance_mask is None and f.instance_labels is None
    np.testing.assert_array_equal(f.color_rgb, _color(7))
    np.testing.assert_array_equal(f.depth_m, _depth(1.5))
    np.testing.assert_allclose(f.T_world_camera, _expected_T_world_camera(0.137, 0.1, 0.2), atol=1e-9)
    # Not the latest odometry: the image stamp decides.
    assert not np.allclose(f.T_world_camera, _odom(0.2) @ T_BASE_CAMERA, atol=1e-3)


def test_frame_waits_for_odometry_then_is_released():
    p = _pipeline()
    p.add_odometry(0.0, _odom(0.0))
    p.add_odometry(0.1, _odom(0.1))
    p.add_image("color", 0.15, _color(1))
    assert p.add_image("depth", 0.15, _depth(1.0)) == []  # odometry has not reached 0.15 yet
    assert p.stats()["waiting_for_pose"] == 1
    out = p.add_odometry(0.2, _odom(0.2))
    assert len(out) == 1
    np.testing.assert_allclose(out[0].T_world_camera, _expected_T_world_camera(0.15, 0.1, 0.2), atol=1e-9)
    s = p.stats()
    assert s["waiting_for_pose"] == 0 and s["frames_out"] == 1


def test_frame_indices_increase_and_order_is_kept():
    p = _pipeline()
    p.add_odometry(0.0, _odom(0.0))
    stamps = [0.07, 0.10, 0.13, 0.16]  # all beyond the single-pose extrapolation tolerance
    for i, t in enumerate(stamps):
        p.add_image("color", t, _color(i))
        assert p.add_image("depth", t, _depth(1.0 + i)) == []
    out = p.add_odometry(0.2, _odom(0.2))
    assert [f.frame_index for f in out] == [0, 1, 2, 3]
    assert [f.stamp_s for f in out] == pytest.approx(stamps)
    assert [int(f.color_rgb[0, 0, 0]) for f in out] == [0, 1, 2, 3]


def test_mask_becomes_part_of_frames_once_seen_with_labels():
    p = _pipeline()
    for t in np.arange(0.0, 1.01, 0.1):
        p.add_odometry(float(t), _odom(float(t)))
    # Before any mask: colour + depth make a frame.
    out = p.add_image("color", 0.1, _color(1)) + p.add_image("depth", 0.1, _depth(1.0))
    assert len(out) == 1 and out[0].instance_mask is None
    assert p.stats()["mask_seen"] is False

    p.set_labels({3: "chair", 5: "table"})
    assert p.add_image("mask", 0.2, _mask(3)) == []
    assert p.stats()["mask_seen"] is True
    out = p.add_image("color", 0.2, _color(2)) + p.add_image("depth", 0.2, _depth(2.0))
    assert len(out) == 1
    f = out[0]
    np.testing.assert_array_equal(f.instance_mask, _mask(3))
    assert f.instance_labels == {3: "chair", 5: "table"}

    # From now on a frame needs its mask: colour + depth alone wait for it.
    assert p.add_image("color", 0.3, _color(3)) + p.add_image("depth", 0.3, _depth(3.0)) == []
    out = p.add_image("mask", 0.3, _mask(5))
    assert len(out) == 1 and int(out[0].instance_mask[0, 0]) == 5
    # Labels are a copy: later edits of the table do not rewrite delivered frames.
    p.set_labels({9: "lamp"})
    assert f.instance_labels == {3: "chair", 5: "table"}


def test_first_mask_does_not_lose_messages_already_queued():
    """Colour arrives, then the very first mask, then depth: the frame must still be made (with its mask)."""
    p = _pipeline()
    for t in (0.0, 0.5, 1.0):
        p.add_odometry(t, _odom(t))
    assert p.add_image("color", 0.3, _color(4)) == []
    assert p.add_image("mask", 0.3, _mask(2)) == []
    out = p.add_image("depth", 0.3, _depth(1.0))
    assert len(out) == 1
    np.testing.assert_array_equal(out[0].color_rgb, _color(4))
    np.testing.assert_array_equal(out[0].instance_mask, _mask(2))


def test_mask_ignored_when_disabled():
    p = _pipeline(use_instance_mask=False)
    p.add_odometry(0.0, _odom(0.0))
    p.add_odometry(1.0, _odom(1.0))
    assert p.add_image("mask", 0.5, _mask(1)) == []
    out = p.add_image("color", 0.5, _color(1)) + p.add_image("depth", 0.5, _depth(1.0))
    assert len(out) == 1 and out[0].instance_mask is None
    assert p.stats()["mask_seen"] is False
    assert p.stats()["received"]["mask"] == 1


def test_frames_wait_for_camera_info_then_drop_as_no_camera_info():
    p = FramePipeline(T_BASE_CAMERA, PipelineConfig(pose_max_wait_s=0.25))
    p.add_odometry(0.0, _odom(0.0))
    p.add_odometry(1.0, _odom(1.0))
    for t in (0.1, 0.2, 0.3, 0.4):
        assert p.add_image("color", t, _color(1)) + p.add_image("depth", t, _depth(1.0)) == []
    s = p.stats()
    # Frames more than pose_max_wait_s older than the newest image gave up waiting for calibration.
    assert s["dropped"]["no_camera_info"] == 1 and s["waiting_for_pose"] == 3
    # Camera info arrives (after its images, as drivers often publish it): the waiting frames go out.
    p.set_intrinsics(INTR)
    out = p.add_image("color", 0.5, _color(1)) + p.add_image("depth", 0.5, _depth(1.0))
    assert [f.stamp_s for f in out] == pytest.approx([0.2, 0.3, 0.4, 0.5])


def test_odometry_that_never_catches_up_drops_no_pose():
    p = _pipeline(pose_max_wait_s=0.45, pending_max=100)
    p.add_odometry(0.0, _odom(0.0))
    p.add_odometry(0.1, _odom(0.1))  # odometry stops here
    stamps = [0.205 + 0.1 * i for i in range(9)]  # 0.205 .. 1.005
    for t in stamps:
        assert p.add_image("color", t, _color(1)) + p.add_image("depth", t, _depth(1.0)) == []
    s = p.stats()
    # Frames more than 0.45 s older than the newest image (1.005) are given up: 0.205 .. 0.505.
    assert s["dropped"]["no_pose"] == 4
    assert s["waiting_for_pose"] == 5
    # Odometry resumes: the frames still waiting are released with their own poses.
    out = p.add_odometry(1.1, _odom(1.1))
    assert [f.stamp_s for f in out] == pytest.approx(stamps[4:])
    np.testing.assert_allclose(out[0].T_world_camera, _expected_T_world_camera(stamps[4], 0.1, 1.1), atol=1e-9)


def test_image_before_oldest_odometry_is_pose_too_old():
    p = _pipeline()
    p.add_odometry(5.0, _odom(5.0))
    p.add_odometry(5.1, _odom(5.1))
    assert p.add_image("color", 1.0, _color(1)) + p.add_image("depth", 1.0, _depth(1.0)) == []
    assert p.stats()["dropped"]["pose_too_old"] == 1
    assert p.stats()["waiting_for_pose"] == 0


def test_invalid_odometry_is_counted_and_ignored():
    p = _pipeline()
    bad = _odom(0.0)
    bad[0, 3] = np.nan
    assert p.add_odometry(0.0, bad) == []
    assert p.stats()["dropped"]["invalid_odom"] == 1
    assert len(p.poses) == 0


def test_bounded_waiting_queue_counts_overflow():
    p = _pipeline(pending_max=2, pose_max_wait_s=10.0)
    p.add_odometry(0.0, _odom(0.0))
    stamps = [0.1, 0.2, 0.3, 0.4, 0.5]
    for t in stamps:
        assert p.add_image("color", t, _color(1)) + p.add_image("depth", t, _depth(1.0)) == []
    s = p.stats()
    assert s["dropped"]["pose_queue_overflow"] == 3
    assert s["waiting_for_pose"] == 2
    out = p.add_odometry(1.0, _odom(1.0))
    assert [f.stamp_s for f in out] == pytest.approx([0.4, 0.5])  # the newest were kept


def test_stats_counts_everything():
    p = _pipeline(slop_s=0.01)
    p.add_odometry(0.0, _odom(0.0))
    p.add_odometry(1.0, _odom(1.0))
    p.add_image("color", 0.1, _color(1))
    p.add_image("depth", 0.1, _depth(1.0))  # frame
    p.add_image("depth", 0.2, _depth(1.0))  # no colour near 0.2 ...
    p.add_image("color", 0.3, _color(1))  # ... and colour moved past: sync_no_match
    p.add_image("mask", 0.4, _mask(1))  # switches to 3 streams; earlier sync counts are kept
    p.add_image("depth", 0.5, _depth(1.0))
    p.add_image("mask", 0.6, _mask(1))  # mask moved past depth 0.5: another sync_no_match
    s = p.stats()
    assert s["received"] == {"odom": 2, "color": 2, "depth": 3, "mask": 2}
    assert s["dropped"]["sync_no_match"] == 2
    assert s["frames_out"] == 1
    assert s["waiting_for_pose"] == 0
    assert s["mask_seen"] is True


def test_require_mask_makes_the_first_frames_wait_for_their_masks():
    """The node knows a mask publisher exists before the first mask arrives: no early frame is made
    without its mask (those would fuse as geometry-only instances)."""
    p = _pipeline()
    for t in (0.0, 0.5, 1.0):
        p.add_odometry(t, _odom(t))
    p.add_image("color", 0.1, _color(1))
    assert p.require_mask() == []
    assert p.add_image("depth", 0.1, _depth(1.0)) == []  # waits for the mask now
    out = p.add_image("mask", 0.1, _mask(4))
    assert len(out) == 1 and int(out[0].instance_mask[0, 0]) == 4
    assert p.require_mask() == []  # idempotent
    assert _pipeline(use_instance_mask=False).require_mask() == []
