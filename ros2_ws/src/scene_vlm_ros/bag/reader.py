"""Read rosbag2 bags (MCAP or sqlite3) back into posed :class:`RGBDFrame` objects with ``rosbags``.

:func:`read_bag` synchronises colour, depth and (when recorded) the instance mask + labels by
header stamp, interpolates the odometry pose at the image's own stamp (slerp on rotation, linear on
translation) and composes it with the camera extrinsic from ``/tf_static``:
``T_world_camera = T_odom_base(stamp) @ T_base_camera_optical`` (world = the odometry frame).
It reads the bag twice: first the small pose/calibration topics, then the images streaming, so
memory stays bounded by a few frames whatever the bag's length.

:func:`iter_raw_messages` yields raw CDR bytes for live replay (rclpy publishes them unchanged);
:func:`read_bag_info` summarises a bag like ``ros2 bag info``.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rosbags.rosbag2 import Reader

from ..core.geometry import invert_transform
from ..core.sync import interpolate_pose
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

#: Pending half-frames kept while waiting for their partners; older ones are dropped (logged).
_MAX_PENDING = 64


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


class PoseTrack:
    """Time-stamped poses ``T_parent_child`` with interpolation (linear translation, slerp rotation)."""

    def __init__(self, stamps_ns: list[int], transforms: list[np.ndarray]) -> None:
        order = np.argsort(np.asarray(stamps_ns, dtype=np.int64), kind="stable")
        stamps = [int(stamps_ns[i]) for i in order]
        mats = [transforms[i] for i in order]
        # Duplicate stamps (a pose both on /odom and /tf) would make the slerp ill-defined: keep the first.
        keep = [i for i in range(len(stamps)) if i == 0 or stamps[i] != stamps[i - 1]]
        self.stamps_ns = [stamps[i] for i in keep]
        self.transforms = np.stack([mats[i] for i in keep]) if keep else np.zeros((0, 4, 4))

    def __len__(self) -> int:
        return len(self.stamps_ns)

    def at(self, stamp_ns: int, max_extrapolation_ns: int = 0) -> np.ndarray | None:
        """Pose at ``stamp_ns``; the end pose within ``max_extrapolation_ns`` outside the range; else None."""
        if not self.stamps_ns:
            return None
        first, last = self.stamps_ns[0], self.stamps_ns[-1]
        if stamp_ns <= first:
            return self.transforms[0].copy() if first - stamp_ns <= max_extrapolation_ns else None
        if stamp_ns >= last:
            return self.transforms[-1].copy() if stamp_ns - last <= max_extrapolation_ns else None
        j = bisect.bisect_left(self.stamps_ns, stamp_ns)
        if self.stamps_ns[j] == stamp_ns:
            return self.transforms[j].copy()
        t0, t1 = self.stamps_ns[j - 1], self.stamps_ns[j]
        a = (stamp_ns - t0) / (t1 - t0)
        return interpolate_pose(self.transforms[j - 1], self.transforms[j], a)


@dataclass
class _Calibration:
    """What the first pass collects: pose track, static TF tree, camera infos by stamp."""

    track: PoseTrack
    world_frame: str
    base_frame: str
    static: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)  # child -> (parent, T_parent_child)
    infos: list[tuple[int, Any]] = field(default_factory=list)  # (stamp_ns, CameraInfo message)

    def chain(self, base: str, target: str) -> np.ndarray | None:
        """``T_base_target`` by walking the static tree from ``target`` up to ``base``."""
        T = np.eye(4)
        frame, seen = target, set()
        while frame != base:
            if frame not in self.static or frame in seen:
                return None
            seen.add(frame)
            parent, T_pc = self.static[frame]
            T = T_pc @ T
            frame = parent
        return T

    def info_at(self, stamp_ns: int) -> Any:
        """The latest CameraInfo at or before ``stamp_ns`` (the first one for earlier stamps)."""
        stamps = [s for s, _ in self.infos]
        j = bisect.bisect_right(stamps, stamp_ns) - 1
        return self.infos[max(j, 0)][1]


def _first_pass(reader: Reader, topics: BagTopics) -> _Calibration:
    by_topic = {c.topic: c for c in reader.connections}
    wanted = [by_topic[t] for t in (topics.odom, topics.tf, topics.tf_static, topics.camera_info) if t in by_topic]
    odom: list[tuple[int, np.ndarray]] = []
    tf: dict[tuple[str, str], list[tuple[int, np.ndarray]]] = {}
    odom_frames: tuple[str, str] | None = None
    static: dict[str, tuple[str, np.ndarray]] = {}
    infos: list[tuple[int, Any]] = []
    for conn, _, raw in reader.messages(connections=wanted):
        msg = m.deserialize(raw, conn.msgtype)
        if conn.topic == topics.odom:
            stamp, parent, child, T = m.msg_to_odometry(msg)
            odom_frames = odom_frames or (parent, child)
            odom.append((stamp, T))
        elif conn.topic == topics.camera_info:
            m.msg_to_camera_info(msg)  # validate early: a bag with an uncalibrated camera fails here, clearly
            infos.append((m.time_to_ns(msg.header.stamp), msg))
        else:
            for ts in msg.transforms:
                stamp, parent, child, T = m.msg_to_transform(ts)
                if conn.topic == topics.tf_static:
                    static[child] = (parent, T)
                else:
                    tf.setdefault((parent, child), []).append((stamp, T))
    if odom:
        world, base = odom_frames or (FRAME_ODOM, FRAME_BASE)
        track = PoseTrack([s for s, _ in odom], [T for _, T in odom])
    elif (FRAME_ODOM, FRAME_BASE) in tf:
        # No /odom topic (e.g. a bag recorded from a SLAM stack): use the odom -> base_link TF.
        world, base = FRAME_ODOM, FRAME_BASE
        seq = tf[(world, base)]
        track = PoseTrack([s for s, _ in seq], [T for _, T in seq])
        logger.info("no %s in the bag; using the %s -> %s transforms on %s", topics.odom, world, base, topics.tf)
    else:
        raise BagReadError(
            f"the bag has neither {topics.odom} (nav_msgs/Odometry) nor {FRAME_ODOM}->{FRAME_BASE} on {topics.tf}; "
            "frames cannot be posed"
        )
    infos.sort(key=lambda x: x[0])
    return _Calibration(track, world, base, static, infos)


def read_bag(
    path: Path | str,
    topics: BagTopics | None = None,
    sync_tolerance_s: float = 0.0,
    max_extrapolation_s: float = 0.05,
    T_base_camera_optical: np.ndarray | None = None,  # noqa: N803
) -> Iterator[BagFrame]:
    """Posed, synchronised frames of a bag, in stamp order.

    Colour and depth (and the instance mask + labels when the bag has those topics) are paired by
    header stamp: exactly by default, or nearest within ``sync_tolerance_s`` for drivers that stamp
    the two streams separately. Odometry is interpolated at the colour stamp; frames further than
    ``max_extrapolation_s`` outside the odometry's time range are skipped (logged). The extrinsic
    ``base_link -> image frame_id`` comes from ``/tf_static`` unless ``T_base_camera_optical`` is given.
    Depth is float32 metres (16UC1 mm / 1000), colour RGB uint8.
    """
    topics = topics or BagTopics()
    reader = _open(path)
    try:
        available = set(reader.topics)
        missing = [t for t in (topics.color, topics.depth) if t not in available]
        if missing:
            raise BagReadError(f"{path} lacks the image topics {missing}; it has {sorted(available)}")
        calib = _first_pass(reader, topics)
        if not calib.infos:
            raise BagReadError(f"{path} has no {topics.camera_info} messages; intrinsics are unknown")
        with_instances = topics.instances in available
        with_labels = topics.instance_labels in available
        by_topic = {c.topic: c for c in reader.connections}
        image_topics = [topics.color, topics.depth] + ([topics.instances] if with_instances else [])
        image_topics += [topics.instance_labels] if with_labels else []
        conns = [by_topic[t] for t in image_topics]
        tol_ns = int(round(sync_tolerance_s * 1e9))
        pending: dict[str, dict[int, Any]] = {t: {} for t in image_topics}
        extrinsics: dict[str, np.ndarray] = {}
        stats = {"emitted": 0, "no_pose": 0, "dropped_unmatched": 0}
        index = 0

        def match(topic: str, stamp: int) -> int | None:
            cands = pending[topic]
            if stamp in cands:
                return stamp
            if tol_ns <= 0 or not cands:
                return None
            best = min(cands, key=lambda s: abs(s - stamp))
            return best if abs(best - stamp) <= tol_ns else None

        for conn, _, raw in reader.messages(connections=conns):
            msg = m.deserialize(raw, conn.msgtype)
            stamp = m.time_to_ns(msg.header.stamp)
            pending[conn.topic][stamp] = msg
            if len(pending[conn.topic]) > _MAX_PENDING:
                oldest = min(pending[conn.topic])
                del pending[conn.topic][oldest]
                stats["dropped_unmatched"] += 1
            # Try to complete the frame anchored at each pending colour image (normally just this one).
            for color_stamp in sorted(pending[topics.color]):
                parts = {topics.color: color_stamp}
                for t in image_topics[1:]:
                    s = match(t, color_stamp)
                    if s is None:
                        break
                    parts[t] = s
                else:
                    msgs = {t: pending[t].pop(s) for t, s in parts.items()}
                    bag_frame = _build_frame(msgs, topics, calib, extrinsics, T_base_camera_optical,
                                             int(round(max_extrapolation_s * 1e9)), index, path)
                    if bag_frame is None:
                        stats["no_pose"] += 1
                        continue
                    index += 1
                    stats["emitted"] += 1
                    yield bag_frame
        leftover = sum(len(v) for v in pending.values())
        if leftover or stats["no_pose"] or stats["dropped_unmatched"]:
            logger.warning(
                "%s: %d frames read, %d skipped without odometry, %d unmatched messages left over, %d dropped",
                path, stats["emitted"], stats["no_pose"], leftover, stats["dropped_unmatched"],
            )
    finally:
        reader.close()


def _build_frame(
    msgs: dict[str, Any],
    topics: BagTopics,
    calib: _Calibration,
    extrinsics: dict[str, np.ndarray],
    T_base_camera_optical: np.ndarray | None,  # noqa: N803
    max_extrapolation_ns: int,
    index: int,
    path: Path | str,
) -> BagFrame | None:
    color_msg, depth_msg = msgs[topics.color], msgs[topics.depth]
    stamp = m.time_to_ns(color_msg.header.stamp)
    T_odom_base = calib.track.at(stamp, max_extrapolation_ns)
    if T_odom_base is None:
        return None
    cam_frame = color_msg.header.frame_id
    if T_base_camera_optical is not None:
        T_bc = np.asarray(T_base_camera_optical, dtype=np.float64)
    else:
        if cam_frame not in extrinsics:
            T = calib.chain(calib.base_frame, cam_frame)
            if T is None:
                raise BagReadError(
                    f"{path}: no static transform chain {calib.base_frame} -> {cam_frame} on {topics.tf_static} "
                    f"(it has {sorted(calib.static)}); pass T_base_camera_optical explicitly"
                )
            extrinsics[cam_frame] = T
        T_bc = extrinsics[cam_frame]
    try:
        frame = m.rgbd_frame_from_msgs(
            color_msg, depth_msg, calib.info_at(stamp), T_odom_base @ T_bc,
            msgs.get(topics.instances), msgs.get(topics.instance_labels), index,
        )
    except m.MessageConversionError as exc:
        raise BagReadError(f"{path}: frame at stamp {stamp} ns: {exc}") from exc
    return BagFrame(frame, stamp, T_odom_base, T_bc.copy(), cam_frame, depth_msg.header.frame_id,
                    calib.world_frame, calib.base_frame)


def camera_pose_from_odometry(T_odom_base: np.ndarray, T_base_camera_optical: np.ndarray) -> np.ndarray:  # noqa: N803
    """``T_odom_camera_optical``; the inverse relation of :func:`base_pose_from_camera`."""
    return np.asarray(T_odom_base) @ np.asarray(T_base_camera_optical)


def base_pose_from_camera(T_world_camera: np.ndarray, T_base_camera_optical: np.ndarray) -> np.ndarray:  # noqa: N803
    """``T_world_base = T_world_camera @ inv(T_base_camera_optical)``: turns camera poses into odometry."""
    return np.asarray(T_world_camera) @ invert_transform(np.asarray(T_base_camera_optical))
