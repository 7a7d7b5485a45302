"""Read rosbag2 bags (MCAP or sqlite3) back into posed :class:`RGBDFrame` objects with ``rosbags``.

:func:`read_bag` feeds the bag's messages, in recorded order, through the node's own
:class:`~scene_vlm_ros.core.pipeline.FramePipeline` (one decoder, one synchroniser, one pose lookup:
``T_world_camera = T_odom_base(stamp) @ T_base_camera_optical``, world = the odometry frame), so
offline mapping and evaluation measure the path the robot runs. It streams: memory stays bounded
by a few frames whatever the bag's length.

:func:`iter_raw_messages` yields raw CDR bytes for live replay (rclpy publishes them unchanged);
:func:`read_bag_info` summarises a bag like ``ros2 bag info``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rosbags.rosbag2 import Reader

from ..core.geometry import invert_transform
from ..core.pipeline import FramePipeline, PipelineConfig
from ..core.types import RGBDFrame
from . import messages as m
from .topics import (
    FRAME_BASE,
    FRAME_ODOM,
    TOPIC_CAMERA_INFO,
    TOPIC_COLOR,
    TOPIC_DEPTH,
    TOPIC_INSTANCE_LABELS,
    TOPIC_INSTANCES,
    TOPIC_ODOM,
    TOPIC_TF,
    TOPIC_TF_STATIC,
)

logger = logging.getLogger(__name__)

class BagReadError(RuntimeError):
    """The bag is missing, unreadable, or lacks what is needed to build posed frames."""


@dataclass(frozen=True)
class TopicSummary:
    msgtype: str
    count: int


@dataclass(frozen=True)
class BagInfo:
    """What ``ros2 bag info`` shows: storage, first/last message stamps (ns since epoch), per-topic type/count."""

    path: Path
    storage: str
    start_ns: int
    end_ns: int
    message_count: int
    topics: dict[str, TopicSummary]
    custom_data: dict[str, str] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    def to_json(self) -> dict:
        return {
            "path": str(self.path),
            "storage": self.storage,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "duration_s": self.duration_s,
            "message_count": self.message_count,
            "topics": {t: {"msgtype": s.msgtype, "count": s.count} for t, s in self.topics.items()},
            "custom_data": dict(self.custom_data),
        }


@dataclass
class BagFrame:
    """One synchronised, posed observation read from a bag.

    ``frame.T_world_camera = T_odom_base @ T_base_camera_optical`` where ``T_odom_base`` is the
    odometry interpolated at ``stamp_ns`` (the images' header stamp).
    """

    frame: RGBDFrame
    stamp_ns: int
    T_odom_base: np.ndarray  # (4, 4)
    T_base_camera_optical: np.ndarray  # (4, 4)
    color_frame_id: str
    depth_frame_id: str
    world_frame_id: str
    base_frame_id: str


@dataclass
class BagTopics:
    """Topic names :func:`read_bag` reads (defaults: :mod:`scene_vlm_ros.bag.topics`)."""

    color: str = TOPIC_COLOR
    depth: str = TOPIC_DEPTH
    camera_info: str = TOPIC_CAMERA_INFO
    odom: str = TOPIC_ODOM
    tf: str = TOPIC_TF
    tf_static: str = TOPIC_TF_STATIC
    instances: str = TOPIC_INSTANCES
    instance_labels: str = TOPIC_INSTANCE_LABELS


def _open(path: Path | str) -> Reader:
    p = Path(path)
    if not p.exists():
        raise BagReadError(f"bag not found: {p}")
    if p.is_dir() and not (p / "metadata.yaml").is_file():
        raise BagReadError(f"{p} is not a rosbag2 directory (no metadata.yaml); pass the bag directory")
    try:
        reader = Reader(p)
        reader.open()
    except Exception as exc:  # rosbags raises several unrelated types for broken bags
        raise BagReadError(f"cannot open bag {p}: {exc}") from exc
    return reader


def read_bag_info(path: Path | str) -> BagInfo:
    """Summary of a bag: storage plugin, start/end stamps, message count and per-topic types and counts."""
    reader = _open(path)
    try:
        topics = {
            name: TopicSummary(str(info.msgtype), int(info.msgcount)) for name, info in sorted(reader.topics.items())
        }
        p = Path(path)
        storage = "mcap" if (p.suffix == ".mcap" or (p.is_dir() and any(p.glob("*.mcap")))) else "sqlite3"
        count = int(reader.message_count)
        # rosbags' end_time is one past the last message; report the last message's own stamp.
        end_ns = int(reader.end_time) - 1 if count else int(reader.start_time)
        custom = _custom_data(Path(path))
        return BagInfo(Path(path), storage, int(reader.start_time), end_ns, count, topics, custom)
    finally:
        reader.close()


def _custom_data(path: Path) -> dict[str, str]:
    """``custom_data`` of a bag's metadata.yaml (rosbags' Reader does not expose it publicly)."""
    meta_path = path / "metadata.yaml"
    if not meta_path.is_file():  # a bare .mcap/.db3 file has no rosbag2 metadata
        return {}
    meta = yaml.safe_load(meta_path.read_text(encoding="utf-8")) or {}
    custom = meta.get("rosbag2_bagfile_information", {}).get("custom_data") or {}
    return {str(k): str(v) for k, v in custom.items()}


def iter_raw_messages(path: Path | str, topics: Iterable[str] | None = None) -> Iterator[tuple[str, str, bytes, int]]:
    """``(topic, msgtype, cdr_bytes, stamp_ns)`` of every message in bag-time order (optionally only ``topics``).

    ``stamp_ns`` is the recorded receive time; rclpy can publish ``cdr_bytes`` as-is.
    """
    reader = _open(path)
    try:
        wanted = set(topics) if topics is not None else None
        conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if wanted is not None and not conns:
            raise BagReadError(f"none of the topics {sorted(wanted)} is in {path} (it has {sorted(reader.topics)})")
        for conn, stamp_ns, raw in reader.messages(connections=conns):
            yield conn.topic, conn.msgtype, bytes(raw), int(stamp_ns)
    finally:
        reader.close()


def resolve_image_topics(topics: BagTopics, available: Iterable[str]) -> BagTopics:
    """``topics`` with colour/depth moved to their ``image_transport`` compressed topics
    (``.../compressed``, ``.../compressedDepth``) when only those were recorded."""
    available = set(available)
    color, depth = topics.color, topics.depth
    if color not in available and f"{color}/compressed" in available:
        color = f"{color}/compressed"
    if depth not in available and f"{depth}/compressedDepth" in available:
        depth = f"{depth}/compressedDepth"
    return BagTopics(**{**vars(topics), "color": color, "depth": depth})


def stream_topics(topics: BagTopics, use_mask: bool = True) -> dict[str, str]:
    """``{topic: stream}`` of the pipeline's streams (see :meth:`FramePipeline.on_message`)."""
    mapping = {
        topics.color: "color", topics.depth: "depth", topics.camera_info: "camera_info", topics.odom: "odom",
        topics.tf: "tf", topics.tf_static: "tf_static",
    }
    if use_mask:
        mapping.update({topics.instances: "mask", topics.instance_labels: "labels"})
    return {t: s for t, s in mapping.items() if t}


