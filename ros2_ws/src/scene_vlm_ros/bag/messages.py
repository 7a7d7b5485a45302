"""Building ROS 2 messages with ``rosbags`` message classes (no rclpy): the bag writer's side.

numpy -> Image (raw or compressed: jpeg/png colour, compressedDepth png), CameraInfo, Odometry, TF
and our ``InstanceLabelArray``; plus the typestore with ``scene_vlm_interfaces`` registered and CDR
(de)serialisation. Decoding lives in :mod:`scene_vlm_ros.core.decode`, the one decoder that the node
and the bag tools share; its functions are re-exported here for convenience.

Conventions: stamps are integer nanoseconds since the epoch (``stamp_ns``); transforms are 4x4
float64 ``T_parent_child`` (maps child-frame points into the parent frame); depth images in
``16UC1`` hold millimetres (0 = no reading), in ``32FC1`` metres (0 or NaN = no reading).
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from ..core.decode import (  # noqa: F401  (re-exported: the decoders live in core.decode)
    ENCODING_DTYPES,
    MessageConversionError,
    msg_to_camera_info,
    msg_to_depth_m,
    msg_to_image,
    msg_to_labels,
    msg_to_odometry,
    msg_to_rgb,
    msg_to_transform,
    time_to_ns,
)
from ..core.geometry import matrix_to_quat_xyzw
from ..core.types import CameraIntrinsics
from .topics import FRAME_BASE, FRAME_ODOM, MSGTYPE_INSTANCE_LABELS

logger = logging.getLogger(__name__)

#: Environment variable naming a directory that holds ``InstanceLabel.msg`` etc. (overrides the search).
INTERFACES_DIR_ENV = "SCENE_VLM_INTERFACES_MSG_DIR"
INTERFACES_PACKAGE = "scene_vlm_interfaces"
#: Our message files, dependencies first (rosbags resolves nested types at registration time).
_INTERFACE_MSGS = ("InstanceLabel", "InstanceLabelArray", "ObjectBox3D")

#: Largest depth that ``16UC1`` millimetres can hold; deeper readings are dropped (written as 0).
MAX_DEPTH_MM = 65534

class InterfacesNotFoundError(FileNotFoundError):
    """The ``scene_vlm_interfaces`` .msg files could not be located."""


# ---------------------------------------------------------------------------------------------
# Typestore with our interface package registered
# ---------------------------------------------------------------------------------------------


def find_interfaces_msg_dir() -> Path:
    """Directory holding the ``scene_vlm_interfaces`` ``.msg`` files.

    Search order: ``$SCENE_VLM_INTERFACES_MSG_DIR``; the source tree beside this package
    (``ros2_ws/src/scene_vlm_interfaces/msg``, the editable/development install); the installed
    share directory of every prefix in ``$AMENT_PREFIX_PATH`` (a colcon install). Raises
    :class:`InterfacesNotFoundError` listing the places tried.
    """
    candidates: list[Path] = []
    if os.environ.get(INTERFACES_DIR_ENV):
        candidates.append(Path(os.environ[INTERFACES_DIR_ENV]))
    # bag/messages.py -> scene_vlm_ros -> src: the interface package is a sibling in the workspace.
    candidates.append(Path(__file__).resolve().parents[2] / INTERFACES_PACKAGE / "msg")
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / INTERFACES_PACKAGE / "msg")
    for cand in candidates:
        if all((cand / f"{name}.msg").is_file() for name in _INTERFACE_MSGS):
            return cand
    tried = ", ".join(str(c) for c in candidates)
    raise InterfacesNotFoundError(
        f"scene_vlm_interfaces .msg files not found (tried: {tried}); "
        f"build/source the workspace or set {INTERFACES_DIR_ENV} to the package's msg/ directory"
    )


@functools.lru_cache(maxsize=1)
def get_scene_typestore() -> Typestore:
    """The ROS 2 Kilted typestore of ``rosbags`` plus the ``scene_vlm_interfaces`` messages.

    Cached: building a typestore parses every message definition once.
    """
    store = get_typestore(Stores.ROS2_KILTED)
    msg_dir = find_interfaces_msg_dir()
    types: dict = {}
    for name in _INTERFACE_MSGS:
        path = msg_dir / f"{name}.msg"
        types.update(get_types_from_msg(path.read_text(encoding="utf-8"), f"{INTERFACES_PACKAGE}/msg/{name}"))
    store.register(types)
    logger.debug("registered %d scene_vlm_interfaces types from %s", len(types), msg_dir)
    return store


def msg_class(msgtype: str) -> Any:
    """The ``rosbags`` dataclass of ``msgtype`` (e.g. ``"sensor_msgs/msg/Image"``)."""
    return get_scene_typestore().types[msgtype]


def serialize(msg: Any, msgtype: str | None = None) -> bytes:
    """CDR bytes of a message (what rosbag2 stores and rclpy publishes with ``publish(raw)``)."""
    typename = msgtype or msg.__msgtype__
    return bytes(get_scene_typestore().serialize_cdr(msg, typename))


def deserialize(data: bytes | memoryview, msgtype: str) -> Any:
    """Message object from CDR bytes."""
    return get_scene_typestore().deserialize_cdr(data, msgtype)


# ---------------------------------------------------------------------------------------------
# Time and header
# ---------------------------------------------------------------------------------------------


def ns_to_time(stamp_ns: int) -> Any:
    """``builtin_interfaces/msg/Time`` of an integer nanosecond stamp."""
    if stamp_ns < 0:
        raise MessageConversionError(f"negative stamp {stamp_ns} ns cannot be a ROS time")
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return msg_class("builtin_interfaces/msg/Time")(sec=sec, nanosec=nanosec)


def seconds_to_ns(stamp_s: float) -> int:
    """Seconds (float) -> integer nanoseconds, rounded (not truncated) so that ``k / 30`` round-trips."""
    return int(round(float(stamp_s) * 1e9))


def make_header(stamp_ns: int, frame_id: str) -> Any:
    """``std_msgs/msg/Header``."""
    return msg_class("std_msgs/msg/Header")(stamp=ns_to_time(stamp_ns), frame_id=frame_id)


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


def image_to_msg(image: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> Any:
    """``sensor_msgs/msg/Image`` of an (H, W) or (H, W, 3) array, little-endian, no row padding.

    The array's dtype must match the encoding (uint8 for rgb8/bgr8/mono8, uint16 for 16UC1/mono16,
    float32 for 32FC1); nothing is converted silently.
    """
    if encoding not in ENCODING_DTYPES:
        raise MessageConversionError(f"unsupported image encoding {encoding!r}; use one of {sorted(ENCODING_DTYPES)}")
    dtype, channels = ENCODING_DTYPES[encoding]
    arr = np.asarray(image)
    expected_ndim = 3 if channels > 1 else 2
    if arr.ndim != expected_ndim or (channels > 1 and arr.shape[2] != channels):
        raise MessageConversionError(
            f"{encoding} needs an array of shape {f'(H, W, {channels})' if channels > 1 else '(H, W)'}, got {arr.shape}"
        )
    if arr.dtype != dtype:
        raise MessageConversionError(f"{encoding} needs dtype {dtype}, got {arr.dtype}")
    height, width = arr.shape[:2]
    data = np.ascontiguousarray(arr, dtype=dtype.newbyteorder("<")).view(np.uint8).reshape(-1)
    return msg_class("sensor_msgs/msg/Image")(
        header=make_header(stamp_ns, frame_id),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=width * channels * dtype.itemsize,
        data=data,
    )


def compressed_image_to_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str, fmt: str = "jpeg",
                            quality: int = 90) -> Any:
    """``sensor_msgs/msg/CompressedImage`` of an RGB uint8 image, as ``image_transport``'s compressed
    plugin writes it (bgr8 data, ``format`` "rgb8; jpeg compressed bgr8" or "... png ...")."""
    import cv2

    if fmt not in ("jpeg", "png"):
        raise MessageConversionError(f"colour compression must be 'jpeg' or 'png', got {fmt!r}")
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise MessageConversionError(f"compressed colour needs (H, W, 3) uint8, got {arr.shape} {arr.dtype}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, buf = cv2.imencode(f".{'jpg' if fmt == 'jpeg' else 'png'}", np.ascontiguousarray(arr[:, :, ::-1]), params)
    if not ok:
        raise MessageConversionError("OpenCV failed to encode the colour image")
    return msg_class("sensor_msgs/msg/CompressedImage")(
        header=make_header(stamp_ns, frame_id), format=f"rgb8; {fmt} compressed bgr8",
        data=np.asarray(buf, dtype=np.uint8).reshape(-1))


def compressed_depth_to_msg(depth_m: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
    """``sensor_msgs/msg/CompressedImage`` of (H, W) metres as ``compressed_depth_image_transport``
    writes 16UC1 depth: ``format`` "16UC1; compressedDepth png", a 12-byte header, a 16-bit PNG of mm."""
    import struct

    import cv2

    if np.asarray(depth_m).ndim != 2:
        raise MessageConversionError(f"depth must be (H, W), got shape {np.shape(depth_m)}")
    ok, buf = cv2.imencode(".png", depth_m_to_mm(depth_m), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise MessageConversionError("OpenCV failed to encode the depth image")
    header = struct.pack("<iff", 1, 0.0, 0.0)  # format PNG; the quantisation is unused for 16UC1
    data = np.frombuffer(header + buf.tobytes(), dtype=np.uint8)
    return msg_class("sensor_msgs/msg/CompressedImage")(
        header=make_header(stamp_ns, frame_id), format="16UC1; compressedDepth png", data=data.copy())


def depth_m_to_mm(depth_m: np.ndarray) -> np.ndarray:
    """(H, W) float metres -> uint16 millimetres, rounded; NaN, <= 0 and beyond 65.534 m become 0 (no reading)."""
    d = np.asarray(depth_m, dtype=np.float64)
    valid = np.isfinite(d) & (d > 0.0)
    mm = np.zeros(d.shape, dtype=np.float64)
    mm[valid] = np.round(d[valid] * 1000.0)
    mm[mm > MAX_DEPTH_MM] = 0.0
    return mm.astype(np.uint16)


def depth_to_msg(depth_m: np.ndarray, stamp_ns: int, frame_id: str, encoding: str = "16UC1") -> Any:
    """Depth Image of (H, W) float metres: ``16UC1`` millimetres (default, what RealSense publishes) or ``32FC1`` m."""
    if np.asarray(depth_m).ndim != 2:
        raise MessageConversionError(f"depth must be (H, W), got shape {np.shape(depth_m)}")
    if encoding == "16UC1":
        return image_to_msg(depth_m_to_mm(depth_m), "16UC1", stamp_ns, frame_id)
    if encoding == "32FC1":
        d = np.asarray(depth_m, dtype=np.float32)
        return image_to_msg(np.where(np.isfinite(d) & (d > 0), d, 0.0).astype(np.float32), "32FC1", stamp_ns, frame_id)
    raise MessageConversionError(f"depth encoding must be '16UC1' or '32FC1', got {encoding!r}")


# ---------------------------------------------------------------------------------------------
# CameraInfo
# ---------------------------------------------------------------------------------------------


def camera_info_to_msg(intrinsics: CameraIntrinsics, stamp_ns: int, frame_id: str) -> Any:
    """``sensor_msgs/msg/CameraInfo`` of a pinhole camera: plumb_bob with zero distortion, R = I, P = [K | 0]."""
    K = intrinsics.K
    P = np.zeros((3, 4))
    P[:, :3] = K
    roi = msg_class("sensor_msgs/msg/RegionOfInterest")(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return msg_class("sensor_msgs/msg/CameraInfo")(
        header=make_header(stamp_ns, frame_id),
        height=int(intrinsics.height),
        width=int(intrinsics.width),
        distortion_model="plumb_bob",
        d=np.zeros(5, dtype=np.float64),
        k=K.reshape(-1).astype(np.float64),
        r=np.eye(3).reshape(-1),
        p=P.reshape(-1),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )


# ---------------------------------------------------------------------------------------------
# Poses: Odometry and TF
# ---------------------------------------------------------------------------------------------


def _pose_msg(T: np.ndarray) -> Any:  # noqa: N803
    q = matrix_to_quat_xyzw(T[:3, :3])
    t = T[:3, 3]
    return msg_class("geometry_msgs/msg/Pose")(
        position=msg_class("geometry_msgs/msg/Point")(x=float(t[0]), y=float(t[1]), z=float(t[2])),
        orientation=msg_class("geometry_msgs/msg/Quaternion")(x=q[0], y=q[1], z=q[2], w=q[3]),
    )


def _check_transform(T: np.ndarray, what: str) -> np.ndarray:  # noqa: N803
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise MessageConversionError(f"{what} must be a finite 4x4 transform, got shape {T.shape}")
    return T


def odometry_to_msg(
    T_odom_base: np.ndarray,  # noqa: N803
    stamp_ns: int,
    frame_id: str = FRAME_ODOM,
    child_frame_id: str = FRAME_BASE,
    linear_velocity: np.ndarray | None = None,
    angular_velocity: np.ndarray | None = None,
) -> Any:
    """``nav_msgs/msg/Odometry`` of ``T_odom_base`` (4x4); twist in the child frame (m/s, rad/s), zero by default.

    Covariances are left at zero (unknown), as many simulators publish them.
    """
    T = _check_transform(T_odom_base, "T_odom_base")
    v = np.zeros(3) if linear_velocity is None else np.asarray(linear_velocity, dtype=np.float64)
    w = np.zeros(3) if angular_velocity is None else np.asarray(angular_velocity, dtype=np.float64)
    vec3 = msg_class("geometry_msgs/msg/Vector3")
    twist = msg_class("geometry_msgs/msg/Twist")(
        linear=vec3(x=float(v[0]), y=float(v[1]), z=float(v[2])),
        angular=vec3(x=float(w[0]), y=float(w[1]), z=float(w[2])),
    )
    return msg_class("nav_msgs/msg/Odometry")(
        header=make_header(stamp_ns, frame_id),
        child_frame_id=child_frame_id,
        pose=msg_class("geometry_msgs/msg/PoseWithCovariance")(pose=_pose_msg(T), covariance=np.zeros(36)),
        twist=msg_class("geometry_msgs/msg/TwistWithCovariance")(twist=twist, covariance=np.zeros(36)),
    )


def transform_to_msg(T_parent_child: np.ndarray, stamp_ns: int, parent: str, child: str) -> Any:  # noqa: N803
    """``geometry_msgs/msg/TransformStamped`` (header.frame_id = parent, child_frame_id = child)."""
    T = _check_transform(T_parent_child, f"T_{parent}_{child}")
    q = matrix_to_quat_xyzw(T[:3, :3])
    t = T[:3, 3]
    transform = msg_class("geometry_msgs/msg/Transform")(
        translation=msg_class("geometry_msgs/msg/Vector3")(x=float(t[0]), y=float(t[1]), z=float(t[2])),
        rotation=msg_class("geometry_msgs/msg/Quaternion")(x=q[0], y=q[1], z=q[2], w=q[3]),
    )
    return msg_class("geometry_msgs/msg/TransformStamped")(
        header=make_header(stamp_ns, parent), child_frame_id=child, transform=transform
    )


def tf_message(transforms: list[Any]) -> Any:
    """``tf2_msgs/msg/TFMessage`` holding the given TransformStamped messages."""
    return msg_class("tf2_msgs/msg/TFMessage")(transforms=list(transforms))


# ---------------------------------------------------------------------------------------------
# Instance labels
# ---------------------------------------------------------------------------------------------


def labels_to_msg(labels: dict[int, str], stamp_ns: int, frame_id: str) -> Any:
    """``InstanceLabelArray`` of an ``{instance_id: label}`` table (ids 1..65535; 0 means "no instance")."""
    items = []
    for instance_id, label in sorted(labels.items()):
        iid = int(instance_id)
        if not 0 < iid <= 0xFFFF:
            raise MessageConversionError(f"instance id {iid} does not fit a 16UC1 mask (1..65535; 0 = none)")
        items.append(msg_class("scene_vlm_interfaces/msg/InstanceLabel")(instance_id=iid, label=str(label)))
    return msg_class(MSGTYPE_INSTANCE_LABELS)(header=make_header(stamp_ns, frame_id), labels=items)
