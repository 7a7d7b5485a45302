"""ros.log_bridge: Python logging of core/vlm modules reaches the node's rclpy logger and /rosout."""

from __future__ import annotations

import logging
import threading

import pytest

from scene_vlm_ros.ros.log_bridge import install_log_bridge, rcl_method_for
from tests.rosutil import fresh_domain, wait_until


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __getattr__(self, method: str):  # debug/info/warning/error/fatal
        return lambda text: self.calls.append((method, text))


def test_levels_map_to_rclpy_methods() -> None:
    assert [rcl_method_for(lv) for lv in (5, logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR,
                                          logging.CRITICAL)] == ["debug", "debug", "info", "warning", "error", "fatal"]


def test_records_of_package_children_are_forwarded_and_removed_cleanly() -> None:
    rec = _Recorder()
    pkg = logging.getLogger("scene_vlm_ros")
    propagate_before = pkg.propagate
    handler = install_log_bridge(rec, level=logging.INFO)
    try:
        logging.getLogger("scene_vlm_ros.core.fusion").warning("voxel %d dropped", 7)
        logging.getLogger("scene_vlm_ros.vlm.engine").debug("below the level")
        logging.getLogger("other_package").error("not ours")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("scene_vlm_ros.vlm.engine").exception("model failed")
        assert pkg.propagate is False
    finally:
        handler.remove()
    assert rec.calls[0] == ("warning", "[scene_vlm_ros.core.fusion] voxel 7 dropped")
    assert rec.calls[1][0] == "error" and "model failed" in rec.calls[1][1] and "RuntimeError: boom" in rec.calls[1][1]
    assert len(rec.calls) == 2
    assert pkg.propagate is propagate_before and handler not in pkg.handlers
    logging.getLogger("scene_vlm_ros.core.fusion").warning("after removal")
    assert len(rec.calls) == 2


def test_a_failing_ros_logger_never_raises_into_the_caller() -> None:
    tried: list[str] = []

    class Broken:
        def warning(self, text: str) -> None:
            tried.append(text)
            raise RuntimeError("context is shut down")

    handler = install_log_bridge(Broken())
    try:
        logging.raiseExceptions = False
        logging.getLogger("scene_vlm_ros.core").warning("still fine")  # must not raise
    finally:
        logging.raiseExceptions = True
        handler.remove()
    assert tried == ["[scene_vlm_ros.core] still fine"]


@pytest.mark.ros
def test_core_log_reaches_rosout() -> None:
    rclpy = pytest.importorskip("rclpy")
    from rcl_interfaces.msg import Log
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy

    context = rclpy.context.Context()
    rclpy.init(context=context, domain_id=fresh_domain())
    executor = SingleThreadedExecutor(context=context)
    try:
        node = rclpy.create_node("bridge_node", context=context)
        listener = rclpy.create_node("rosout_listener", context=context)
        got: list[Log] = []
        qos = QoSProfile(depth=100, reliability=QoSReliabilityPolicy.RELIABLE,
                         durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        listener.create_subscription(Log, "/rosout", got.append, qos)
        executor.add_node(node)
        executor.add_node(listener)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        handler = install_log_bridge(node.get_logger())
        try:
            assert wait_until(lambda: listener.count_publishers("/rosout") >= 2, timeout_s=10)

            def arrived() -> bool:
                # two severities through the one handler (rclpy refuses one call site at two levels)
                logging.getLogger("scene_vlm_ros.core.memory").info("about to fuse")
                logging.getLogger("scene_vlm_ros.core.memory").warning("fused %d frames", 3)
                return any(m.name == "bridge_node" and "fused 3 frames" in m.msg for m in got)

            assert wait_until(arrived, timeout_s=15, period_s=0.5)
        finally:
            handler.remove()
        mine = [m for m in got if m.name == "bridge_node" and "fused 3 frames" in m.msg]
        assert mine[0].level == Log.WARN
        assert mine[0].msg == "[scene_vlm_ros.core.memory] fused 3 frames"
    finally:
        executor.shutdown()
        rclpy.shutdown(context=context)


@pytest.mark.ros
def test_the_node_forwards_core_logs_to_rosout() -> None:
    pytest.importorskip("rclpy")
    from rcl_interfaces.msg import Log
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy

    from scene_vlm_ros.ros.bringup import Bringup
    from tests.rosutil import make_client_node

    quiet = {"publish.bev_period_s": 0.0, "publish.cloud_period_s": 0.0, "publish.diagnostics_period_s": 0.0,
             "publish.objects_period_s": 0.0}
    with Bringup(quiet, domain_id=fresh_domain()) as graph:
        got: list[Log] = []
        qos = QoSProfile(depth=100, reliability=QoSReliabilityPolicy.RELIABLE,
                         durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        make_client_node(graph, "rosout_reader").create_subscription(Log, "/rosout", got.append, qos)

        def arrived() -> bool:
            logging.getLogger("scene_vlm_ros.core.fusion").warning("core says hello")
            return any(m.name == "scene_vlm" and "core says hello" in m.msg for m in got)

        assert wait_until(arrived, timeout_s=15, period_s=0.5)
    handlers = logging.getLogger("scene_vlm_ros").handlers
    assert not any(getattr(h, "ros_logger", None) is not None for h in handlers), "bridge left behind"