def iter_stream_messages(path: Path | str, topics: BagTopics | None = None, use_mask: bool = True
                         ) -> Iterator[tuple[str, Any]]:
    """``(stream, message)`` of a bag's sensor topics in recorded (receive) order, deserialised.

    Checks first that the bag can make posed frames at all: colour and depth topics, camera info,
    and odometry or ``/tf``; raises :class:`BagReadError` naming what is missing.
    """
    topics = topics or BagTopics()
    reader = _open(path)
    try:
        available = set(reader.topics)
        topics = resolve_image_topics(topics, available)
        missing = [t for t in (topics.color, topics.depth) if t not in available]
        if missing:
            raise BagReadError(f"{path} lacks the image topics {missing}; it has {sorted(available)}")
        counts = {t: int(info.msgcount) for t, info in reader.topics.items()}
        if not counts.get(topics.camera_info):
            raise BagReadError(f"{path} has no {topics.camera_info} messages; intrinsics are unknown")
        if not counts.get(topics.odom) and not counts.get(topics.tf):
            raise BagReadError(
                f"the bag has neither {topics.odom} (nav_msgs/Odometry) nor {topics.tf} ({FRAME_ODOM}->{FRAME_BASE}); "
                "frames cannot be posed"
            )
        streams = stream_topics(topics, use_mask)
        conns = [c for c in reader.connections if c.topic in streams]
        for conn, _, raw in reader.messages(connections=conns):
            yield streams[conn.topic], m.deserialize(raw, conn.msgtype)
    finally:
        reader.close()


