"""The live 3D scene memory: TSDF fusion + keyframes + object instances behind one lock.

One thread calls :meth:`SceneMemory.integrate` per RGB-D frame (world frame z up, optical camera
poses at each frame's own stamp); any other thread calls :meth:`SceneMemory.snapshot`, which
returns an immutable :class:`~scene_vlm_ros.core.types.SceneSnapshot`. The fused cloud and the
geometric segmentation are refreshed lazily (at most every ``refresh_every_n_frames`` frames or
when asked), by the snapshotting thread, so the integration path stays short.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import weakref
from collections import Counter, deque
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .detector import DarknetDetector, DetectorUnavailableError, lift_detection_colored
from .frame_checks import REASON_POSE_JUMP, check_frame_content, check_frame_sequence
from .fusion import FusionError, FusionParams, TSDFVolume
from .geometry import transform_points
from .instances import InstanceMap, InstanceParams, Observation
from .keyframes import KeyframeParams, KeyframeSelector
from .labeling import LabelEvidence, LabelingParams, depth_band_for, label_segments
from .segmentation import SegmentationParams, segment_objects
from .types import CameraIntrinsics, Keyframe, RGBDFrame, SceneSnapshot

logger = logging.getLogger(__name__)

#: Version of the on-disk layout written by :meth:`SceneMemory.save`.
FORMAT_VERSION = 1


class MemoryConfigError(ValueError):
    """A :class:`MemoryConfig` value is out of range."""


class MemoryFormatError(RuntimeError):
    """A saved memory directory is missing files or has an unknown format version."""


@dataclass
class MemoryConfig:
    """Every parameter of the scene memory (units in the names; world frame z up).

    Fusion:
        voxel_size_m: TSDF voxel edge (m); 5 cm is the robot-mapping default (nvblox, voxblox).
        trunc_voxel_multiplier: TSDF truncation distance in voxels (truncation = this x voxel).
        block_resolution: voxels per block edge (8 is fastest on CPU at 5 cm).
        depth_min_m / depth_max_m: depth readings outside this range are ignored (m).
        block_budget: most voxel blocks kept; beyond it the blocks farthest from the camera go.
        clear_radius_m: when > 0, blocks farther than this from the camera are cleared every frame.
        device: Open3D device, "CPU:0" (default, see fusion.py for why) or "CUDA:0".
        min_surface_observations: a surface enters the extracted cloud once about this many frames
            saw it (TSDF weight); filters single-frame depth noise.
    Frame checks:
        min_valid_depth_fraction: share of pixels with depth needed, else "depth_all_invalid".
        max_pose_jump_m: translation between accepted frames above which a frame is a "pose_jump".
        max_speed_m_s: allowance for jumps over long gaps (m/s x seconds since the last frame).
        relocalize_after_n_jumps: this many consecutive "pose_jump" frames are taken as a real
            relocalisation and the next one is accepted.
    Keyframes:
        keyframe_min_translation_m / keyframe_min_rotation_deg / keyframe_min_new_coverage:
            a frame becomes a keyframe when it moved or sees this share of new surface.
        max_keyframes: bound on kept keyframes (most redundant evicted).
        best_keyframes_per_instance: how many best-view keyframe IDs each instance lists.
    Instances:
        use_mask: lift upstream instance masks (RGBDFrame.instance_mask) when present (precedes
            the detector on those frames).
        use_detector: run the Darknet detector (YOLOv4-tiny or Yolo-Fastest) on keyframes without a mask.
        use_geometry: segment the fused map geometrically on refresh.
        mask_every_n_frames: lift masks every n-th accepted frame (and on every keyframe).
        mask_stride_px: pixel stride when lifting masks / detections.
        mask_erode_px: erode each mask region by this many pixels (drops mixed depth at borders).
        detector_model_dir / detector_preset / detector_score_threshold / detector_input_size /
            detector_labels: folder with the Darknet files (``detector.find_best_detector`` finds
            one), preset (None: recognised from the files), minimum confidence, network input (px,
            None: the preset's), allowed labels.
        detector_async: run the detector on its own thread (keyframes queued), so the mapping
            thread never waits for it; ``refresh`` waits (at most ``detector_drain_timeout_s``)
            for queued keyframes so a finished map has every keyframe's detections.
        detector_queue_size / detector_drop_when_busy: keyframes waiting for the detector; when
            full, the newest keyframe is dropped (counted; for live robots) or integration waits
            (default: offline mapping stays complete and deterministic).
        max_label_evidence: most lifted detections kept for label voting (oldest go first); a
            refresh re-votes all of them (~0.1 s for 1000 heavily overlapping views on 2 cores).
        With geometry on, detections name geometric segments (:mod:`labeling`); without it,
        each detection is an observation of its own instance.
        inst_*: see :class:`~scene_vlm_ros.core.instances.InstanceParams`.
        seg_*: see :class:`~scene_vlm_ros.core.segmentation.SegmentationParams`.
    Snapshot:
        refresh_every_n_frames: the fused cloud (and geometry segmentation) is re-extracted at most
            this often by ``snapshot()``; ``snapshot(refresh=True)`` forces it.
        frame_id: name of the world frame put into snapshots.
    """

    # Fusion defaults come from FusionParams (one definition; MemoryConfig only exposes them).
    voxel_size_m: float = FusionParams.voxel_size_m
    trunc_voxel_multiplier: float = FusionParams.trunc_voxel_multiplier
    block_resolution: int = FusionParams.block_resolution
    depth_min_m: float = FusionParams.depth_min_m
    depth_max_m: float = FusionParams.depth_max_m
    block_budget: int = FusionParams.block_budget
    clear_radius_m: float = FusionParams.clear_radius_m
    device: str = FusionParams.device
    min_surface_observations: int = FusionParams.min_observations
    min_valid_depth_fraction: float = 0.01
    max_pose_jump_m: float = 2.0
    max_speed_m_s: float = 2.0
    relocalize_after_n_jumps: int = 10
    keyframe_min_translation_m: float = 0.3
    keyframe_min_rotation_deg: float = 15.0
    keyframe_min_new_coverage: float = 0.3
    max_keyframes: int = 64
    best_keyframes_per_instance: int = 3
    use_mask: bool = True
    use_detector: bool = False
    use_geometry: bool = True
    mask_every_n_frames: int = 3
    mask_stride_px: int = 4
    mask_erode_px: int = 2
    detector_model_dir: Optional[str] = None
    detector_preset: Optional[str] = None
    detector_score_threshold: float = 0.25
    detector_input_size: Optional[int] = None
    detector_labels: Optional[tuple[str, ...]] = None
    detector_async: bool = True
    detector_queue_size: int = 4
    detector_drop_when_busy: bool = False
    detector_drain_timeout_s: float = 30.0
    max_label_evidence: int = 1000
    inst_voxel_m: float = 0.03
    inst_max_voxels: int = 20000
    inst_min_points: int = 20
    inst_assoc_min_overlap: float = 0.15
    inst_assoc_max_centroid_m: float = 0.5
    inst_merge_overlap: float = 0.6
    seg_plane_distance_m: float = 0.04
    seg_support_min_extent_m: float = 1.8
    seg_cluster_voxel_m: float = 0.06
    seg_min_cluster_points: int = 40
    seg_min_extent_m: float = 0.1
    seg_max_extent_m: float = 3.0
    refresh_every_n_frames: int = 30
    frame_id: str = "map"

    def validate(self) -> MemoryConfig:
        """Raise :class:`MemoryConfigError` naming the first bad value; returns ``self``."""
        positive = ("voxel_size_m", "trunc_voxel_multiplier", "depth_max_m", "inst_voxel_m", "seg_cluster_voxel_m",
                    "max_pose_jump_m", "seg_plane_distance_m")
        for name in positive:
            if not (np.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise MemoryConfigError(f"{name} must be a finite number > 0, got {getattr(self, name)!r}")
        if not 0 <= self.depth_min_m < self.depth_max_m:
            raise MemoryConfigError(f"need 0 <= depth_min_m < depth_max_m, got {self.depth_min_m}, {self.depth_max_m}")
        for name in ("block_resolution", "block_budget", "max_keyframes", "mask_every_n_frames", "mask_stride_px",
                     "refresh_every_n_frames", "inst_max_voxels", "relocalize_after_n_jumps", "detector_queue_size",
                     "max_label_evidence"):
            if int(getattr(self, name)) < 1:
                raise MemoryConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.clear_radius_m < 0:
            raise MemoryConfigError(f"clear_radius_m must be >= 0 (0 = off), got {self.clear_radius_m}")
        if not self.device.startswith(("CPU", "CUDA")):
            raise MemoryConfigError(f"device must be 'CPU:0' or 'CUDA:<n>', got {self.device!r}")
        if self.use_detector and not self.detector_model_dir:
            raise MemoryConfigError(
                "use_detector=True needs detector_model_dir (a folder with yolov4-tiny.* or yolo-fastest-1.1.*; "
                "core.detector.find_best_detector() finds one)")
        for name in ("keyframe_min_new_coverage", "inst_assoc_min_overlap", "inst_merge_overlap",
                     "detector_score_threshold", "min_valid_depth_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise MemoryConfigError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        return self

    def fusion_params(self) -> FusionParams:
        return FusionParams(self.voxel_size_m, self.trunc_voxel_multiplier, self.block_resolution, self.depth_min_m,
                            self.depth_max_m, self.block_budget, self.clear_radius_m, self.device,
                            self.min_surface_observations)

    def keyframe_params(self) -> KeyframeParams:
        return KeyframeParams(self.keyframe_min_translation_m, self.keyframe_min_rotation_deg,
                              self.keyframe_min_new_coverage, self.max_keyframes)

    def instance_params(self) -> InstanceParams:
        return InstanceParams(
            voxel_m=self.inst_voxel_m,
            max_voxels=self.inst_max_voxels,
            min_points=self.inst_min_points,
            assoc_min_overlap=self.inst_assoc_min_overlap,
            assoc_max_centroid_m=self.inst_assoc_max_centroid_m,
            merge_overlap=self.inst_merge_overlap,
        )

    def segmentation_params(self) -> SegmentationParams:
        return SegmentationParams(plane_distance_m=self.seg_plane_distance_m,
                                  support_min_extent_m=self.seg_support_min_extent_m,
                                  cluster_voxel_m=self.seg_cluster_voxel_m,
                                  min_cluster_points=self.seg_min_cluster_points, min_extent_m=self.seg_min_extent_m,
                                  max_extent_m=self.seg_max_extent_m)

    def to_json(self) -> dict:
        d = asdict(self)
        if d["detector_labels"] is not None:
            d["detector_labels"] = list(d["detector_labels"])
        return d

    @classmethod
    def from_json(cls, d: dict) -> MemoryConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise MemoryConfigError(f"unknown MemoryConfig keys: {sorted(unknown)}")
        d = dict(d)
        if d.get("detector_labels") is not None:
            d["detector_labels"] = tuple(d["detector_labels"])
        return cls(**d)


@dataclass(frozen=True)
class IntegrationResult:
    """Outcome of one ``integrate`` call: ``reason`` is a stable string when ``accepted`` is False;
    ``timings`` are stage durations in milliseconds (``total``, ``fusion``, ``instances``...)."""

    accepted: bool
    reason: Optional[str] = None
    timings: dict[str, float] = field(default_factory=dict)
    is_keyframe: bool = False


_TIMING_WINDOW = 2000


class SceneMemory:
    """Fuses posed RGB-D frames into a TSDF map, keyframes and object instances (see module doc)."""

    def __init__(self, config: Optional[MemoryConfig] = None) -> None:
        self.config = (config or MemoryConfig()).validate()
        self._lock = threading.Lock()
        self._volume = TSDFVolume(self.config.fusion_params())
        self._keyframes = KeyframeSelector(self.config.keyframe_params())
        self._instances = InstanceMap(self.config.instance_params())
        self._detector: Optional[DarknetDetector] = None
        self._detector_error: Optional[str] = None
        self._evidence: deque[LabelEvidence] = deque(maxlen=self.config.max_label_evidence)
        self._evidence_lock = threading.Lock()
        self._det_queue: Optional[queue.Queue] = None
        self._det_thread: Optional[threading.Thread] = None
        self._det_pending = 0
        self._det_dropped = 0
        self._det_cv = threading.Condition()
        if self.config.use_detector:
            try:
                self._detector = DarknetDetector(
                    Path(str(self.config.detector_model_dir)),
                    preset=self.config.detector_preset,
                    input_size=self.config.detector_input_size,
                    score_threshold=self.config.detector_score_threshold,
                    labels=self.config.detector_labels,
                )
                logger.info("detector: %s from %s", self._detector.name, self.config.detector_model_dir)
            except DetectorUnavailableError as exc:
                # Mapping must go on without the detector; the status says why.
                self._detector_error = str(exc)
                logger.error("detector unavailable, mapping with geometry only: %s", exc)
        if self._detector is not None and self.config.detector_async:
            self._det_queue = queue.Queue(maxsize=self.config.detector_queue_size)
            # The thread holds only a weak reference, so a memory nobody uses any more (a node
            # reconfigured without close()) is collected and its thread ends.
            self._det_thread = threading.Thread(target=SceneMemory._detector_loop,
                                                args=(weakref.ref(self), self._det_queue),
                                                name="scene-memory-detector", daemon=True)
            self._det_thread.start()
        self._n_integrated = 0
        self._n_accepted_seen = 0
        self._rejected: Counter = Counter()
        self._timings: dict[str, deque] = {}
        self._last_stamp: Optional[float] = None
        self._last_pose: Optional[np.ndarray] = None
        self._consecutive_jumps = 0
        self._sources_used: Counter = Counter()
        self._warned_geometry_only = False
        self._cloud: tuple[np.ndarray, np.ndarray] = (np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8))
        self._cloud_frame = -1
        self._snapshot: Optional[SceneSnapshot] = None
        self._refresh_lock = threading.Lock()

    # --- integration -----------------------------------------------------------------------
    def _reject(self, frame: RGBDFrame, reason: str, t0: float) -> IntegrationResult:
        self._rejected[reason] += 1
        logger.warning("frame %d (stamp %.3f) rejected: %s", frame.frame_index, frame.stamp_s, reason)
        return IntegrationResult(False, reason, {"total": (time.perf_counter() - t0) * 1e3})

    def integrate(self, frame: RGBDFrame) -> IntegrationResult:
        """Fuse one frame (world z up, optical pose at the frame's stamp); bad frames are rejected
        with a stable reason (see :mod:`frame_checks`) and leave the memory untouched."""
        t0 = time.perf_counter()
        cfg = self.config
        reason = check_frame_content(frame, cfg.min_valid_depth_fraction)
        if reason is not None:
            return self._reject(frame, reason, t0)
        with self._lock:
            reason = check_frame_sequence(frame, self._last_stamp, self._last_pose, cfg.max_pose_jump_m,
                                          cfg.max_speed_m_s)
            if reason == REASON_POSE_JUMP:
                self._consecutive_jumps += 1
                if self._consecutive_jumps > cfg.relocalize_after_n_jumps:
                    logger.warning("%d consecutive pose jumps: accepting as a relocalisation", self._consecutive_jumps)
                    reason = None
            if reason is not None:
                return self._reject(frame, reason, t0)
            self._consecutive_jumps = 0
            timings: dict[str, float] = {}
            t = time.perf_counter()
            try:
                self._volume.integrate(frame.depth_m, frame.color_rgb, frame.intrinsics, frame.T_world_camera)
            except FusionError as exc:
                logger.error("fusion failed on frame %d: %s", frame.frame_index, exc)
                return self._reject(frame, "fusion_error", t0)
            timings["fusion"] = (time.perf_counter() - t) * 1e3
            t = time.perf_counter()
            is_kf = self._keyframes.should_add(frame)
            if is_kf:
                self._keyframes.add(frame)
            timings["keyframes"] = (time.perf_counter() - t) * 1e3
            t = time.perf_counter()
            to_detect = self._update_instances(frame, is_kf, timings)
            timings["instances"] = (time.perf_counter() - t) * 1e3
            self._n_integrated += 1
            self._last_stamp = float(frame.stamp_s)
            self._last_pose = np.array(frame.T_world_camera, dtype=np.float64)
            timings["total"] = (time.perf_counter() - t0) * 1e3
            for k, v in timings.items():
                self._timings.setdefault(k, deque(maxlen=_TIMING_WINDOW)).append(v)
        if to_detect is not None:
            # Outside the lock: a full queue may make this wait, and the detector thread takes the lock.
            self._enqueue_detection(to_detect)
        return IntegrationResult(True, None, timings, is_kf)

    def _update_instances(self, frame: RGBDFrame, is_keyframe: bool, timings: dict[str, float]
                          ) -> Optional[RGBDFrame]:
        """Fuse this frame's mask observations; returns the frame when the detector thread should
        see it (a keyframe with the detector on its own thread), else None."""
        cfg = self.config
        observations: list[Observation] = []
        if cfg.use_mask and frame.instance_mask is not None:
            if is_keyframe or self._n_integrated % cfg.mask_every_n_frames == 0:
                observations = self._mask_observations(frame)
            self._sources_used["mask"] += 1
        elif self._detector is not None:
            self._sources_used["detector"] += 1
            if is_keyframe and self._det_queue is not None:
                return frame
            if is_keyframe:
                t = time.perf_counter()
                observations = self._detector_observations(frame)
                timings["detector"] = (time.perf_counter() - t) * 1e3
        else:
            self._sources_used["none"] += 1
            if not self._warned_geometry_only:
                self._warned_geometry_only = True
                logger.warning(
                    "no instance mask on the frames and no detector: instances come from geometry only%s",
                    f" (detector: {self._detector_error})" if self._detector_error else "",
                )
        self._observe(observations, frame.stamp_s, is_keyframe)
        return None

    def _observe(self, observations: list[Observation], stamp_s: float, is_keyframe: bool) -> None:
        for obs in observations:
            self._instances.observe(obs)
        if observations and is_keyframe:
            # Duplicates only arise from new views, and keyframes are where views change.
            self._instances.merge_overlapping(stamp_s)

    # --- detector (keyframes only; on its own thread when detector_async) -------------------
    def _enqueue_detection(self, frame: RGBDFrame) -> None:
        assert self._det_queue is not None  # noqa: S101 (internal invariant)
        with self._det_cv:
            self._det_pending += 1
        try:
            if self.config.detector_drop_when_busy:
                self._det_queue.put_nowait(frame)
            else:
                self._det_queue.put(frame)
        except queue.Full:
            with self._det_cv:
                self._det_pending -= 1
                self._det_dropped += 1
                self._det_cv.notify_all()
            logger.debug("detector busy: keyframe %.3f not detected", frame.stamp_s)

    @staticmethod
    def _detector_loop(ref: weakref.ref, jobs: queue.Queue) -> None:
        while True:
            try:
                frame = jobs.get(timeout=1.0)
            except queue.Empty:
                if ref() is None:
                    return
                continue
            memory = ref()
            if frame is None or memory is None:
                return
            memory._detect_keyframe(frame)
            del memory

    def _detect_keyframe(self, frame: RGBDFrame) -> None:
        """Detector-thread body for one keyframe: detect, record timing, fuse observations."""
        try:
            t = time.perf_counter()
            observations = self._detector_observations(frame)
            elapsed_ms = (time.perf_counter() - t) * 1e3
            with self._lock:
                self._timings.setdefault("detector", deque(maxlen=_TIMING_WINDOW)).append(elapsed_ms)
                self._observe(observations, frame.stamp_s, True)
        except Exception:  # noqa: BLE001 (a detector failure must not stop mapping; logged in full)
            logger.exception("detector failed on keyframe at stamp %.3f", frame.stamp_s)
        finally:
            with self._det_cv:
                self._det_pending -= 1
                self._det_cv.notify_all()

    def wait_for_detector(self, timeout_s: Optional[float] = None) -> bool:
        """Wait until every queued keyframe went through the detector; False on timeout."""
        deadline = time.monotonic() + (self.config.detector_drain_timeout_s if timeout_s is None else timeout_s)
        with self._det_cv:
            while self._det_pending > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._det_cv.wait(left)
        return True

    def close(self) -> None:
        """Stop the detector thread (queued keyframes are still detected first). Idempotent."""
        if self._det_thread is not None and self._det_queue is not None:
            self._det_queue.put(None)
            self._det_thread.join()
            self._det_thread = None

    @property
    def detector_name(self) -> Optional[str]:
        """Preset name of the running detector ("yolov4-tiny", "yolo-fastest"), None without one."""
        return None if self._detector is None else self._detector.name

    def label_info(self, instance_id: int) -> dict:
        """An instance's label votes, views per label and label history (see
        :meth:`InstanceMap.label_info`); KeyError for an unknown ID."""
        with self._lock:
            return self._instances.label_info(instance_id)

    @property
    def detector_error(self) -> Optional[str]:
        """Why the configured detector is not running (missing/corrupt files), else None."""
        return self._detector_error

    def _mask_observations(self, frame: RGBDFrame) -> list[Observation]:
        cfg = self.config
        s = cfg.mask_stride_px
        full = np.asarray(frame.instance_mask)
        m = full[::s, ::s]
        e = cfg.mask_erode_px
        if e > 0:
            # A sampled pixel keeps its id only if the full-resolution pixels ``e`` away (4-way
            # probe) carry the same id: drops the mixed depth at object borders at the cost of
            # four lookups per sampled pixel instead of a full-image morphology pass.
            h, w = full.shape
            rows = np.arange(0, h, s)[:, None]
            cols = np.arange(0, w, s)[None, :]
            same = np.ones(m.shape, dtype=bool)
            for dv, du in ((-e, 0), (e, 0), (0, -e), (0, e)):
                same &= full[np.clip(rows + dv, 0, h - 1), np.clip(cols + du, 0, w - 1)] == m
            m = np.where(same, m, 0)
        d = np.asarray(frame.depth_m, dtype=np.float32)[::s, ::s]
        ok = (m > 0) & np.isfinite(d) & (d >= cfg.depth_min_m) & (d <= cfg.depth_max_m)
        vs, us = np.nonzero(ok)
        if len(vs) == 0:
            return []
        ids = m[vs, us].astype(np.int64)
        z = d[vs, us]
        intr = frame.intrinsics
        pts_cam = np.stack([(us * s - intr.cx) / intr.fx * z, (vs * s - intr.cy) / intr.fy * z, z], axis=1)
        pts = transform_points(np.asarray(frame.T_world_camera, dtype=np.float64), pts_cam).astype(np.float32)
        cols = np.asarray(frame.color_rgb)[::s, ::s][vs, us]
        labels = frame.instance_labels or {}
        order = np.argsort(ids, kind="stable")
        bounds = np.flatnonzero(np.diff(ids[order])) + 1
        out = []
        for grp in np.split(order, bounds):
            uid = int(ids[grp[0]])
            out.append(Observation(pts[grp], cols[grp], str(labels.get(uid, "")), 1.0, "mask", frame.stamp_s, uid))
        return out

    def _detector_observations(self, frame: RGBDFrame) -> list[Observation]:
        """Detect on one keyframe and lift each box with the depth inside it (a band that fits the
        class's size). With geometry on, the lifted detections are kept as label evidence for the
        segments (returns []); without it, each is an observation of its own instance."""
        assert self._detector is not None  # noqa: S101 (internal invariant, not input validation)
        out = []
        evidence = []
        for det in self._detector.detect(np.asarray(frame.color_rgb)):
            pts, cols = lift_detection_colored(det, frame.depth_m, frame.intrinsics, frame.T_world_camera,
                                               frame.color_rgb, stride=self.config.mask_stride_px,
                                               depth_band_m=depth_band_for(det.label))
            if len(pts) == 0:
                continue
            if self.config.use_geometry:
                evidence.append(LabelEvidence(det.label, float(det.score), pts, cols, float(frame.stamp_s)))
            else:
                out.append(Observation(pts, cols, det.label, det.score, "detector", frame.stamp_s))
        if evidence:
            with self._evidence_lock:
                self._evidence.extend(evidence)
        return out

    # --- snapshot ---------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-extract the fused cloud, re-run geometric segmentation and rank keyframes per instance.

        Extraction runs under the lock (the TSDF grid is not thread-safe); segmentation runs outside
        it so integration is blocked only for the extraction.
        """
        with self._refresh_lock:
            if self._det_queue is not None and not self.wait_for_detector():
                logger.warning("refresh: detector still busy after %.0f s; labelling with what it has",
                               self.config.detector_drain_timeout_s)
            with self._lock:
                pts, cols = self._volume.extract()
                frame_no = self._n_integrated
                stamp = self._last_stamp or 0.0
            # The hash map hands voxels out in no fixed order: sort so that RANSAC (seeded) and the
            # segment IDs are reproducible run to run.
            order = np.lexsort(pts.T[::-1])
            pts, cols = pts[order], cols[order]
            segments = []
            votes = None
            if self.config.use_geometry and len(pts):
                for idx in segment_objects(pts, self.config.segmentation_params()):
                    segments.append((pts[idx], cols[idx]))
                with self._evidence_lock:
                    evidence = list(self._evidence)
                if evidence:
                    segments, votes = label_segments(segments, evidence, LabelingParams())
            # Read-only arrays are shared by every snapshot as they are (no per-snapshot copy).
            pts.flags.writeable = False
            cols.flags.writeable = False
            with self._lock:
                self._cloud = (pts, cols)
                self._cloud_frame = frame_no
                if self.config.use_geometry:
                    self._instances.update_geometry(segments, stamp, votes)
                for iid, ipts in self._instances.track_points().items():
                    best = self._keyframes.best_keyframes_for(ipts, self.config.best_keyframes_per_instance)
                    self._instances.set_best_keyframes(iid, best)
                self._snapshot = None

    def snapshot(self, refresh: bool = False, allow_stale: bool = False) -> SceneSnapshot:
        """Immutable view of the memory. The cloud is re-extracted only when ``refresh`` is True or
        ``refresh_every_n_frames`` frames have been integrated since the last extraction.

        ``allow_stale=True`` never extracts: it returns the cached cloud and geometry instances
        however old (empty before the first refresh), for callers that must stay cheap (a query
        callback, a publisher) while one owner (the node's refresh thread) keeps the cache fresh.
        """
        with self._lock:
            since = self._n_integrated - self._cloud_frame
            stale = self._cloud_frame < 0 or since >= self.config.refresh_every_n_frames
            stale = stale and self._n_integrated > 0 and not allow_stale
        if refresh or stale:
            self.refresh()
        with self._lock:
            return SceneSnapshot(
                stamp_s=float(self._last_stamp or 0.0),
                frame_id=self.config.frame_id,
                points=self._cloud[0],
                colors=self._cloud[1],
                instances=self._instances.instances(),
                keyframes=self._keyframes.keyframes,
                T_world_camera_latest=None if self._last_pose is None else self._last_pose.copy(),
                n_frames_integrated=self._n_integrated,
                metadata={"instance_source": self.instance_source_status(), "events": self._instances.events_view()},
            )

    def instance_source_status(self) -> str:
        """"mask", "detector", "geometry-only" (neither seen/configured) or "none" (nothing at all)."""
        if self._sources_used["mask"]:
            return "mask"
        if self._detector is not None:
            return "detector"
        return "geometry-only" if self.config.use_geometry else "none"

    @property
    def events(self) -> list[dict]:
        """Instance event log (create/merge/split/removed), each with ``stamp_s``."""
        with self._lock:
            return list(self._instances.events)

    def stats(self) -> dict[str, Any]:
        """Counters and timing percentiles (ms) of the memory, JSON-able."""
        with self._lock:
            timings = {
                k: {"p50_ms": float(np.percentile(v, 50)), "p95_ms": float(np.percentile(v, 95)), "n": len(v)}
                for k, v in self._timings.items() if len(v)
            }
            n_blocks = self._volume.n_blocks
            kf_bytes = sum(k.color_rgb.nbytes + k.depth_m.nbytes for k in self._keyframes.keyframes)
            inst_bytes = self._instances.nbytes()
            cloud_bytes = self._cloud[0].nbytes + self._cloud[1].nbytes
            return {
                "frames_integrated": self._n_integrated,
                "frames_rejected": dict(self._rejected),
                "timings": timings,
                "blocks": n_blocks,
                "blocks_erased": self._volume.n_blocks_erased,
                "tsdf_bytes_est": n_blocks * self._volume.bytes_per_block,
                "keyframe_bytes": kf_bytes,
                "instance_bytes": inst_bytes,
                "memory_bytes_est": n_blocks * self._volume.bytes_per_block + kf_bytes + inst_bytes + cloud_bytes,
                "instances": len(self._instances),
                "keyframes": len(self._keyframes.keyframes),
                "instance_source": self.instance_source_status(),
                "detector": self.detector_name,
                "detector_error": self._detector_error,
                "detector_keyframes_dropped": self._det_dropped,
                "label_evidence": len(self._evidence),
                "events": len(self._instances.events),
            }

    # --- persistence ------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Write the whole memory into ``directory`` (created): manifest.json (format version,
        config, counters), tsdf.npz, keyframes.npz, instances.json + instances.npz."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._volume.save(out / "tsdf.npz")
            kfs = self._keyframes.keyframes
            np.savez_compressed(
                out / "keyframes.npz",
                ids=np.array([k.keyframe_id for k in kfs], np.int64),
                stamps=np.array([k.stamp_s for k in kfs], np.float64),
                poses=np.array([k.T_world_camera for k in kfs], np.float64).reshape(-1, 4, 4),
                intrinsics=np.array([[k.intrinsics.width, k.intrinsics.height, k.intrinsics.fx, k.intrinsics.fy,
                                      k.intrinsics.cx, k.intrinsics.cy] for k in kfs], np.float64).reshape(-1, 6),
                **{f"color_{k.keyframe_id}": k.color_rgb for k in kfs},
                **{f"depth_{k.keyframe_id}": k.depth_m for k in kfs},
            )
            meta, arrays = self._instances.to_arrays()
            (out / "instances.json").write_text(json.dumps(meta))
            np.savez_compressed(out / "instances.npz", **arrays)
            np.savez_compressed(out / "cloud.npz", points=self._cloud[0], colors=self._cloud[1])
            with self._evidence_lock:
                ev = list(self._evidence)
            np.savez_compressed(
                out / "evidence.npz",
                labels=np.array([e.label for e in ev], dtype=str),
                scores=np.array([e.score for e in ev], np.float64),
                stamps=np.array([e.stamp_s for e in ev], np.float64),
                counts=np.array([len(e.points) for e in ev], np.int64),
                points=np.concatenate([e.points for e in ev]) if ev else np.zeros((0, 3), np.float32),
                colors=np.concatenate([e.colors for e in ev]) if ev else np.zeros((0, 3), np.uint8),
            )
            manifest = {
                "format": "scene_vlm_ros.scene_memory",
                "format_version": FORMAT_VERSION,
                "config": self.config.to_json(),
                "frames_integrated": self._n_integrated,
                "frames_rejected": dict(self._rejected),
                "last_stamp_s": self._last_stamp,
                "last_pose": None if self._last_pose is None else self._last_pose.tolist(),
                "keyframe_next_id": self._keyframes.next_id,
                "cloud_frame": self._cloud_frame,
            }
            # Manifest last: a directory without it is an incomplete save and load refuses it.
            (out / "manifest.json").write_text(json.dumps(manifest, indent=2))

    @classmethod
    def load(cls, directory: Path) -> SceneMemory:
        """Read a memory written by :meth:`save`; refuses unknown format versions."""
        src = Path(directory)
        man_path = src / "manifest.json"
        if not man_path.is_file():
            raise MemoryFormatError(f"{src} has no manifest.json: not a saved scene memory (or an incomplete save)")
        manifest = json.loads(man_path.read_text())
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise MemoryFormatError(
                f"{man_path}: format_version {version!r} is not supported (this build reads {FORMAT_VERSION}); "
                "re-create the map with this version"
            )
        for name in ("tsdf.npz", "keyframes.npz", "instances.json", "instances.npz", "cloud.npz"):
            if not (src / name).is_file():
                raise MemoryFormatError(f"{src} is missing {name}")
        mem = cls(MemoryConfig.from_json(manifest["config"]))
        mem._volume = TSDFVolume.load(src / "tsdf.npz", mem.config.fusion_params(), int(manifest["frames_integrated"]))
        with np.load(src / "keyframes.npz") as z:
            kfs = []
            for i, kid in enumerate(z["ids"]):
                w, h, fx, fy, cx, cy = z["intrinsics"][i]
                kfs.append(Keyframe(int(kid), float(z["stamps"][i]), z[f"color_{kid}"], z[f"depth_{kid}"],
                                    CameraIntrinsics(int(w), int(h), fx, fy, cx, cy), z["poses"][i]))
        mem._keyframes.restore(kfs, int(manifest["keyframe_next_id"]))
        with np.load(src / "instances.npz") as z:
            arrays = {k: z[k] for k in z.files}
        mem._instances = InstanceMap.from_arrays(mem.config.instance_params(),
                                                 json.loads((src / "instances.json").read_text()), arrays)
        with np.load(src / "cloud.npz") as z:
            pts, cols = z["points"], z["colors"]
        pts.flags.writeable = False
        cols.flags.writeable = False
        mem._cloud = (pts, cols)
        mem._n_integrated = int(manifest["frames_integrated"])
        mem._rejected = Counter(manifest["frames_rejected"])
        mem._last_stamp = manifest["last_stamp_s"]
        mem._last_pose = None if manifest["last_pose"] is None else np.array(manifest["last_pose"])
        mem._cloud_frame = int(manifest["cloud_frame"])
        if (src / "evidence.npz").is_file():  # absent in saves from before label voting
            with np.load(src / "evidence.npz") as z:
                bounds = np.concatenate([[0], np.cumsum(z["counts"])])
                for i, label in enumerate(z["labels"]):
                    a, b = int(bounds[i]), int(bounds[i + 1])
                    mem._evidence.append(LabelEvidence(str(label), float(z["scores"][i]), z["points"][a:b],
                                                       z["colors"][a:b], float(z["stamps"][i])))
        return mem
