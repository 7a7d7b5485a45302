"""Write RGB-D sequences as rosbag2 bags (MCAP or sqlite3, metadata version 8) with ``rosbags``.

A bag written here looks like one recorded from a RealSense on a wheeled robot (topic names in
:mod:`scene_vlm_ros.bag.topics`):

- ``/camera/color/image_raw`` rgb8, ``/camera/depth/image_raw`` 16UC1 mm (registered to colour),
  ``/camera/color/camera_info`` (plumb_bob, K/R/P), all with ``frame_id = camera_color_optical_frame``;
- ``/odom`` (``odom`` -> ``base_link``) and the same transform on ``/tf`` at each odometry stamp;
- ``/tf_static`` ``base_link -> camera_link -> camera_color_optical_frame``, written once at the
  first stamp and recorded with a transient-local QoS profile (as ``ros2 bag record`` does, so
  ``ros2 bag play`` re-offers it to late subscribers);
- optionally ``/camera/instances/image_raw`` (16UC1 object ids) and ``/camera/instances/labels``.

The bag's receive time of every message equals its header stamp (a perfect recorder), so time
ranges and replay timing are exact.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer

from ..core.geometry import R_LINK_OPTICAL, invert_transform, make_transform
from ..core.types import RGBDFrame
from . import messages as m
from .topics import (
    FRAME_BASE,
    FRAME_CAMERA_LINK,
    FRAME_CAMERA_OPTICAL,
    FRAME_MAP,
    FRAME_ODOM,
    MSGTYPE_CAMERA_INFO,
    MSGTYPE_COMPRESSED_IMAGE,
    MSGTYPE_IMAGE,
    MSGTYPE_INSTANCE_LABELS,
    MSGTYPE_ODOMETRY,
    MSGTYPE_TF,
    TOPIC_CAMERA_INFO,
    TOPIC_COLOR,
    TOPIC_COLOR_COMPRESSED,
    TOPIC_DEPTH,
    TOPIC_DEPTH_COMPRESSED,
    TOPIC_INSTANCE_LABELS,
    TOPIC_INSTANCES,
    TOPIC_ODOM,
    TOPIC_TF,
    TOPIC_TF_STATIC,
)

logger = logging.getLogger(__name__)

STORAGE_PLUGINS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
#: rosbag2 metadata version written (Humble reads <= 5 only partially; Jazzy/Kilted read 8 and 9).
BAG_VERSION = 8

#: ``camera_link -> camera_color_optical_frame``: the fixed REP-103 body -> optical rotation.
T_LINK_OPTICAL = make_transform(R_LINK_OPTICAL, np.zeros(3))

_ZERO = QosTime(sec=0, nsec=0)
#: The profile ``robot_state_publisher`` offers on /tf_static: reliable, transient local, keep last 1.
QOS_TF_STATIC = Qos(
    history=QosHistory.KEEP_LAST,
    depth=1,
    reliability=QosReliability.RELIABLE,
    durability=QosDurability.TRANSIENT_LOCAL,
    deadline=_ZERO,
    lifespan=_ZERO,
    liveliness=QosLiveliness.AUTOMATIC,
    liveliness_lease_duration=_ZERO,
    avoid_ros_namespace_conventions=False,
)
#: Default sensor/odometry profile: reliable, volatile, keep last 10 (rclpy's default publisher QoS).
QOS_DEFAULT = Qos(
    history=QosHistory.KEEP_LAST,
    depth=10,
    reliability=QosReliability.RELIABLE,
    durability=QosDurability.VOLATILE,
    deadline=_ZERO,
    lifespan=_ZERO,
    liveliness=QosLiveliness.AUTOMATIC,
    liveliness_lease_duration=_ZERO,
    avoid_ros_namespace_conventions=False,
)


class BagWriteError(RuntimeError):
    """The bag cannot be written (existing path, wrong call order, inconsistent frames)."""


def split_camera_extrinsic(T_base_camera_optical: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
    """``(T_base_link_camera_link, T_camera_link_optical)`` whose product is ``T_base_camera_optical``.

    ``camera_link`` is the REP-103 body frame of the camera (x forward, z up), related to the optical
    frame by the fixed :data:`T_LINK_OPTICAL` rotation, as RealSense/URDF camera descriptions do.
    """
    T = np.asarray(T_base_camera_optical, dtype=np.float64)
    return T @ invert_transform(T_LINK_OPTICAL), T_LINK_OPTICAL.copy()


class BagWriter:
    """Streams RGB-D frames, odometry and static TF into a rosbag2 bag; use as a context manager.

    ``T_base_camera_optical`` (4x4) is the camera extrinsic written to ``/tf_static``. Call
    :meth:`write_odometry` (odom -> base_link, also on /tf) and :meth:`write_frame` (images, camera
    info, instances) in time order; a frame's ``T_world_camera`` is *not* written (the pose of a
    frame in a bag is what odometry and TF say), so a reader reconstructs
    ``T_odom_base(stamp) @ T_base_camera_optical``. ``custom_data`` (str -> str) goes into the
    bag's ``metadata.yaml`` (provenance: source, seed, layout).
    """

    def __init__(
        self,
        path: Path | str,
        T_base_camera_optical: np.ndarray,  # noqa: N803
        storage: str = "mcap",
        with_instances: bool = False,
        overwrite: bool = False,
        depth_encoding: str = "16UC1",
        custom_data: dict[str, str] | None = None,
        compressed: bool = False,
        odometry: bool = True,
        T_map_odom: np.ndarray | None = None,  # noqa: N803
    ) -> None:
        if storage not in STORAGE_PLUGINS:
            raise BagWriteError(f"unknown storage {storage!r}; use one of {sorted(STORAGE_PLUGINS)}")
        if depth_encoding not in ("16UC1", "32FC1"):
            raise BagWriteError(f"depth_encoding must be '16UC1' or '32FC1', got {depth_encoding!r}")
        self.path = Path(path)
        self.storage = storage
        self.with_instances = with_instances
        self.overwrite = overwrite
        self.depth_encoding = depth_encoding
        #: images as a recording robot stores them: jpeg colour and compressedDepth png depth
        self.compressed = compressed
        T = np.asarray(T_base_camera_optical, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise BagWriteError(f"T_base_camera_optical must be a finite 4x4 transform, got shape {T.shape}")
        self.T_base_camera_optical = T
        #: False: poses only on /tf (a robot whose odometry is not recorded as nav_msgs/Odometry)
        self.odometry = odometry
        #: a localiser's map -> odom (e.g. AMCL), written on /tf beside each odom -> base_link
        self.T_map_odom = None if T_map_odom is None else np.asarray(T_map_odom, dtype=np.float64)
        if self.T_map_odom is not None and self.T_map_odom.shape != (4, 4):
            raise BagWriteError(f"T_map_odom must be 4x4, got shape {self.T_map_odom.shape}")
        self.custom_data = {str(k): str(v) for k, v in (custom_data or {}).items()}
        self._writer: Writer | None = None
        self._conns: dict[str, Any] = {}
        self._static_written = False
        self.counts: dict[str, int] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    def open(self) -> BagWriter:
        if self.path.exists():
            if not self.overwrite:
                raise BagWriteError(f"{self.path} already exists; remove it or pass overwrite=True (--overwrite)")
            if not (self.path / "metadata.yaml").is_file():
                # Refuse to rm -r something that is not a bag (a typo'd --out could name a source dir).
                raise BagWriteError(f"{self.path} exists and is not a rosbag2 directory; not overwriting it")
            shutil.rmtree(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        store = m.get_scene_typestore()
        writer = Writer(self.path, version=BAG_VERSION, storage_plugin=STORAGE_PLUGINS[self.storage])
        for key, value in self.custom_data.items():
            writer.set_custom_data(key, value)
        writer.open()
        self._writer = writer
        topics = [
            (TOPIC_COLOR_COMPRESSED, MSGTYPE_COMPRESSED_IMAGE, QOS_DEFAULT) if self.compressed
            else (TOPIC_COLOR, MSGTYPE_IMAGE, QOS_DEFAULT),
            (TOPIC_DEPTH_COMPRESSED, MSGTYPE_COMPRESSED_IMAGE, QOS_DEFAULT) if self.compressed
            else (TOPIC_DEPTH, MSGTYPE_IMAGE, QOS_DEFAULT),
            (TOPIC_CAMERA_INFO, MSGTYPE_CAMERA_INFO, QOS_DEFAULT),
            (TOPIC_ODOM, MSGTYPE_ODOMETRY, QOS_DEFAULT),
            (TOPIC_TF, MSGTYPE_TF, QOS_DEFAULT),
            (TOPIC_TF_STATIC, MSGTYPE_TF, QOS_TF_STATIC),
        ]
        if self.with_instances:
            topics += [
                (TOPIC_INSTANCES, MSGTYPE_IMAGE, QOS_DEFAULT),
                (TOPIC_INSTANCE_LABELS, MSGTYPE_INSTANCE_LABELS, QOS_DEFAULT),
            ]
        for topic, msgtype, qos in topics:
            self._conns[topic] = writer.add_connection(topic, msgtype, typestore=store, offered_qos_profiles=[qos])
            self.counts[topic] = 0
        logger.info("writing %s bag %s", self.storage, self.path)
        return self

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            logger.info("wrote %s: %s", self.path, self.counts)

    def __enter__(self) -> BagWriter:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------------

    def _write(self, topic: str, msg: Any, stamp_ns: int) -> None:
        if self._writer is None:
            raise BagWriteError("BagWriter is not open; use it as a context manager or call open() first")
        self._writer.write(self._conns[topic], int(stamp_ns), m.serialize(msg))
        self.counts[topic] += 1

    def _before_write(self, stamp_ns: int) -> None:
        """Validate the stamp; write /tf_static once, at the first stamp (its transforms never change)."""
        if stamp_ns < 0:
            raise BagWriteError(f"negative stamp {stamp_ns} ns")
        if not self._static_written:
            T_link, T_opt = split_camera_extrinsic(self.T_base_camera_optical)
            tfs = [
                m.transform_to_msg(T_link, stamp_ns, FRAME_BASE, FRAME_CAMERA_LINK),
                m.transform_to_msg(T_opt, stamp_ns, FRAME_CAMERA_LINK, FRAME_CAMERA_OPTICAL),
            ]
            self._static_written = True
            self._write(TOPIC_TF_STATIC, m.tf_message(tfs), stamp_ns)

    def write_odometry(self, stamp_ns: int, T_odom_base: np.ndarray) -> None:  # noqa: N803
        """``/odom`` (unless ``odometry=False``) and ``/tf`` (odom -> base_link, and map -> odom when
        ``T_map_odom`` was given) at ``stamp_ns``."""
        self._before_write(stamp_ns)
        if self.odometry:
            self._write(TOPIC_ODOM, m.odometry_to_msg(T_odom_base, stamp_ns, FRAME_ODOM, FRAME_BASE), stamp_ns)
        tfs = [m.transform_to_msg(T_odom_base, stamp_ns, FRAME_ODOM, FRAME_BASE)]
        if self.T_map_odom is not None:
            tfs.append(m.transform_to_msg(self.T_map_odom, stamp_ns, FRAME_MAP, FRAME_ODOM))
        self._write(TOPIC_TF, m.tf_message(tfs), stamp_ns)

    def write_frame(self, frame: RGBDFrame, stamp_ns: int | None = None) -> int:
        """Colour, depth, camera info (and instance mask + labels when enabled) of one frame.

        ``stamp_ns`` defaults to ``frame.stamp_s`` rounded to nanoseconds. Returns the stamp used.
        """
        stamp = m.seconds_to_ns(frame.stamp_s) if stamp_ns is None else int(stamp_ns)
        h, w = frame.depth_m.shape[:2]
        if frame.color_rgb.shape[:2] != (h, w):
            raise BagWriteError(
                f"colour {frame.color_rgb.shape[:2]} and depth {(h, w)} differ in size; "
                "register/resize them before writing (the bag's depth is registered to colour)"
            )
        if (frame.intrinsics.width, frame.intrinsics.height) != (w, h):
            raise BagWriteError(
                f"intrinsics are for {frame.intrinsics.width}x{frame.intrinsics.height} but the image is {w}x{h}"
            )
        self._before_write(stamp)
        color = np.ascontiguousarray(frame.color_rgb, dtype=np.uint8)
        mask_msg = labels_msg = None
        if self.with_instances:
            if frame.instance_mask is None:
                raise BagWriteError(
                    f"frame {frame.frame_index} has no instance_mask but the bag was opened with_instances=True"
                )
            mask = np.asarray(frame.instance_mask)
            if mask.shape != (h, w):
                raise BagWriteError(f"instance mask shape {mask.shape} differs from the image {(h, w)}")
            if mask.size and (mask.min() < 0 or mask.max() > 0xFFFF):
                raise BagWriteError("instance ids must fit 16UC1 (0..65535)")
            mask_msg = m.image_to_msg(mask.astype(np.uint16), "16UC1", stamp, FRAME_CAMERA_OPTICAL)
            labels_msg = m.labels_to_msg(frame.instance_labels or {}, stamp, FRAME_CAMERA_OPTICAL)
        # A driver's order: calibration (and the label table) first, then the images, depth last.
        self._write(TOPIC_CAMERA_INFO, m.camera_info_to_msg(frame.intrinsics, stamp, FRAME_CAMERA_OPTICAL), stamp)
        if labels_msg is not None:
            self._write(TOPIC_INSTANCE_LABELS, labels_msg, stamp)
        if self.compressed:
            self._write(TOPIC_COLOR_COMPRESSED, m.compressed_image_to_msg(color, stamp, FRAME_CAMERA_OPTICAL), stamp)
        else:
            self._write(TOPIC_COLOR, m.image_to_msg(color, "rgb8", stamp, FRAME_CAMERA_OPTICAL), stamp)
        if mask_msg is not None:
            self._write(TOPIC_INSTANCES, mask_msg, stamp)
        if self.compressed:
            self._write(TOPIC_DEPTH_COMPRESSED, m.compressed_depth_to_msg(frame.depth_m, stamp, FRAME_CAMERA_OPTICAL),
                        stamp)
        else:
            self._write(TOPIC_DEPTH, m.depth_to_msg(frame.depth_m, stamp, FRAME_CAMERA_OPTICAL, self.depth_encoding),
                        stamp)
        return stamp


def write_bag(
    path: Path | str,
    frames: Any,
    T_base_camera_optical: np.ndarray,  # noqa: N803
    storage: str = "mcap",
    with_instances: bool = False,
    overwrite: bool = False,
    start_stamp_ns: int = 0,
    **writer_options: Any,
) -> dict[str, int]:
    """Write ``(RGBDFrame, T_odom_base)`` pairs (odometry at each frame's stamp); returns message counts per topic.

    Stamps are ``start_stamp_ns + frame.stamp_s`` (ns). A bag whose first stamp is 0 is legal, but
    tf2 reads time 0 as "latest", so recordings meant for TF consumers should pass an epoch offset
    (``make-bag`` uses :data:`scene_vlm_ros.commands.make_bag.START_STAMP_NS`).
    """
    with BagWriter(path, T_base_camera_optical, storage, with_instances, overwrite, **writer_options) as writer:
        for frame, T_odom_base in frames:
            stamp = int(start_stamp_ns) + m.seconds_to_ns(frame.stamp_s)
            writer.write_odometry(stamp, T_odom_base)
            writer.write_frame(frame, stamp)
        return dict(writer.counts)
