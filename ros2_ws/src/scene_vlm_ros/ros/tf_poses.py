"""Camera poses at image stamps: from TF when tf2_ros is importable, else odometry + extrinsic.

Two modes:

- :class:`TfCameraPoses` (mode ``"tf"``): ``T_map_camera`` = the transform ``map_frame <- frame_id``
  at the image's stamp from a ``tf2_ros.Buffer`` fed by a ``TransformListener`` (``/tf`` and
  ``/tf_static``), so ``map -> odom`` from AMCL/slam_toolbox, ``odom -> base_link`` from odometry and
  the URDF's ``base_link -> camera_optical`` all come from where the robot already publishes them.
- the odometry fallback (mode ``"odometry"``): ``T_odom_base`` interpolated from ``nav_msgs/Odometry``
  times the camera extrinsic, computed by :class:`~scene_vlm_ros.core.pipeline.FramePipeline`
  itself; the map is then in the odometry frame. Used when tf2_ros is not importable (PyPI installs
  without the vendored build) or when asked for.

:func:`make_camera_poses` picks one and logs which, and why.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..core.geometry import make_transform, quat_xyzw_to_matrix

__all__ = ["PoseLookup", "TfCameraPoses", "make_camera_poses", "tf2_available", "transform_to_matrix"]

#: Lookup statuses: the pose; not yet (newer transforms may still arrive); never (stamp older than
#: what is buffered, or the frame is unknown for longer than the caller waits).
OK, WAIT, TOO_OLD = "ok", "wait", "too_old"
#: TF has no chain between the map frame and the image frame (yet): see FramePipeline's auto fallback.
UNKNOWN = "unknown"


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
            # Frames TF cannot connect at all (no such frame, no chain): UNKNOWN, so that in auto mode
            # the pipeline can fall back to odometry + extrinsic; extrapolation means "not yet".
            status = TOO_OLD if past else (WAIT if isinstance(exc, self._extrapolation) else UNKNOWN)
            return PoseLookup(None, status, self.map_frame, f"{type(exc).__name__}: {text}")
        return PoseLookup(transform_to_matrix(tf.transform), OK, self.map_frame)

    def camera_pose(self, frame_id: str, stamp_ns: int) -> tuple[Optional[np.ndarray], str]:
        """:meth:`lookup` as FramePipeline's ``camera_pose`` hook: ``(T_map_camera or None, status)``."""
        found = self.lookup(frame_id, stamp_ns)
        return found.T_world_camera, found.status

    def close(self) -> None:
        """Unsubscribe from /tf and /tf_static."""
        self.listener.unregister()


def make_camera_poses(node: Any, map_frame: str, requested: str = "auto", odom_frame: str = "odom",
                      logger: Any = None) -> Optional[TfCameraPoses]:
    """The pose source the node runs, logged once at INFO with the reason.

    Args:
        requested: ``auto`` (TF when tf2_ros is importable), ``tf`` (fail without it) or ``odometry``.
        odom_frame: the frame the odometry fallback builds the map in (for the log line).
        logger: where to log the choice (``node.get_logger()`` when None).

    Returns:
        A :class:`TfCameraPoses`, or None for the odometry fallback: ``T_odom_base`` from
        ``nav_msgs/Odometry`` interpolated at the image stamp, times the ``base -> camera`` extrinsic
        (``/tf_static`` or the ``camera_extrinsic`` parameter), which
        :class:`~scene_vlm_ros.core.pipeline.FramePipeline` computes itself.

    Raises:
        ValueError: unknown ``requested``; or ``tf`` requested and tf2_ros not importable.
    """
    log = logger if logger is not None else node.get_logger()
    if requested not in ("auto", "tf", "odometry"):
        raise ValueError(f"pose source {requested!r} is not one of auto, tf, odometry")
    have_tf = tf2_available()
    if requested == "tf" and not have_tf:
        raise ValueError("pose_source 'tf' requested but tf2_ros is not importable (source a ROS install, or "
                         "run set-up with ../shared/vendor present)")
    if requested != "odometry" and have_tf:
        log.info(f"camera poses from TF: {map_frame} <- image frame_id at each image stamp (tf2_ros)")
        return TfCameraPoses(node, map_frame)
    why = "requested" if requested == "odometry" else "tf2_ros is not importable"
    log.info(f"camera poses from odometry + camera extrinsic, map in frame {odom_frame} ({why})")
    return None
