"""Unit tests of :mod:`scene_vlm_ros.core.sync`: approximate time sync and pose interpolation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp

from scene_vlm_ros.core.geometry import make_transform
from scene_vlm_ros.core.sync import ApproximateTimeSync, PoseBuffer, interpolate_pose


# ----------------------------------------------------------------------------- ApproximateTimeSync
def _sync(slop: float = 0.02, queue_size: int = 10, streams=("color", "depth")) -> ApproximateTimeSync:
    return ApproximateTimeSync(list(streams), "depth", slop_s=slop, queue_size=queue_size)


def test_sync_rejects_bad_config():
    with pytest.raises(ValueError, match="reference"):
        ApproximateTimeSync(["color", "depth"], "mask")
    with pytest.raises(ValueError):
        ApproximateTimeSync(["color", "depth"], "depth", slop_s=0.0)
    with pytest.raises(ValueError):
        ApproximateTimeSync(["color", "depth"], "depth", queue_size=0)


def test_sync_matches_within_slop_and_returns_values():
    s = _sync(slop=0.02)
    assert s.add("color", 1.000, "c1") == []
    out = s.add("depth", 1.015, "d1")
    assert len(out) == 1
    m = out[0]
    assert m["depth"].stamp_s == pytest.approx(1.015) and m["depth"].value == "d1"
    assert m["color"].stamp_s == pytest.approx(1.000) and m["color"].value == "c1"
    assert s.matched == 1
    assert s.pending() == {"color": 0, "depth": 0}
    assert sum(s.dropped.values()) == 0


def test_sync_waits_while_a_match_may_still_arrive():
    s = _sync(slop=0.02)
    # Reference first, partner later: must wait, then match.
    assert s.add("depth", 2.0, "d") == []
    assert s.pending() == {"color": 0, "depth": 1}
    # A colour message that is too early but not past the reference yet keeps it waiting.
    assert s.add("color", 1.95, "early") == []
    assert s.pending()["depth"] == 1
    assert s.dropped["sync_no_match"] == 0
    out = s.add("color", 2.01, "c")
    assert len(out) == 1 and out[0]["color"].value == "c" and out[0]["depth"].value == "d"
    # The too-early colour message was consumed along with the used one.
    assert s.pending() == {"color": 0, "depth": 0}


def test_sync_picks_nearest_partner():
    s = _sync(slop=0.05)
    s.add("color", 0.96, "far")
    s.add("color", 0.99, "near")
    s.add("color", 1.04, "later")
    out = s.add("depth", 1.0, "d")
    assert len(out) == 1 and out[0]["color"].value == "near"
    # Consumed up to and including the used message; the later one is kept for the next reference.
    assert s.pending() == {"color": 1, "depth": 0}
    out = s.add("depth", 1.033, "d2")
    assert len(out) == 1 and out[0]["color"].value == "later"


def test_sync_drops_and_counts_unmatched_reference():
    s = _sync(slop=0.02)
    s.add("color", 1.0, "c1")
    assert s.add("depth", 1.05, "d_lonely") == []  # colour 1.0 too far, but a later one may come
    assert s.dropped["sync_no_match"] == 0
    # Colour moves past the reference by more than slop: the reference can never match now.
    assert s.add("color", 1.10, "c2") == []
    assert s.dropped["sync_no_match"] == 1
    assert s.pending()["depth"] == 0
    # The stream keeps working afterwards.
    out = s.add("depth", 1.105, "d2")
    assert len(out) == 1 and out[0]["color"].value == "c2" and out[0]["depth"].value == "d2"
    assert s.matched == 1


def test_sync_missing_partner_frame_is_dropped_not_mismatched():
    """A lost colour message must not pair its depth with the neighbouring colour frame."""
    s = _sync(slop=0.01)
    period = 1 / 30
    matched = []
    for i in range(10):
        t = 100.0 + i * period
        if i != 4:
            matched += s.add("color", t, i)
        matched += s.add("depth", t, i)
    assert [m["depth"].value for m in matched] == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert all(m["color"].value == m["depth"].value for m in matched)
    assert s.dropped["sync_no_match"] == 1


def test_sync_queue_overflow_is_counted():
    s = _sync(queue_size=3)
    for i in range(5):
        assert s.add("depth", float(i), i) == []
    assert s.pending()["depth"] == 3
    assert s.dropped["depth_queue_overflow"] == 2
    # The oldest were dropped: the kept references are 2, 3, 4.
    out = s.add("color", 2.0, "c")
    assert [m["depth"].value for m in out] == [2]
    for i in range(6):
        s.add("color", 10.0 + i, i)
    assert s.dropped["color_queue_overflow"] >= 1
    assert s.pending()["color"] <= 3


def test_sync_out_of_order_arrival_is_sorted():
    s = _sync(slop=0.01)
    assert s.add("color", 1.0, "c1.0") == []
    assert s.add("color", 1.2, "c1.2") == []
    assert s.add("color", 1.1, "c1.1") == []  # late
    out = []
    for t in (1.0, 1.1, 1.2):
        out += s.add("depth", t, f"d{t}")
    assert [(m["depth"].value, m["color"].value) for m in out] == [
        ("d1.0", "c1.0"), ("d1.1", "c1.1"), ("d1.2", "c1.2")
    ]
    assert sum(s.dropped.values()) == 0


def test_sync_out_of_order_reference_matches_oldest_first():
    s = _sync(slop=0.01)
    s.add("depth", 2.2, "d2.2")
    s.add("depth", 2.1, "d2.1")  # late reference
    out = s.add("color", 2.1, "c2.1")
    assert [m["depth"].value for m in out] == ["d2.1"]
    out = s.add("color", 2.2, "c2.2")
    assert [m["depth"].value for m in out] == ["d2.2"]


def test_sync_three_streams_need_all_partners():
    s = _sync(slop=0.02, streams=("color", "depth", "mask"))
    assert s.add("color", 5.0, "c") == []
    assert s.add("depth", 5.005, "d") == []  # mask still missing: wait
    assert s.pending() == {"color": 1, "depth": 1, "mask": 0}
    out = s.add("mask", 5.01, "m")
    assert len(out) == 1 and {k: v.value for k, v in out[0].items()} == {"color": "c", "depth": "d", "mask": "m"}

    # Mask stream moved past the reference while colour matched: drop.
    s.add("color", 6.0, "c6")
    s.add("depth", 6.0, "d6")
    assert s.add("mask", 6.5, "m6.5") == []
    assert s.dropped["sync_no_match"] == 1
    assert s.pending()["depth"] == 0

    # Colour waits (may still arrive) but mask has moved past: still a drop (no stall).
    s2 = _sync(slop=0.02, streams=("color", "depth", "mask"))
    s2.add("mask", 7.5, "m")
    assert s2.add("depth", 7.0, "d") == []
    assert s2.dropped["sync_no_match"] == 1


# ----------------------------------------------------------------------------- interpolate_pose
def _pose(rotvec, t) -> np.ndarray:
    return make_transform(Rotation.from_rotvec(rotvec).as_matrix(), np.asarray(t, dtype=np.float64))


def _scipy_interp(T0, T1, alpha):
    rots = Rotation.from_matrix(np.stack([T0[:3, :3], T1[:3, :3]]))
    R = Slerp([0.0, 1.0], rots)([alpha]).as_matrix()[0]
    t = (1 - alpha) * T0[:3, 3] + alpha * T1[:3, 3]
    return make_transform(R, t)


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.37, 0.5, 0.9, 1.0])
def test_interpolate_pose_matches_scipy_slerp(alpha):
    T0 = _pose([0.1, -0.4, 0.3], [1.0, 2.0, 0.5])
    T1 = _pose([-0.6, 0.2, 1.4], [-1.0, 0.5, 2.5])
    T = interpolate_pose(T0, T1, alpha)
    np.testing.assert_allclose(T, _scipy_interp(T0, T1, alpha), atol=1e-9)
    np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-9)


def test_interpolate_pose_takes_shortest_arc():
    # +170 deg and -170 deg about z: the short way passes through 180 deg, not 0 deg.
    T0 = _pose([0, 0, np.deg2rad(170)], [0, 0, 0])
    T1 = _pose([0, 0, np.deg2rad(-170)], [0, 0, 0])
    T = interpolate_pose(T0, T1, 0.5)
    yaw = np.arctan2(T[1, 0], T[0, 0])
    assert abs(abs(yaw) - np.pi) < 1e-6
    np.testing.assert_allclose(T, _scipy_interp(T0, T1, 0.5), atol=1e-9)


def test_interpolate_pose_nearly_identical_rotations_stays_rigid():
    T0 = _pose([0.2, 0.1, 0.0], [0, 0, 0])
    T1 = _pose([0.2, 0.1, 1e-4], [0, 0, 1])
    T = interpolate_pose(T0, T1, 0.5)
    np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-9)
    np.testing.assert_allclose(T, _scipy_interp(T0, T1, 0.5), atol=1e-7)


# ----------------------------------------------------------------------------- PoseBuffer
def _trajectory(stamps):
    return {t: _pose([0.05 * t, -0.02 * t, 0.3 * t], [t, 2 * t, 0.1 * t]) for t in stamps}


def test_pose_buffer_exact_and_interpolated_lookup():
    traj = _trajectory([0.0, 1.0, 2.0, 3.0])
    buf = PoseBuffer(max_age_s=100.0)
    for t, T in traj.items():
        buf.add(t, T)
    assert len(buf) == 4 and buf.latest_stamp == 3.0
    for t, T in traj.items():
        got, status = buf.lookup(t)
        assert status == "ok"
        np.testing.assert_allclose(got, T, atol=1e-12)
    got, status = buf.lookup(1.25)
    assert status == "ok"
    expected = _scipy_interp(traj[1.0], traj[2.0], 0.25)
    np.testing.assert_allclose(got[:3, 3], [1.25, 2.5, 0.125], atol=1e-12)  # translation lerp
    np.testing.assert_allclose(got, expected, atol=1e-9)
    np.testing.assert_allclose(buf.latest(), traj[3.0])


def test_pose_buffer_lookup_returns_copies():
    buf = PoseBuffer()
    buf.add(0.0, np.eye(4))
    buf.add(1.0, np.eye(4))
    got, _ = buf.lookup(0.0)
    got[0, 3] = 99.0
    np.testing.assert_allclose(buf.lookup(0.0)[0], np.eye(4))


def test_pose_buffer_out_of_order_add():
    traj = _trajectory([0.0, 1.0, 2.0])
    buf = PoseBuffer(max_age_s=100.0)
    for t in (2.0, 0.0, 1.0):
        buf.add(t, traj[t])
    got, status = buf.lookup(0.5)
    assert status == "ok"
    np.testing.assert_allclose(got, _scipy_interp(traj[0.0], traj[1.0], 0.5), atol=1e-9)


def test_pose_buffer_wait_beyond_newest_and_too_old_before_oldest():
    buf = PoseBuffer(max_age_s=100.0, max_extrapolation_s=0.05)
    assert buf.lookup(1.0) == (None, "wait")  # empty: poses may still arrive
    traj = _trajectory([1.0, 2.0])
    for t, T in traj.items():
        buf.add(t, T)
    assert buf.lookup(2.01) == (None, "wait")
    assert buf.lookup(10.0) == (None, "wait")
    assert buf.lookup(0.5) == (None, "too_old")
    # Within the extrapolation tolerance before the oldest pose: the oldest pose is used.
    got, status = buf.lookup(0.97)
    assert status == "ok"
    np.testing.assert_allclose(got, traj[1.0])


def test_pose_buffer_single_pose_small_extrapolation():
    buf = PoseBuffer(max_extrapolation_s=0.05)
    T = _pose([0, 0, 0.3], [1, 2, 3])
    buf.add(5.0, T)
    assert buf.lookup(5.03) == (None, "wait")  # a newer pose may still come
    got, status = buf.lookup(5.03, give_up=True)  # it will not: the newest pose within tolerance
    assert status == "ok"
    np.testing.assert_allclose(got, T)
    assert buf.lookup(5.2, give_up=True) == (None, "wait")


def test_pose_buffer_prunes_by_max_age():
    buf = PoseBuffer(max_age_s=1.0, max_extrapolation_s=0.01)
    for i in range(11):
        buf.add(i * 0.5, _pose([0, 0, 0], [i, 0, 0]))  # 0.0 .. 5.0
    assert len(buf) <= 3
    assert buf.latest_stamp == 5.0
    assert buf.lookup(2.0) == (None, "too_old")
    got, status = buf.lookup(4.75)
    assert status == "ok"
    np.testing.assert_allclose(got[:3, 3], [9.5, 0, 0])
    buf.clear()
    assert len(buf) == 0 and buf.latest() is None and buf.latest_stamp is None


def test_sync_queued_lists_waiting_messages_without_consuming():
    s = _sync(slop=0.01)
    s.add("color", 1.0, "c1")
    s.add("color", 2.0, "c2")
    s.add("depth", 3.0, "d3")
    q = s.queued()
    assert [(m.stamp_s, m.value) for m in q["color"]] == [(1.0, "c1"), (2.0, "c2")]
    assert [(m.stamp_s, m.value) for m in q["depth"]] == [(3.0, "d3")]
    q["color"].clear()  # a copy: the synchroniser's queues are untouched
    assert s.pending() == {"color": 2, "depth": 1}
