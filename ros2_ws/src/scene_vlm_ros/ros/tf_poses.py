"""Camera poses at image stamps: from TF when tf2_ros is importable, else odometry + extrinsic.

Two sources with one interface, ``lookup(frame_id, stamp_ns) -> PoseLookup``:

- :class:`TfCameraPoses` (mode ``"tf"``): ``T_map_camera`` = the transform ``map_frame <- frame_id``
  at the image's stamp from a ``tf2_ros.Buffer`` fed by a ``TransformListener`` (``/tf`` and
  ``/tf_static``), so ``map -> odom`` from AMCL/slam_toolbox, ``odom -> base_link`` from odometry and
  the URDF's ``base_link -> camera_optical`` all come from where the robot already publishes them.
- :class:`OdometryCameraPoses` (mode ``"odometry"``): ``T_odom_base`` interpolated from
  ``nav_msgs/Odometry`` times the ``camera_extrinsic`` parameter; the map is then in the odometry
  frame. Used when tf2_ros is not importable (PyPI installs without the vendored build).

:func:`make_camera_poses` picks one and logs which, and why.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..core.geometry import make_transform, quat_xyzw_to_matrix
from ..core.sync import PoseBuffer

__all__ = ["PoseLookup", "TfCameraPoses", "OdometryCameraPoses", "make_camera_poses", "tf2_available",
           "transform_to_matrix"]

#: Lookup statuses: the pose; not yet (newer transforms may still arrive); never (stamp older than
#: what is buffered, or the frame is unknown for longer than the caller waits).
OK, WAIT, TOO_OLD = "ok", "wait", "too_old"


@dataclass(frozen=True)
class PoseLookup:
    """Result of a pose lookup. ``T_world_camera`` is (4, 4) float64, camera optical frame -> world
    frame (``frame``), metres; None unless ``status == "ok"``. ``reason`` says why not."""

    T_world_camera: Optional[np.ndarray]
    status: str
    frame: str
    reason: str = ""


def tf2_available() -> bool:
    """Whether ``tf2_ros`` can be imported (a ROS install, or the vendored build in .ros_vendor)."""
    return importlib.util.find_spec("tf2_ros") is not None


def transform_to_matrix(transform: Any) -> np.ndarray:
    """(4, 4) matrix of a ``geometry_msgs/Transform`` (child frame -> parent frame, metres)."""
    t, q = transform.translation, transform.rotation
    return make_transform(quat_xyzw_to_matrix(np.array([q.x, q.y, q.z, q.w], dtype=np.float64)),
                          np.array([t.x, t.y, t.z], dtype=np.float64))


class TfCameraPoses:
    """``map_frame <- image frame_id`` at the image stamp from a tf2_ros buffer filled over DDS.

    Args:
        node: the rclpy node whose executor delivers ``/tf`` and ``/tf_static`` (no extra thread).
        map_frame: the world frame of the map, boxes and saved memories (``map``, or ``odom``).
        cache_time_s: how much TF history the buffer keeps (images older than this get TOO_OLD).
    """

    mode = "tf"

    def __init__(self, node: Any, map_frame: str, cache_time_s: float = 30.0) -> None:
        import tf2_ros
        from rclpy.duration import Duration

        if not map_frame:
            raise ValueError("map_frame is empty: name the world frame (e.g. map or odom)")
        self.map_frame = map_frame
        self.buffer = tf2_ros.Buffer(cache_time=Duration(seconds=cache_time_s), node=node)
        self.listener = tf2_ros.TransformListener(self.buffer, node, spin_thread=False)
        self._errors = (tf2_ros.LookupException, tf2_ros.ConnectivityException, tf2_ros.ExtrapolationException)
        self._extrapolation = tf2_ros.ExtrapolationException

    def lookup(self, frame_id: str, stamp_ns: int) -> PoseLookup:
        """``T_map_camera`` at ``stamp_ns`` (the image header's stamp) for the image's ``frame_id``."""
        from rclpy.time import Time

        if not frame_id:
            return PoseLookup(None, TOO_OLD, self.map_frame, "the image has an empty header.frame_id")
        try:
            tf = self.buffer.lookup_transform(self.map_frame, frame_id, Time(nanoseconds=int(stamp_ns)))
        except self._errors as exc:
            text = str(exc).replace("\n", " ")
            past = isinstance(exc, self._extrapolation) and "into the past" in text
            return PoseLookup(None, TOO_OLD if past else WAIT, self.map_frame, f"{type(exc).__name__}: {text}")
        return PoseLookup(transform_to_matrix(tf.transform), OK, self.map_frame)

    def close(self) -> None:
        """Unsubscribe from /tf and /tf_static."""
        self.listener.unregister()


class OdometryCameraPoses:
    """Fallback without TF: ``T_odom_base(stamp) @ T_base_camera`` from buffered odometry.

    Args:
        T_base_camera: (4, 4) static camera extrinsic (camera optical frame -> base frame, metres),
            from the ``camera_extrinsic`` parameter.
        odom_frame: the odometry messages' ``header.frame_id``: the frame the map is built in.
        max_extrapolation_s: how far past the newest odometry a stamp may be and still get it.
    """

    mode = "odometry"

    def __init__(self, T_base_camera: np.ndarray, odom_frame: str = "odom",  # noqa: N803
                 max_age_s: float = 10.0, max_extrapolation_s: float = 0.05) -> None:
        T = np.asarray(T_base_camera, dtype=np.float64)  # noqa: N806
        if T.shape != (4, 4):
            raise ValueError(f"T_base_camera must be (4, 4), got {T.shape}")
        self.T_base_camera = T
        self.map_frame = odom_frame
        self._odometry = PoseBuffer(max_age_s=max_age_s * 1e9, max_extrapolation_s=max_extrapolation_s * 1e9)

    def add_odometry(self, stamp_ns: int, T_odom_base: np.ndarray) -> None:  # noqa: N803
        """One ``nav_msgs/Odometry`` pose (base frame -> odometry frame) at its stamp."""
        self._odometry.add(int(stamp_ns), T_odom_base)

    def lookup(self, frame_id: str, stamp_ns: int) -> PoseLookup:
        """``T_odom_camera`` at ``stamp_ns``; ``frame_id`` is not used (one camera, one extrinsic)."""
        T_odom_base, status = self._odometry.lookup(int(stamp_ns))  # noqa: N806
        if T_odom_base is None:
            why = "no odometry at or after this stamp yet" if status == WAIT else "stamp older than buffered odometry"
            return PoseLookup(None, status, self.map_frame, why)
        return PoseLookup(T_odom_base @ self.T_base_camera, OK, self.map_frame)

    def close(self) -> None:
        self._odometry.clear()


def make_camera_poses(node: Any, map_frame: str, T_base_camera: np.ndarray, requested: str = "auto",
                      odom_frame: str = "odom", logger: Any = None) -> TfCameraPoses | OdometryCameraPoses:
    """The pose source the node runs, logged once at INFO with the reason.

    Args:
        requested: ``auto`` (TF when tf2_ros is importable), ``tf`` (fail without it) or ``odometry``.
        logger: where to log the choice (``node.get_logger()`` when None).

    Raises:
        ValueError: unknown ``requested``; or ``tf`` requested and tf2_ros not importable.
    """
    log = logger if logger is not None else node.get_logger()
    if requested not in ("auto", "tf", "odometry"):
        raise ValueError(f"pose source {requested!r} is not one of auto, tf, odometry")
    have_tf = tf2_available()
    if requested == "tf" and not have_tf:
        raise ValueError("pose source 'tf' requested but tf2_ros is not importable (source a ROS install, or "
                         "run set-up with ../shared/vendor present)")
    if requested != "odometry" and have_tf:
        log.info(f"camera poses from TF: {map_frame} <- image frame_id at each image stamp (tf2_ros)")
        return TfCameraPoses(node, map_frame)
    why = "requested" if requested == "odometry" else "tf2_ros is not importable"
    log.info(f"camera poses from odometry + camera_extrinsic in frame {odom_frame} ({why})")
    return OdometryCameraPoses(T_base_camera, odom_frame)
