"""Standard outputs beside ours: ``vision_msgs/Detection3DArray`` of the instances and of query results.

Perception tools (and RViz plugins) read ``vision_msgs``; ``ObjectBox3D`` has the same
centre-and-size geometry, so each box becomes one ``Detection3D``:

- ``id``: the persistent instance ID as text (``"12"``), the number the model sees as ``<OBJ012>``;
- ``bbox``: ``center`` (pose, yaw about +z) and ``size`` (full extents, m), as in the box;
- ``results[0]``: ``class_id`` = the label (``""`` when known from geometry only), ``score`` = the
  label confidence, ``pose`` = the box centre.

:class:`VisionOutputs` owns the two publishers (``~/detections``, ``~/query_detections``). When
``vision_msgs`` is not importable it publishes nothing and says so once in the log.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from typing import Any

__all__ = ["VisionOutputs", "boxes_to_detections", "vision_msgs_available"]

DETECTIONS_TOPIC = "~/detections"
QUERY_DETECTIONS_TOPIC = "~/query_detections"


def vision_msgs_available() -> bool:
    """Whether ``vision_msgs`` can be imported (a ROS install, or the vendored build in .ros_vendor)."""
    return importlib.util.find_spec("vision_msgs") is not None


def boxes_to_detections(header: Any, boxes: Iterable[Any]) -> Any:
    """``Detection3DArray`` with one detection per ``scene_vlm_interfaces/ObjectBox3D``.

    Args:
        header: ``std_msgs/Header`` of the snapshot (its ``frame_id`` is the boxes' frame).
        boxes: ``ObjectBox3D`` messages (metres, radians; frame = ``header.frame_id``).
    """
    from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose

    out = Detection3DArray(header=header)
    for box in boxes:
        det = Detection3D(header=header, id=str(int(box.instance_id)))
        det.bbox.center = box.center
        det.bbox.size = box.size
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = box.label
        hyp.hypothesis.score = float(box.score)
        hyp.pose.pose = box.center
        det.results.append(hyp)
        out.detections.append(det)
    return out


class VisionOutputs:
    """Publishers of ``~/detections`` (all instances) and ``~/query_detections`` (a query's boxes).

    Args:
        node: the rclpy node that publishes.
        qos_depth: history depth of both publishers (reliable, volatile, like ``~/objects``).
    """

    def __init__(self, node: Any, qos_depth: int = 1) -> None:
        self.enabled = vision_msgs_available()
        self._detections = self._query = None
        if not self.enabled:
            node.get_logger().info(
                "vision_msgs is not importable: ~/detections and ~/query_detections (Detection3DArray) are not "
                "published; ~/objects and ~/query_result markers are")
            return
        from vision_msgs.msg import Detection3DArray

        self._detections = node.create_publisher(Detection3DArray, DETECTIONS_TOPIC, qos_depth)
        self._query = node.create_publisher(Detection3DArray, QUERY_DETECTIONS_TOPIC, qos_depth)

    def destroy(self, node: Any) -> None:
        """Destroy the publishers (node cleanup)."""
        for pub in (self._detections, self._query):
            if pub is not None:
                node.destroy_publisher(pub)
        self._detections = self._query = None

    def publish_instances(self, header: Any, boxes: Iterable[Any]) -> bool:
        """Publish every instance's box; False (nothing sent) without vision_msgs."""
        if self._detections is None:
            return False
        self._detections.publish(boxes_to_detections(header, boxes))
        return True

    def publish_query_result(self, header: Any, boxes: Iterable[Any]) -> bool:
        """Publish the boxes a query answer refers to (possibly none); False without vision_msgs."""
        if self._query is None:
            return False
        self._query.publish(boxes_to_detections(header, boxes))
        return True
