"""ROS 2 message <-> numpy conversions on ``rosbags`` message classes (no rclpy).

The one conversion module of the package: Image (rgb8 / bgr8 / mono8 / 16UC1 / 32FC1), CameraInfo,
Odometry, TF and our ``InstanceLabelArray``. Everything here works on the plain dataclasses of a
``rosbags`` typestore, so it runs in tests, offline tools and on raw CDR bytes alike; the ROS nodes
get the same CDR bytes from rclpy (``raw=True`` subscriptions) and decode them with
:func:`deserialize`.

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

from ..core.geometry import make_transform, matrix_to_quat_xyzw, quat_xyzw_to_matrix
from ..core.types import CameraIntrinsics, RGBDFrame
from .topics import FRAME_BASE, FRAME_ODOM, MSGTYPE_INSTANCE_LABELS

logger = logging.getLogger(__name__)

#: Environment variable naming a directory that holds ``InstanceLabel.msg`` etc. (overrides the search).
INTERFACES_DIR_ENV = "SCENE_VLM_INTERFACES_MSG_DIR"
INTERFACES_PACKAGE = "scene_vlm_interfaces"
#: Our message files, dependencies first (rosbags resolves nested types at registration time).
_INTERFACE_MSGS = ("InstanceLabel", "InstanceLabelArray", "ObjectBox3D")

#: Largest depth that ``16UC1`` millimetres can hold; deeper readings are dropped (written as 0).
MAX_DEPTH_MM = 65534

_ENCODING_DTYPES: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "8UC3": (np.dtype(np.uint8), 3),
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}


class MessageConversionError(ValueError):
    """A message cannot be converted (unsupported encoding, inconsistent sizes, bad values)."""


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


def time_to_ns(stamp: Any) -> int:
    """Integer nanoseconds of a ``builtin_interfaces/msg/Time``."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


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
    if encoding not in _ENCODING_DTYPES:
        raise MessageConversionError(f"unsupported image encoding {encoding!r}; use one of {sorted(_ENCODING_DTYPES)}")
    dtype, channels = _ENCODING_DTYPES[encoding]
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


