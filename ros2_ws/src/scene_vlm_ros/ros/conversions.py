"""numpy / core types -> rclpy messages: what the node publishes and answers with.

Imports message types only (never rclpy), so it is unit-tested without ``rclpy.init()``. Decoding
of incoming messages is not here: the node hands them to the core's one ingest path
(:mod:`scene_vlm_ros.core.pipeline`, decoding with :mod:`scene_vlm_ros.core.decode`), the same code
the bag tools use. Together they replace cv_bridge, which has no ROS 2 wheel on PyPI.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from sensor_msgs.msg import Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from scene_vlm_interfaces.msg import ObjectBox3D

from ..core.decode import ENCODING_DTYPES as IMAGE_ENCODINGS
from ..core.decode import MessageConversionError
from ..core.geometry import make_transform, matrix_to_quat_xyzw, quat_xyzw_to_matrix, rot_z
from ..core.markers import marker_color
from ..core.types import Instance, OrientedBox3D

ConversionError = MessageConversionError
"""A message whose content cannot be converted (bad encoding, size, or values)."""


def stamp_to_s(stamp: Time) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def s_to_stamp(t_s: float) -> Time:
    sec = int(np.floor(t_s))
    nanosec = int(round((t_s - sec) * 1e9))
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    return Time(sec=sec, nanosec=nanosec)


def numpy_to_image(arr: np.ndarray, encoding: str, stamp: Time | None = None, frame_id: str = "") -> Image:
    if encoding not in IMAGE_ENCODINGS:
        raise ConversionError(f"unsupported image encoding {encoding!r}")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    a = np.ascontiguousarray(arr, dtype=dtype)
    if (channels == 1 and a.ndim != 2) or (channels > 1 and (a.ndim != 3 or a.shape[2] != channels)):
        raise ConversionError(f"array of shape {a.shape} does not fit encoding {encoding}")
    msg = Image()
    msg.header = Header(stamp=stamp or Time(), frame_id=frame_id)
    msg.height, msg.width = int(a.shape[0]), int(a.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(a.shape[1] * channels * a.dtype.itemsize)
    msg.data = a.tobytes()
    return msg


def pose_to_matrix(pose: Pose) -> np.ndarray:
    q = np.array([pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w])
    if not np.all(np.isfinite(q)) or np.linalg.norm(q) < 1e-6:
        raise ConversionError("pose orientation is not a valid quaternion")
    t = np.array([pose.position.x, pose.position.y, pose.position.z])
    return make_transform(quat_xyzw_to_matrix(q), t)


def matrix_to_pose(T: np.ndarray) -> Pose:  # noqa: N803
    q = matrix_to_quat_xyzw(T[:3, :3])
    return Pose(
        position=Point(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
        orientation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
    )


def instance_to_box(inst: Instance) -> ObjectBox3D:
    box = ObjectBox3D()
    box.instance_id = int(inst.instance_id)
    box.label = inst.label
    box.score = float(inst.score)
    box.center = matrix_to_pose(make_transform(rot_z(inst.box.yaw), np.asarray(inst.box.center)))
    box.size = Vector3(x=float(inst.box.size[0]), y=float(inst.box.size[1]), z=float(inst.box.size[2]))
    return box


def _rgba(instance_id: int, alpha: float) -> ColorRGBA:
    r, g, b = marker_color(instance_id)
    return ColorRGBA(r=r / 255.0, g=g / 255.0, b=b / 255.0, a=alpha)


def instances_to_markers(
    instances: list[Instance] | tuple[Instance, ...], frame_id: str, stamp: Time, ns: str = "objects",
    alpha: float = 0.35,
) -> MarkerArray:
    """A translucent box plus an ID text per instance; starts with DELETEALL so stale ones vanish."""
    out = MarkerArray()
    clear = Marker()
    clear.header = Header(stamp=stamp, frame_id=frame_id)
    clear.ns = ns
    clear.action = Marker.DELETEALL
    out.markers.append(clear)
    for inst in instances:
        header = Header(stamp=stamp, frame_id=frame_id)
        box = Marker(header=header, ns=ns, id=int(inst.instance_id) * 2, type=Marker.CUBE, action=Marker.ADD)
        box.pose = matrix_to_pose(make_transform(rot_z(inst.box.yaw), np.asarray(inst.box.center)))
        box.scale = Vector3(x=max(float(inst.box.size[0]), 1e-3), y=max(float(inst.box.size[1]), 1e-3),
                            z=max(float(inst.box.size[2]), 1e-3))
        box.color = _rgba(inst.instance_id, alpha)
        text = Marker(header=header, ns=ns, id=int(inst.instance_id) * 2 + 1, type=Marker.TEXT_VIEW_FACING,
                      action=Marker.ADD)
        text.pose = matrix_to_pose(make_transform(np.eye(3), np.asarray(inst.box.center)
                                                  + [0.0, 0.0, inst.box.size[2] / 2.0 + 0.15]))
        text.scale.z = 0.2
        text.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        text.text = f"{inst.instance_id}: {inst.label}" if inst.label else str(inst.instance_id)
        out.markers.extend([box, text])
    return out


def points_to_cloud(points: np.ndarray, colors: np.ndarray, frame_id: str, stamp: Time) -> PointCloud2:
    """PointCloud2 with x, y, z (float32) and rgb (packed into a float32, the RViz convention)."""
    pts = np.ascontiguousarray(points, dtype=np.float32).reshape(-1, 3)
    col = np.ascontiguousarray(colors, dtype=np.uint8).reshape(-1, 3)
    if len(pts) != len(col):
        raise ConversionError(f"{len(pts)} points but {len(col)} colours")
    rgb = (col[:, 0].astype(np.uint32) << 16) | (col[:, 1].astype(np.uint32) << 8) | col[:, 2].astype(np.uint32)
    rec = np.empty(len(pts), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])
    rec["x"], rec["y"], rec["z"], rec["rgb"] = pts[:, 0], pts[:, 1], pts[:, 2], rgb
    msg = PointCloud2()
    msg.header = Header(stamp=stamp, frame_id=frame_id)
    msg.height, msg.width = 1, len(pts)
    msg.fields = [
        PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
        PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
        PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
        PointField(name="rgb", offset=12, datatype=PointField.FLOAT32, count=1),
    ]
    msg.is_bigendian = False
    msg.point_step = 16
    msg.row_step = 16 * len(pts)
    msg.is_dense = True
    msg.data = rec.tobytes()
    return msg


def cloud_to_points(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`points_to_cloud` (x, y, z, packed rgb at offsets 0/4/8/12)."""
    rec = np.frombuffer(bytes(msg.data), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])
    pts = np.stack([rec["x"], rec["y"], rec["z"]], axis=1)
    rgb = rec["rgb"]
    col = np.stack([(rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255], axis=1).astype(np.uint8)
    return pts, col


def box_to_oriented_box(box: ObjectBox3D) -> OrientedBox3D:
    """Inverse of :func:`instance_to_box`'s geometry: centre, size and yaw of an ObjectBox3D."""
    R = pose_to_matrix(box.center)[:3, :3]
    return OrientedBox3D(
        (box.center.position.x, box.center.position.y, box.center.position.z),
        (box.size.x, box.size.y, box.size.z),
        float(np.arctan2(R[1, 0], R[0, 0])),
    )
