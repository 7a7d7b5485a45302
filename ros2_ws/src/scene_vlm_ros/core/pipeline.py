"""From separate sensor streams to posed RGB-D frames: the one ingest path (pure Python, no rclpy).

The node feeds it the messages its subscriptions receive; the offline commands (``scene-vlm map``,
``eval``, :func:`scene_vlm_ros.bag.reader.read_bag`) feed it a bag's messages in the order they were
recorded. Both therefore share one decoder (:mod:`.decode`), one synchroniser and one pose lookup:

- colour, depth and (once one has been seen) the instance mask are matched by
  :class:`ApproximateTimeSync`, anchored on depth, within ``slop_s``;
- the camera pose of each matched frame is the odometry (or the ``odom -> base`` transform on
  ``/tf`` when there is no odometry) interpolated at the *image* stamp, composed with the
  ``base -> camera`` extrinsic: from ``/tf_static`` when it has a chain to the image's ``frame_id``,
  else the configured one;
- frames whose pose is not known yet wait (bounded);
- colour and depth must be registered (same size; a warning names the frame ids when they differ),
  the camera info must match the image size, and a distorted camera is undistorted.

Every frame that does not make it is counted under one reason of :data:`DROP_REASONS`.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from . import decode
from .sync import ApproximateTimeSync, PoseBuffer, RateWindow
from .types import CameraIntrinsics, RGBDFrame

log = logging.getLogger(__name__)

#: Why a frame (or a message) did not become a posed frame; the names used in stats and diagnostics.
DROP_REASONS: dict[str, str] = {
    "invalid_color": "colour message could not be decoded (encoding, size, corrupt data)",
    "invalid_depth": "depth message could not be decoded",
    "invalid_mask": "instance-mask message could not be decoded",
    "invalid_camera_info": "camera info without a usable K or size",
    "invalid_odom": "odometry with a NaN or zero-quaternion pose",
    "invalid_tf": "transform with a NaN or zero-quaternion pose",
    "sync_no_match": "no colour (or mask) within slop_s of the depth image",
    "sync_queue_overflow": "a stream's sync queue overflowed while its partner was missing",
    "no_camera_info": "no camera info received yet",
    "size_mismatch": "depth, colour, mask and camera info are not the same size (not registered)",
    "no_pose": "odometry did not reach the image stamp within pose_max_wait_s",
    "pose_too_old": "the image is older than the oldest odometry kept",
    "no_extrinsic": "no base -> camera transform (tf_static chain or camera_extrinsic)",
    "pose_queue_overflow": "too many frames waiting for odometry (pending_max)",
    "mapping_queue_overflow": "mapping fell behind; the oldest frame in its queue was dropped",
    "rejected_by_mapping": "the mapping core refused the frame (e.g. too few valid depth pixels)",
    "integration_error": "the mapping core raised while integrating the frame",
}


@dataclass
class PipelineConfig:
    """Parameters of :class:`FramePipeline` (seconds are sensor-stamp seconds)."""

    slop_s: float = 0.02
    queue_size: int = 30
    pose_max_wait_s: float = 0.5
    pending_max: int = 16
    use_instance_mask: bool = True
    #: The source is known to publish a mask (a bag with the topic): frames need one from the start.
    expect_mask: bool = False
    #: The robot's base frame and its parent, used to read poses from /tf when there is no odometry.
    base_frame: str = "base_link"
    odom_frame: str = "odom"
    #: Undistort images when the camera info has distortion coefficients (else warn once and ignore).
    undistort: bool = True
    #: A frame this far outside the odometry's time range still takes the nearest end pose.
    max_extrapolation_s: float = 0.05


def _ns(t_s: float) -> int:
    """Seconds -> integer nanoseconds, rounded."""
    return int(round(float(t_s) * 1e9))


@dataclass(frozen=True)
class ReleasedFrame:
    """How a released frame was posed (kept for the last few frames; the bag reader reports it)."""

    stamp_ns: int
    T_odom_base: np.ndarray  # (4, 4)
    T_base_camera: np.ndarray  # (4, 4)
    color_frame_id: str
    depth_frame_id: str


@dataclass
class _Matched:
    """A synchronised set of decoded images waiting for its pose and camera info."""

    stamp_ns: int
    color: np.ndarray
    depth: np.ndarray
    mask: Optional[np.ndarray]
    labels: Optional[dict[int, str]]
    color_id: str
    depth_id: str


class FramePipeline:
    """Assemble :class:`RGBDFrame` s from streams; not thread-safe (the caller serialises access).

    ``T_base_camera`` (4x4, base -> camera optical frame) is the fallback extrinsic; ``None`` means
    the extrinsic must come from ``/tf_static``. ``clock`` (monotonic seconds) stamps arrivals for the
    input-rate windows; tests inject a fake one.
    """

    def __init__(self, T_base_camera: Optional[np.ndarray] = None, config: Optional[PipelineConfig] = None,  # noqa: N803
                 clock: Optional[Callable[[], float]] = None,
                 camera_pose: Optional[Callable[[str, int], tuple[Optional[np.ndarray], str]]] = None):
        import time

        #: TF mode (the node with tf2_ros): ``camera_pose(image frame_id, stamp_ns)`` gives
        #: ``(T_world_camera or None, "ok" | "wait" | "too_old")`` and replaces odometry + extrinsic.
        self.camera_pose = camera_pose
        #: "tf" once TF posed a frame, "odometry" once it could not connect the frames while odometry
        #: arrived (auto mode falls back and says so once), "" before either
        self.pose_mode = "" if camera_pose is not None else "odometry"
        self.config = config or PipelineConfig()
        self.T_base_camera = None if T_base_camera is None else np.asarray(T_base_camera, dtype=np.float64)
        self.clock = clock or time.monotonic
        # Colour + depth make a frame until the first mask arrives; from then on the mask is part
        # of every frame (a semantic camera publishes one per image).
        self._mask_seen = self.config.expect_mask and self.config.use_instance_mask
        streams = ["color", "depth", "mask"] if self._mask_seen else ["color", "depth"]
        # Stamps are integer nanoseconds inside the pipeline (the sync and the pose buffer are
        # unit-agnostic): float seconds since the epoch would cost ~0.2 us of precision.
        self._sync = ApproximateTimeSync(streams, "depth", _ns(self.config.slop_s), self.config.queue_size)
        self.poses = PoseBuffer(max_age_s=_ns(10.0), max_extrapolation_s=_ns(self.config.max_extrapolation_s))
        self.calibration: Optional[decode.CameraCalibration] = None
        self.labels: dict[int, str] = {}
        self._static: dict[str, tuple[str, np.ndarray]] = {}  # child -> (parent, T_parent_child)
        self._extrinsics: dict[str, Optional[np.ndarray]] = {}
        self._odom_seen = False
        self.base_frame, self.odom_frame = self.config.base_frame, self.config.odom_frame
        self._waiting: deque[_Matched] = deque()
        #: frame_index -> how it was posed, for the last 64 released frames
        self.released: OrderedDict[int, ReleasedFrame] = OrderedDict()
        self.dropped: Counter[str] = Counter()
        self.received: Counter[str] = Counter()
        self.rates: dict[str, RateWindow] = {}
        self.last_seen: dict[str, float] = {}
        self.warnings: dict[str, str] = {}
        self._undistort_maps: Optional[tuple[Any, Any]] = None
        self._n_out = 0

    @property
    def intrinsics(self) -> Optional[CameraIntrinsics]:
        return self.calibration.intrinsics if self.calibration else None

    # -- message-level inputs (what subscriptions and bag readers hand over) --------------------
    def on_message(self, stream: str, msg: Any) -> list[RGBDFrame]:
        """Decode one message of ``stream`` (color, depth, mask, camera_info, odom, tf, tf_static,
        labels) and feed it; returns the frames that became complete and posed."""
        self._arrived(stream)
        try:
            if stream in ("color", "depth", "mask"):
                stamp_ns = decode.header_stamp_ns(msg)
                if stream == "mask" and not self.config.use_instance_mask:
                    return []
                image = decode.stream_decoder(stream)(msg)
                return self._add_image(stream, stamp_ns, image, str(msg.header.frame_id))
            if stream == "camera_info":
                self.set_calibration(decode.msg_to_camera_calibration(msg))
                return self._release()
            if stream == "odom":
                stamp_ns, parent, child, T = decode.msg_to_odometry(msg)  # noqa: N806
                if child and child != self.base_frame:
                    self.base_frame = child  # the extrinsic chain starts at odometry's child frame
                    self._extrinsics.clear()
                self.odom_frame = parent or self.odom_frame
                self._odom_seen = True
                return self._add_pose(stamp_ns, T)
            if stream in ("tf", "tf_static"):
                out: list[RGBDFrame] = []
                for ts in msg.transforms:
                    out += self._add_transform(stream, ts)
                return out
            if stream == "labels":
                self.set_labels(decode.msg_to_labels(msg))
                return []
        except decode.MessageConversionError as exc:
            self._invalid(stream, exc)
            return []
        raise ValueError(f"unknown stream {stream!r}")

    def _arrived(self, stream: str) -> None:
        now = self.clock()
        self.received[stream] += 1
        self.last_seen[stream] = now
        self.rates.setdefault(stream, RateWindow()).add(now)

    def record_invalid(self, stream: str, exc: Exception) -> list[RGBDFrame]:
        """A message of ``stream`` that could not even be parsed (raw bytes): received and invalid; no
        frame comes of it (the empty list keeps the entry points alike)."""
        self._arrived(stream)
        self._invalid(stream, exc)
        return []

    def _invalid(self, stream: str, exc: Exception) -> None:
        reason = f"invalid_{stream if stream != 'tf_static' else 'tf'}"
        self.dropped[reason] += 1
        if self.dropped[reason] == 1 or self.dropped[reason] % 100 == 0:
            log.warning("dropping %s message (%d so far): %s", stream, self.dropped[reason], exc)

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self.warnings:
            self.warnings[key] = text
            log.warning("%s", text)

    def _add_transform(self, stream: str, ts: Any) -> list[RGBDFrame]:
        try:
            stamp_ns, parent, child, T = decode.msg_to_transform(ts)  # noqa: N806
        except decode.MessageConversionError as exc:
            self._invalid(stream, exc)
            return []
        if stream == "tf_static":
            self.add_static_transform(parent, child, T)
            return []
        if not self._odom_seen and (parent, child) == (self.odom_frame, self.base_frame):
            return self._add_pose(stamp_ns, T)
        return []

    # -- decoded inputs (also used directly by tests) -------------------------------------------
    def set_intrinsics(self, intrinsics: CameraIntrinsics) -> None:
        self.set_calibration(decode.CameraCalibration(intrinsics))

    def set_calibration(self, calibration: decode.CameraCalibration) -> None:
        if calibration != self.calibration:
            self._undistort_maps = None
            if calibration.has_distortion:
                self._warn_once(
                    "distortion",
                    f"camera info of '{calibration.frame_id}' has {calibration.distortion_model or 'unnamed'} "
                    f"distortion {list(calibration.d)}: "
                    + ("images are undistorted before fusion" if self.config.undistort
                       else "ignored (undistort disabled); fusion treats images as rectified"))
        self.calibration = calibration

    def set_labels(self, labels: dict[int, str]) -> None:
        self.labels = dict(labels)

    def add_static_transform(self, parent: str, child: str, T_parent_child: np.ndarray) -> None:  # noqa: N803
        self._static[child] = (parent, np.asarray(T_parent_child, dtype=np.float64))
        self._extrinsics.clear()  # a new static edge may complete a chain

    def add_odometry(self, stamp_s: float, T_odom_base: np.ndarray) -> list[RGBDFrame]:  # noqa: N803
        self._arrived("odom")
        self._odom_seen = True
        if not np.all(np.isfinite(T_odom_base)):
            self.dropped["invalid_odom"] += 1
            return []
        return self._add_pose(_ns(stamp_s), T_odom_base)

    def add_image(self, stream: str, stamp_s: float, image: np.ndarray, frame_id: str = "") -> list[RGBDFrame]:
        """``stream`` is ``color`` (RGB uint8), ``depth`` (float32 m) or ``mask`` (uint16)."""
        self._arrived(stream)
        if stream == "mask" and not self.config.use_instance_mask:
            return []
        return self._add_image(stream, _ns(stamp_s), image, frame_id)

    # -- internals -------------------------------------------------------------------------------
    def _add_pose(self, stamp_ns: int, T: np.ndarray) -> list[RGBDFrame]:  # noqa: N803
        self.poses.add(stamp_ns, T)
        return self._release()

    def require_mask(self) -> list[RGBDFrame]:
        """From now on a frame needs its instance mask (a mask publisher exists): the node calls it
        before the first frame so that no early frame is made without its mask."""
        if self._mask_seen or not self.config.use_instance_mask:
            return []
        return self._assemble(self._switch_to_mask())

    def _switch_to_mask(self) -> list[dict]:
        self._mask_seen = True
        old = self._sync
        self.dropped.update(old.dropped)
        self._sync = ApproximateTimeSync(
            ["color", "depth", "mask"], "depth", _ns(self.config.slop_s), self.config.queue_size
        )
        # Messages still queued (e.g. the colour image of this very frame) move over to the
        # new synchroniser; discarding them would silently lose a frame.
        matched: list[dict] = []
        for s, items in old.queued().items():
            for item in items:
                matched += self._sync.add(s, item.stamp_s, item.value)
        return matched

    def _add_image(self, stream: str, stamp_ns: int, image: np.ndarray, frame_id: str) -> list[RGBDFrame]:
        matched: list[dict] = []
        if stream == "mask" and not self._mask_seen:
            matched += self._switch_to_mask()
        matched += self._sync.add(stream, stamp_ns, (image, frame_id))
        return self._assemble(matched)

    def _assemble(self, matched_sets: list[dict]) -> list[RGBDFrame]:
        for m in matched_sets:
            (color, color_id), (depth, depth_id) = m["color"].value, m["depth"].value
            mask = m["mask"].value[0] if "mask" in m else None
            self._waiting.append(_Matched(int(m["depth"].stamp_s), color, depth, mask,
                                          dict(self.labels) if mask is not None else None, color_id, depth_id))
            while len(self._waiting) > self.config.pending_max:
                self._waiting.popleft()
                self.dropped["pose_queue_overflow"] += 1
        return self._release()

    def _registered(self, color: np.ndarray, color_id: str, depth: np.ndarray, depth_id: str,
                    mask: Optional[np.ndarray]) -> bool:
        intr = self.calibration.intrinsics
        if depth.shape != color.shape[:2]:
            self._warn_once("size", f"depth '{depth_id}' {depth.shape[1]}x{depth.shape[0]} and colour '{color_id}' "
                            f"{color.shape[1]}x{color.shape[0]} differ in size: subscribe to depth registered to "
                            "colour (e.g. RealSense aligned_depth_to_color/image_raw); frames are dropped")
            return False
        if (intr.width, intr.height) != (color.shape[1], color.shape[0]):
            self._warn_once("info_size", f"camera info is for {intr.width}x{intr.height} but the images of "
                            f"'{color_id}' are {color.shape[1]}x{color.shape[0]}; frames are dropped")
            return False
        if mask is not None and mask.shape != depth.shape:
            self._warn_once("mask_size", f"instance mask {mask.shape} differs from the images {depth.shape}")
            return False
        if color_id and depth_id and color_id != depth_id:
            self._warn_once("frame_ids", f"colour '{color_id}' and depth '{depth_id}' have different frame ids: "
                            "they are taken as registered (same size); if depth is not aligned to colour, "
                            "subscribe to the aligned depth topic")
        return True

    def _undistort(self, color: np.ndarray, depth: np.ndarray, mask: Optional[np.ndarray]
                   ) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        import cv2

        cal = self.calibration
        if self._undistort_maps is None:
            K = cal.intrinsics.K  # noqa: N806
            size = (cal.intrinsics.width, cal.intrinsics.height)
            d = np.asarray(cal.d, dtype=np.float64)
            if cal.distortion_model == "equidistant":
                self._undistort_maps = cv2.fisheye.initUndistortRectifyMap(K, d[:4], np.eye(3), K, size, cv2.CV_32FC1)
            else:  # plumb_bob, rational_polynomial: OpenCV's model takes 4, 5, 8, 12 or 14 coefficients
                self._undistort_maps = cv2.initUndistortRectifyMap(K, d, None, K, size, cv2.CV_32FC1)
        mx, my = self._undistort_maps
        color = cv2.remap(color, mx, my, cv2.INTER_LINEAR)
        depth = cv2.remap(depth, mx, my, cv2.INTER_NEAREST)  # never blend depths across edges
        if mask is not None:
            mask = cv2.remap(mask, mx, my, cv2.INTER_NEAREST)
        return color, depth, mask

    def _lookup(self, m: _Matched, give_up: bool = False) -> tuple[Optional[np.ndarray], str]:
        """Pose of a matched frame: ``T_odom_base`` from the odometry buffer, or in TF mode the
        whole ``T_world_camera`` from :attr:`camera_pose` (which has no give-up extrapolation)."""
        if self.camera_pose is not None and self.pose_mode != "odometry":
            T, status = self.camera_pose(m.color_id or m.depth_id, m.stamp_ns)  # noqa: N806
            if status != "unknown":
                if status == "ok" and self.pose_mode != "tf":
                    self.pose_mode = "tf"  # TF connects the frames: it is the pose source from now on
                return T, status
            if self.pose_mode == "tf" or not self._odom_seen or not give_up:
                # TF did connect before (a gap), or no odometry to fall back to, or the frame has not
                # waited pose_max_wait_s yet (at start-up /tf_static may simply not be here yet).
                return None, "wait"
            self.pose_mode = "odometry"
            self._warn_once("tf_fallback", f"TF has no transform to the image frame '{m.color_id or m.depth_id}' "
                            "but odometry arrives: camera poses from odometry + extrinsic")
        return self.poses.lookup(m.stamp_ns, give_up=give_up)

    def _extrinsic(self, frame_id: str) -> Optional[np.ndarray]:
        if frame_id not in self._extrinsics:
            T = self._static_chain(self.base_frame, frame_id) if frame_id else None  # noqa: N806
            self._extrinsics[frame_id] = T if T is not None else self.T_base_camera
        return self._extrinsics[frame_id]

    def _static_chain(self, base: str, target: str) -> Optional[np.ndarray]:
        """``T_base_target`` by walking the static tree from ``target`` up to ``base``."""
        T = np.eye(4)  # noqa: N806
        frame, seen = target, set()
        while frame != base:
            if frame not in self._static or frame in seen:
                return None
            seen.add(frame)
            parent, T_pc = self._static[frame]  # noqa: N806
            T = T_pc @ T  # noqa: N806
            frame = parent
        return T

    def _release(self, final: bool = False) -> list[RGBDFrame]:
        """Pose and emit waiting frames in order; a frame waits (bounded by ``pose_max_wait_s`` of
        image time) for odometry past its stamp and for the first camera info."""
        out: list[RGBDFrame] = []
        while self._waiting:
            m = self._waiting[0]
            T_odom_base, status = self._lookup(m)  # noqa: N806
            if status == "wait" or self.calibration is None:
                # Image time is the clock here: odometry (or camera info) that lags, or never
                # comes, by more than pose_max_wait_s behind the newest image gives up on this
                # frame (after a last try at the newest pose within max_extrapolation_s).
                if not (final or self._waiting[-1].stamp_ns - m.stamp_ns > _ns(self.config.pose_max_wait_s)):
                    break
                T_odom_base, status = self._lookup(m, give_up=True)  # noqa: N806
                if status == "wait" or self.calibration is None:
                    self._waiting.popleft()
                    self.dropped["no_camera_info" if self.calibration is None else "no_pose"] += 1
                    continue
            self._waiting.popleft()
            if status == "too_old" or T_odom_base is None:
                self.dropped["pose_too_old"] += 1
                continue
            frame_id = m.color_id or m.depth_id
            # TF mode: the looked-up pose already ends at the camera (world <- image frame_id).
            T_base_camera = np.eye(4) if self.pose_mode == "tf" else self._extrinsic(frame_id)  # noqa: N806
            if T_base_camera is None:
                self.dropped["no_extrinsic"] += 1
                self._warn_once("extrinsic", f"no transform {self.base_frame} -> '{frame_id}' on /tf_static "
                                "and no camera_extrinsic configured: frames cannot be posed")
                continue
            if not self._registered(m.color, m.color_id, m.depth, m.depth_id, m.mask):
                self.dropped["size_mismatch"] += 1
                continue
            color, depth, mask = m.color, m.depth, m.mask
            if self.calibration.has_distortion and self.config.undistort:
                color, depth, mask = self._undistort(color, depth, mask)
            frame = RGBDFrame(stamp_s=m.stamp_ns / 1e9, color_rgb=color, depth_m=depth,
                              intrinsics=self.calibration.intrinsics, T_world_camera=T_odom_base @ T_base_camera,
                              instance_mask=mask, instance_labels=m.labels, frame_index=self._n_out)
            self.released[self._n_out] = ReleasedFrame(m.stamp_ns, T_odom_base, T_base_camera, m.color_id, m.depth_id)
            while len(self.released) > 64:
                self.released.popitem(last=False)
            self._n_out += 1
            out.append(frame)
        return out

    def poll(self) -> list[RGBDFrame]:
        """Release waiting frames whose pose became known without a message through this pipeline
        (TF mode: transforms arrive in the tf2 buffer); the node calls it periodically."""
        return self._release() if self._waiting else []

    def flush(self) -> list[RGBDFrame]:
        """End of input (a bag's last message): release what can be posed; the rest is ``no_pose``."""
        out = self._release(final=True)
        self.dropped["no_pose"] += len(self._waiting)
        self._waiting.clear()
        return out

    def stats(self, now: Optional[float] = None) -> dict:
        dropped = Counter(self.dropped)
        dropped.update(self._sync.dropped)
        now = self.clock() if now is None else now
        return {
            "received": dict(self.received),
            "dropped": {k: v for k, v in dropped.items() if v},
            "waiting_for_pose": len(self._waiting),
            "frames_out": self._n_out,
            "mask_seen": self._mask_seen,
            "rates_hz": {k: w.rate(now) for k, w in self.rates.items()},
            "last_seen_age_s": {k: now - t for k, t in self.last_seen.items()},
            "warnings": list(self.warnings.values()),
        }


def feed_health(ages_s: dict[str, float], required: list[str], warn_after_s: float, error_after_s: float,
                active_for_s: float) -> tuple[int, str]:
    """Diagnostic level (0 OK, 1 WARN, 2 ERROR) and message for the input feeds.

    A feed in ``required`` that has been silent for ``warn_after_s`` (or never arrived, counted from
    activation, ``active_for_s`` ago) is WARN, for ``error_after_s`` ERROR; back to OK when it returns.
    """
    level, worst = 0, []
    for stream in required:
        age = ages_s.get(stream, active_for_s)
        if age >= error_after_s:
            lvl = 2
        elif age >= warn_after_s:
            lvl = 1
        else:
            continue
        never = stream not in ages_s
        worst.append((lvl, f"{stream} {'never received' if never else f'silent for {age:.1f} s'}"))
        level = max(level, lvl)
    if not worst:
        return 0, "inputs OK"
    return level, "; ".join(text for _lvl, text in sorted(worst, reverse=True))
