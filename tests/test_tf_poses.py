"""ros.tf_poses: camera pose at an image stamp from TF (map <- odom <- base_link <- camera optical),
with the odometry + extrinsic fallback and the log line saying which mode runs."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from scene_vlm_ros.core.geometry import make_transform, quat_xyzw_to_matrix, rot_z
from scene_vlm_ros.core.sync import interpolate_pose
from scene_vlm_ros.ros import tf_poses
from scene_vlm_ros.ros.tf_poses import make_camera_poses, transform_to_matrix
from tests.rosutil import fresh_domain, wait_until

# base_link -> camera optical (x right, y down, z forward), 1.2 m up, 0.1 m forward
EXTRINSIC_Q = np.array([-0.5, 0.5, -0.5, 0.5])
T_BASE_CAMERA = make_transform(quat_xyzw_to_matrix(EXTRINSIC_Q), np.array([0.1, 0.0, 1.2]))
T_MAP_ODOM = make_transform(rot_z(0.3), np.array([2.0, -1.0, 0.0]))  # what AMCL / slam_toolbox publish
T_ODOM_BASE_0 = make_transform(rot_z(0.0), np.array([0.0, 0.0, 0.0]))
T_ODOM_BASE_1 = make_transform(rot_z(0.4), np.array([1.0, 0.5, 0.0]))
S = 1_000_000_000


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, text: str) -> None:
        self.lines.append(text)


def test_transform_message_to_matrix() -> None:
    from geometry_msgs.msg import Transform

    msg = Transform()
    msg.translation.x, msg.translation.y, msg.translation.z = 0.1, 0.0, 1.2
    msg.rotation.x, msg.rotation.y, msg.rotation.z, msg.rotation.w = EXTRINSIC_Q
    np.testing.assert_allclose(transform_to_matrix(msg), T_BASE_CAMERA, atol=1e-12)


def test_mode_is_logged_and_fallback_used_without_tf2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tf_poses, "tf2_available", lambda: False)
    log = _Log()
    assert make_camera_poses(None, "map", "auto", odom_frame="odom", logger=log) is None
    assert log.lines == ["camera poses from odometry + camera extrinsic, map in frame odom (tf2_ros is not importable)"]
    with pytest.raises(ValueError, match="tf2_ros is not importable"):
        make_camera_poses(None, "map", "tf", logger=log)
    with pytest.raises(ValueError, match="not one of"):
        make_camera_poses(None, "map", "gps", logger=log)
    assert make_camera_poses(None, "map", "odometry", logger=log) is None
    assert log.lines[-1].endswith("(requested)")


def _tf_msg(parent: str, child: str, T: np.ndarray, stamp_ns: int):  # noqa: N803
    from geometry_msgs.msg import TransformStamped

    from scene_vlm_ros.core.geometry import matrix_to_quat_xyzw

    msg = TransformStamped()
    msg.header.frame_id, msg.child_frame_id = parent, child
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), S)
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = map(float, T[:3, 3])
    r = msg.transform.rotation
    r.x, r.y, r.z, r.w = map(float, matrix_to_quat_xyzw(T[:3, :3]))
    return msg


@pytest.mark.ros
@pytest.mark.skipif(not tf_poses.tf2_available(),
                    reason="tf2_ros is not importable (built from ../shared/vendor by setup.d/10-ros-vendor.sh)")
def test_tf_lookup_chains_map_odom_base_camera_over_dds() -> None:
    import rclpy
    import tf2_ros
    from rclpy.executors import MultiThreadedExecutor

    context = rclpy.context.Context()
    rclpy.init(context=context, domain_id=fresh_domain())
    executor = MultiThreadedExecutor(num_threads=2, context=context)
    try:
        publisher = rclpy.create_node("tf_publisher", context=context)
        node = rclpy.create_node("tf_user", context=context)
        executor.add_node(publisher)
        executor.add_node(node)
        threading.Thread(target=executor.spin, daemon=True).start()
        log = _Log()
        poses = make_camera_poses(node, "map", "auto", logger=log)
        assert poses.mode == "tf"
        assert log.lines == ["camera poses from TF: map <- image frame_id at each image stamp (tf2_ros)"]

        static = tf2_ros.StaticTransformBroadcaster(publisher)
        static.sendTransform(_tf_msg("base_link", "camera_optical", T_BASE_CAMERA, 0))
        dynamic = tf2_ros.TransformBroadcaster(publisher)

        def publish_dynamic() -> None:
            dynamic.sendTransform([_tf_msg("map", "odom", T_MAP_ODOM, 10 * S),
                                   _tf_msg("map", "odom", T_MAP_ODOM, 11 * S),
                                   _tf_msg("odom", "base_link", T_ODOM_BASE_0, 10 * S),
                                   _tf_msg("odom", "base_link", T_ODOM_BASE_1, 11 * S)])

        stamp = 10 * S + S // 2

        def ready() -> bool:
            publish_dynamic()
            return poses.lookup("camera_optical", stamp).status == "ok"

        assert wait_until(ready, timeout_s=20, period_s=0.2), poses.lookup("camera_optical", stamp).reason
        got = poses.lookup("camera_optical", stamp)
        assert poses.camera_pose("camera_optical", stamp)[1] == "ok"
        expected = T_MAP_ODOM @ interpolate_pose(T_ODOM_BASE_0, T_ODOM_BASE_1, 0.5) @ T_BASE_CAMERA
        assert got.frame == "map"
        np.testing.assert_allclose(got.T_world_camera, expected, atol=1e-6)
        future = poses.lookup("camera_optical", 30 * S)
        assert future.status == "wait" and "Extrapolation" in future.reason
        assert poses.lookup("camera_optical", 1 * S).status == "too_old"
        assert poses.lookup("unknown_camera", stamp).status == "unknown"  # no chain: the auto fallback may apply
        assert poses.lookup("", stamp).status == "too_old"
        poses.close()
    finally:
        executor.shutdown()
        rclpy.shutdown(context=context)
