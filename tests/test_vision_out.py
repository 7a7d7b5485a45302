"""ros.vision_out: ObjectBox3D -> vision_msgs/Detection3DArray, publishers, and the skip without vision_msgs."""

from __future__ import annotations

import threading

import pytest

from scene_vlm_ros.ros import vision_out
from tests.rosutil import fresh_domain, wait_until

needs_vision_msgs = pytest.mark.skipif(
    not vision_out.vision_msgs_available(),
    reason="vision_msgs is not importable (built from ../shared/vendor by setup.d/10-ros-vendor.sh)")


def _box(instance_id: int, label: str, score: float, xyz: tuple[float, float, float], size: tuple[float, float, float],
         yaw_qz_qw: tuple[float, float] = (0.0, 1.0)):
    from scene_vlm_interfaces.msg import ObjectBox3D

    box = ObjectBox3D(instance_id=instance_id, label=label, score=score)
    box.center.position.x, box.center.position.y, box.center.position.z = xyz
    box.center.orientation.z, box.center.orientation.w = yaw_qz_qw
    box.size.x, box.size.y, box.size.z = size
    return box


def _header(frame: str = "map"):
    from std_msgs.msg import Header

    h = Header(frame_id=frame)
    h.stamp.sec, h.stamp.nanosec = 42, 5
    return h


@needs_vision_msgs
def test_boxes_become_detections_with_same_geometry() -> None:
    boxes = [_box(12, "chair", 0.8, (1.0, 2.0, 0.45), (0.5, 0.6, 0.9), (0.3826834, 0.9238795)),
             _box(3, "", 0.0, (-1.0, 0.0, 0.2), (1.0, 1.0, 0.4))]
    out = vision_out.boxes_to_detections(_header(), boxes)
    assert out.header.frame_id == "map" and out.header.stamp.sec == 42
    assert [d.id for d in out.detections] == ["12", "3"]
    chair = out.detections[0]
    assert chair.header.frame_id == "map"
    p = chair.bbox.center.position
    assert (p.x, p.y, p.z) == (1.0, 2.0, 0.45)
    assert chair.bbox.center.orientation.z == pytest.approx(0.3826834)
    assert (chair.bbox.size.x, chair.bbox.size.y, chair.bbox.size.z) == (0.5, 0.6, 0.9)
    assert chair.results[0].hypothesis.class_id == "chair"
    assert chair.results[0].hypothesis.score == pytest.approx(0.8)
    assert chair.results[0].pose.pose.position.y == 2.0
    assert out.detections[1].results[0].hypothesis.class_id == ""
    assert vision_out.boxes_to_detections(_header(), []).detections == []


class _FakeNode:
    def __init__(self) -> None:
        self.logged: list[str] = []
        self.publishers: list[str] = []

    def get_logger(self):
        return self

    def info(self, text: str) -> None:
        self.logged.append(text)

    def create_publisher(self, _type, topic, _qos):
        self.publishers.append(topic)


def test_without_vision_msgs_nothing_is_published_and_a_line_is_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vision_out, "vision_msgs_available", lambda: False)
    node = _FakeNode()
    outputs = vision_out.VisionOutputs(node)
    assert not outputs.enabled and node.publishers == []
    assert len(node.logged) == 1 and "vision_msgs is not importable" in node.logged[0]
    assert outputs.publish_instances(None, []) is False
    assert outputs.publish_query_result(None, []) is False


@needs_vision_msgs
@pytest.mark.ros
def test_detections_round_trip_over_dds() -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from vision_msgs.msg import Detection3DArray

    context = rclpy.context.Context()
    rclpy.init(context=context, domain_id=fresh_domain())
    executor = SingleThreadedExecutor(context=context)
    try:
        node = rclpy.create_node("scene_vlm", context=context)
        listener = rclpy.create_node("det_listener", context=context)
        got: dict[str, list[Detection3DArray]] = {"all": [], "query": []}
        listener.create_subscription(Detection3DArray, "/scene_vlm/detections", got["all"].append, 10)
        listener.create_subscription(Detection3DArray, "/scene_vlm/query_detections", got["query"].append, 10)
        outputs = vision_out.VisionOutputs(node)
        executor.add_node(node)
        executor.add_node(listener)
        threading.Thread(target=executor.spin, daemon=True).start()
        boxes = [_box(7, "table", 0.9, (0.0, 1.0, 0.4), (1.2, 0.8, 0.8))]

        def arrived() -> bool:
            outputs.publish_instances(_header(), boxes)
            outputs.publish_query_result(_header(), boxes[:1])
            return bool(got["all"]) and bool(got["query"])

        assert wait_until(arrived, timeout_s=15, period_s=0.2)
        assert got["all"][0].detections[0].id == "7"
        assert got["query"][0].detections[0].results[0].hypothesis.class_id == "table"
    finally:
        executor.shutdown()
        rclpy.shutdown(context=context)


@needs_vision_msgs
@pytest.mark.ros
def test_node_publishes_detections_of_instances_and_of_query_results() -> None:
    from vision_msgs.msg import Detection3DArray

    from scene_vlm_interfaces.srv import SceneQuery
    from scene_vlm_ros.datasets.render import generate_sequence
    from scene_vlm_ros.datasets.synthetic import generate_layout
    from scene_vlm_ros.ros.bringup import Bringup
    from tests.rosutil import call, make_client_node

    params = {"publish.bev_period_s": 0.0, "publish.cloud_period_s": 0.0, "publish.diagnostics_period_s": 0.0,
              "publish.objects_period_s": 0.2, "model.backend": "fallback", "map_frame": "odom"}
    with Bringup(params, domain_id=fresh_domain()) as graph:
        layout = generate_layout(0)
        for f in generate_sequence(layout, n_frames=12, width=160, height=120, seed=0, speed_mps=None):
            graph.node.memory.integrate(f.frame)
        client = make_client_node(graph, "detections_client")
        got: dict[str, list[Detection3DArray]] = {"all": [], "query": []}
        client.create_subscription(Detection3DArray, "/scene_vlm/detections", got["all"].append, 10)
        client.create_subscription(Detection3DArray, "/scene_vlm/query_detections", got["query"].append, 10)
        n_instances = len(graph.node.memory.snapshot(refresh=True).instances)
        assert n_instances > 0
        assert wait_until(lambda: any(len(m.detections) == n_instances for m in got["all"]), timeout_s=15)
        msg = next(m for m in got["all"] if len(m.detections) == n_instances)
        assert msg.header.frame_id == "odom"
        ids = {int(d.id) for d in msg.detections}
        assert ids == {i.instance_id for i in graph.node.memory.snapshot().instances}
        query = client.create_client(SceneQuery, "/scene_query")
        label = next(i.label for i in graph.node.memory.snapshot().instances if i.label)
        resp = call(query, SceneQuery.Request(question=f"where is the {label}?", task=SceneQuery.Request.GROUNDING))
        assert resp.error_code == SceneQuery.Response.SUCCESS, resp.error_msg
        assert wait_until(lambda: bool(got["query"]), timeout_s=10)
        assert [d.id for d in got["query"][-1].detections] == [str(b.instance_id) for b in resp.boxes]
        assert got["query"][-1].detections[0].results[0].hypothesis.class_id == label