def read_bag(
    path: Path | str,
    topics: BagTopics | None = None,
    sync_tolerance_s: float | None = None,
    max_extrapolation_s: float = 0.05,
    T_base_camera_optical: np.ndarray | None = None,  # noqa: N803
    use_mask: bool = True,
    config: PipelineConfig | None = None,
    stats_out: dict | None = None,
) -> Iterator[BagFrame]:
    """Posed, synchronised frames of a bag, through the node's own :class:`FramePipeline`.

    The bag's messages go through the pipeline in recorded order, exactly as the node receives them
    live: colour, depth (and the instance mask + labels when recorded and ``use_mask``) are matched
    on depth within ``sync_tolerance_s`` (default: the pipeline's ``slop_s``); odometry (or
    ``odom -> base_link`` on ``/tf``) is interpolated at the depth stamp; the extrinsic
    ``base_link -> image frame_id`` comes from ``/tf_static`` unless ``T_base_camera_optical`` is given.
    Frames the pipeline drops are counted and logged at the end (and ``stats_out``, when given, is
    filled with the pipeline's stats). Depth is float32 metres, colour RGB.
    """
    cfg = config or PipelineConfig(pose_max_wait_s=1.0, pending_max=64, queue_size=64)
    if sync_tolerance_s is not None:
        cfg.slop_s = max(float(sync_tolerance_s), 1e-6)
    cfg.max_extrapolation_s = max_extrapolation_s
    cfg.use_instance_mask = use_mask
    cfg.expect_mask = use_mask and bool((topics or BagTopics()).instances) and (
        (topics or BagTopics()).instances in read_bag_info(path).topics)
    pipeline = FramePipeline(None, cfg)
    if T_base_camera_optical is not None:
        pipeline.T_base_camera = np.asarray(T_base_camera_optical, dtype=np.float64)
    n = 0
    for stream, msg in iter_stream_messages(path, topics, use_mask):
        for frame in pipeline.on_message(stream, msg):
            n += 1
            yield _bag_frame(pipeline, frame, path)
    for frame in pipeline.flush():
        n += 1
        yield _bag_frame(pipeline, frame, path)
    stats = pipeline.stats()
    if stats_out is not None:
        stats_out.update(stats)
    dropped = stats["dropped"]
    if dropped.get("no_extrinsic") and n == 0:
        raise BagReadError(
            f"{path}: no static transform chain {pipeline.base_frame} -> image frame on /tf_static; "
            "pass T_base_camera_optical explicitly"
        )
    if dropped:
        logger.warning("%s: %d frames read; not read, by reason: %s", path, n, dropped)


def _bag_frame(pipeline: FramePipeline, frame: RGBDFrame, path: Path | str) -> BagFrame:
    info = pipeline.released.pop(frame.frame_index)
    return BagFrame(frame, info.stamp_ns, info.T_odom_base, info.T_base_camera,
                    info.color_frame_id, info.depth_frame_id, pipeline.odom_frame, pipeline.base_frame)


def camera_pose_from_odometry(T_odom_base: np.ndarray, T_base_camera_optical: np.ndarray) -> np.ndarray:  # noqa: N803
    """``T_odom_camera_optical``; the inverse relation of :func:`base_pose_from_camera`."""
    return np.asarray(T_odom_base) @ np.asarray(T_base_camera_optical)


def base_pose_from_camera(T_world_camera: np.ndarray, T_base_camera_optical: np.ndarray) -> np.ndarray:  # noqa: N803
    """``T_world_base = T_world_camera @ inv(T_base_camera_optical)``: turns camera poses into odometry."""
    return np.asarray(T_world_camera) @ invert_transform(np.asarray(T_base_camera_optical))