def msg_to_image(msg: Any) -> np.ndarray:
    """Array of an Image message: (H, W, C) for multi-channel encodings (channel order as encoded), (H, W) otherwise.

    Works on any object with the Image fields: rosbags dataclasses and rclpy messages alike (the
    node's ``ros.conversions`` uses it too, so there is one decoder).

    Row padding (``step`` larger than a packed row) and big-endian data are handled. Use
    :func:`msg_to_rgb` to always get RGB.
    """
    encoding = msg.encoding
    if encoding not in _ENCODING_DTYPES:
        raise MessageConversionError(f"unsupported image encoding {encoding!r}; use one of {sorted(_ENCODING_DTYPES)}")
    dtype, channels = _ENCODING_DTYPES[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise MessageConversionError(f"image has zero width or height ({width}x{height})")
    row_bytes = width * channels * dtype.itemsize
    raw = np.asarray(msg.data, dtype=np.uint8)
    if step < row_bytes or raw.size < step * height:
        raise MessageConversionError(
            f"image data too small: {width}x{height} {encoding} needs step >= {row_bytes} and "
            f">= {row_bytes * height} bytes, got step {step} and {raw.size} bytes"
        )
    rows = raw[: step * height].reshape(height, step)[:, :row_bytes]
    typed = np.ascontiguousarray(rows).view(dtype.newbyteorder(">" if msg.is_bigendian else "<"))
    out = typed.astype(dtype, copy=False)
    return out.reshape(height, width, channels) if channels > 1 else out.reshape(height, width)


def msg_to_rgb(msg: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an rgb8/bgr8/rgba8/bgra8/mono8 image message."""
    img = msg_to_image(msg)
    if msg.encoding in ("rgb8", "8UC3"):
        return img
    if msg.encoding == "bgr8":
        return np.ascontiguousarray(img[:, :, ::-1])
    if msg.encoding == "rgba8":
        return np.ascontiguousarray(img[:, :, :3])
    if msg.encoding == "bgra8":
        return np.ascontiguousarray(img[:, :, 2::-1])
    if msg.encoding in ("mono8", "8UC1"):
        return np.repeat(img[:, :, None], 3, axis=2)
    raise MessageConversionError(f"colour image expected (rgb8/bgr8/mono8), got encoding {msg.encoding!r}")


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


def msg_to_depth_m(msg: Any) -> np.ndarray:
    """(H, W) float32 metres of a ``16UC1``/``mono16`` (mm) or ``32FC1`` (m) depth image; invalid -> 0."""
    img = msg_to_image(msg)
    if msg.encoding in ("16UC1", "mono16"):
        return img.astype(np.float32) / np.float32(1000.0)
    if msg.encoding == "32FC1":
        return np.where(np.isfinite(img) & (img > 0), img, 0.0).astype(np.float32)
    raise MessageConversionError(f"depth image must be 16UC1 (mm) or 32FC1 (m), got encoding {msg.encoding!r}")


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


def msg_to_camera_info(msg: Any) -> CameraIntrinsics:
    """Pinhole intrinsics from a CameraInfo's K (distortion is ignored, with a debug log when non-zero)."""
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise MessageConversionError(
            f"CameraInfo has no valid K (fx={K[0, 0]}, fy={K[1, 1]}); is the camera calibrated?"
        )
    if int(msg.width) <= 0 or int(msg.height) <= 0:
        raise MessageConversionError(f"CameraInfo has an empty image size {msg.width}x{msg.height}")
    if np.any(np.asarray(msg.d) != 0.0):
        logger.debug("CameraInfo distortion %s ignored (images are treated as rectified)", list(msg.d))
    return CameraIntrinsics.from_K(K, int(msg.width), int(msg.height))


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


def _quat_to_matrix(x: float, y: float, z: float, w: float, what: str) -> np.ndarray:
    q = np.array([x, y, z, w], dtype=np.float64)
    norm = float(np.linalg.norm(q))
    if not np.isfinite(norm) or norm < 1e-9:
        raise MessageConversionError(f"{what} has an invalid quaternion {q.tolist()}")
    return quat_xyzw_to_matrix(q)


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


def msg_to_odometry(msg: Any) -> tuple[int, str, str, np.ndarray]:
    """``(stamp_ns, frame_id, child_frame_id, T_frame_child)`` of an Odometry message."""
    p = msg.pose.pose
    o = p.orientation
    R = _quat_to_matrix(o.x, o.y, o.z, o.w, "Odometry pose")
    T = make_transform(R, [p.position.x, p.position.y, p.position.z])
    return time_to_ns(msg.header.stamp), msg.header.frame_id, msg.child_frame_id, T


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


def msg_to_transform(msg: Any) -> tuple[int, str, str, np.ndarray]:
    """``(stamp_ns, parent, child, T_parent_child)`` of a TransformStamped."""
    tr = msg.transform
    r = tr.rotation
    R = _quat_to_matrix(r.x, r.y, r.z, r.w, f"transform {msg.header.frame_id}->{msg.child_frame_id}")
    T = make_transform(R, [tr.translation.x, tr.translation.y, tr.translation.z])
    return time_to_ns(msg.header.stamp), msg.header.frame_id, msg.child_frame_id, T


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


def msg_to_labels(msg: Any) -> dict[int, str]:
    """``{instance_id: label}`` of an ``InstanceLabelArray``."""
    return {int(item.instance_id): str(item.label) for item in msg.labels}


# ---------------------------------------------------------------------------------------------
# A whole frame
# ---------------------------------------------------------------------------------------------


def rgbd_frame_from_msgs(
    color_msg: Any,
    depth_msg: Any,
    camera_info_msg: Any,
    T_world_camera: np.ndarray,  # noqa: N803
    mask_msg: Any | None = None,
    labels_msg: Any | None = None,
    frame_index: int = -1,
) -> RGBDFrame:
    """The :class:`RGBDFrame` of one synchronised set of messages (stamp = the colour header's).

    ``T_world_camera`` (4x4) is the optical-frame pose at the colour stamp, which the caller
    resolves (TF / odometry). Depth must be registered to colour (same size); the camera info must
    describe that size. The optional 16UC1 mask and ``InstanceLabelArray`` fill the instance fields.
    """
    color = msg_to_rgb(color_msg)
    depth = msg_to_depth_m(depth_msg)
    if depth.shape != color.shape[:2]:
        raise MessageConversionError(
            f"depth {depth.shape} and colour {color.shape[:2]} differ in size; subscribe to depth registered "
            "to colour (e.g. RealSense's aligned_depth_to_color)"
        )
    intrinsics = msg_to_camera_info(camera_info_msg)
    if (intrinsics.width, intrinsics.height) != (color.shape[1], color.shape[0]):
        raise MessageConversionError(
            f"camera info is for {intrinsics.width}x{intrinsics.height} "
            f"but the image is {color.shape[1]}x{color.shape[0]}"
        )
    mask = None
    if mask_msg is not None:
        if mask_msg.encoding not in ("16UC1", "mono16"):
            raise MessageConversionError(f"instance mask must be 16UC1, got {mask_msg.encoding!r}")
        mask = msg_to_image(mask_msg)
        if mask.shape != depth.shape:
            raise MessageConversionError(f"instance mask {mask.shape} differs from the image {depth.shape}")
    return RGBDFrame(
        stamp_s=time_to_ns(color_msg.header.stamp) / 1e9,
        color_rgb=color,
        depth_m=depth,
        intrinsics=intrinsics,
        T_world_camera=np.asarray(T_world_camera, dtype=np.float64),
        instance_mask=mask,
        instance_labels=msg_to_labels(labels_msg) if labels_msg is not None else None,
        frame_index=frame_index,
    )
