"""Scan -> :class:`~scene_vlm_ros.core.types.SceneSnapshot`: where training and the robot meet.

The robot builds snapshots by live fusion; the training pipeline builds them here from a dataset
scan (a ScanNet-layout scan, our synthetic scenes, any posed RGB-D sequence) and then renders its
samples with the robot's own prompt code. Two ways to get the instances:

- ``"ground_truth"``: one instance per annotated object that the scan actually observes. Its
  points are the fused scan points inside the object's box, its box the annotated box. Instance IDs
  are *not* the annotation's IDs: they are numbered 1, 2, ... in the order the camera first sees the
  objects, the way the robot's memory numbers what it discovers, so a model never learns dataset IDs.
- ``"reconstruction"``: the robot's own :class:`~scene_vlm_ros.core.memory.SceneMemory` integrates
  every frame (fusion, keyframes, instances from masks/geometry) and its snapshot is used as is.

Either way :class:`BuiltScene` carries the matching from annotated object IDs to snapshot instance
IDs (oriented 3D box IoU, kept when >= ``iou_threshold``, 0.75 by default as in
Chat-Scene), which the sample builder uses to write answers with the IDs the robot would show.

Keyframes are real frames of the scan picked by the robot's keyframe policy
(:class:`~scene_vlm_ros.core.keyframes.KeyframeSelector`); in ``"ground_truth"`` mode a keyframe's
ID is the frame's position in the sequence, so "frame 12" of a generated question is keyframe 12.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..core.geometry import backproject_depth, box_iou, transform_points
from ..core.keyframes import KeyframeParams, KeyframeSelector
from ..core.types import GroundTruthObject, Instance, Keyframe, RGBDFrame, SceneSnapshot

logger = logging.getLogger(__name__)

INSTANCE_MODES = ("ground_truth", "reconstruction")
#: Chat-Scene keeps a grounding target only when an instance overlaps it with IoU >= 0.75.
DEFAULT_MATCH_IOU = 0.75


class SnapshotBuildError(ValueError):
    """The scan cannot give a snapshot (no frame with a valid pose, duplicate object IDs, ...)."""


@dataclass(frozen=True)
class SnapshotBuildParams:
    """How a scan becomes a snapshot (units in the names).

    ``voxel_m``: fused-cloud voxel edge; ``depth_stride_px``: pixel stride when back-projecting
    depth; ``max_depth_m``: readings beyond are ignored; ``min_instance_points``: an annotated object
    seen by fewer fused points is not an instance (the robot could not have seen it);
    ``box_margin_m``: slack when collecting an object's points from its box; ``keyframe``: the
    robot's keyframe policy; ``iou_threshold``: object -> instance matching threshold.
    """

    voxel_m: float = 0.04
    depth_stride_px: int = 4
    max_depth_m: float = 6.0
    min_instance_points: int = 20
    box_margin_m: float = 0.02
    keyframe: KeyframeParams = field(default_factory=KeyframeParams)
    iou_threshold: float = DEFAULT_MATCH_IOU

    def __post_init__(self) -> None:
        if self.voxel_m <= 0 or self.depth_stride_px < 1 or self.max_depth_m <= 0:
            raise ValueError("voxel_m and max_depth_m must be > 0 and depth_stride_px >= 1")
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")


@dataclass(frozen=True)
class BuiltScene:
    """A snapshot plus how the scan's annotations map onto it.

    ``instance_of_object``: annotated object ID -> snapshot instance ID, only for matches with
    IoU >= the threshold. ``match_iou``: annotated object ID -> best IoU with any instance (0 when
    none). ``keyframe_of_frame``: sequence frame index -> keyframe ID, for frames kept as keyframes.
    """

    snapshot: SceneSnapshot
    instance_of_object: dict[int, int]
    match_iou: dict[int, float]
    keyframe_of_frame: dict[int, int]
    mode: str


def _voxel_mean(points: np.ndarray, colors: np.ndarray, voxel_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Average points and colours per voxel; output sorted by voxel key (deterministic)."""
    if len(points) == 0:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
    keys = np.floor(points / voxel_m).astype(np.int64)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    n = len(counts)
    out_p = np.zeros((n, 3), np.float64)
    out_c = np.zeros((n, 3), np.float64)
    np.add.at(out_p, inverse, points)
    np.add.at(out_c, inverse, colors.astype(np.float64))
    out_p /= counts[:, None]
    out_c /= counts[:, None]
    return out_p.astype(np.float32), np.clip(np.round(out_c), 0, 255).astype(np.uint8)


def _frame_points(frame: RGBDFrame, params: SnapshotBuildParams) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) float64 and colours (N, 3) uint8 of one frame's valid depth pixels."""
    pts_cam, pix = backproject_depth(frame.depth_m, frame.intrinsics, stride=params.depth_stride_px,
                                     max_m=params.max_depth_m)
    pts = transform_points(np.asarray(frame.T_world_camera, np.float64), pts_cam.astype(np.float64))
    return pts, frame.color_rgb[pix[:, 0], pix[:, 1]]


def _check_frames(frames: Sequence[RGBDFrame]) -> None:
    if not frames:
        raise SnapshotBuildError(
            "the scan has no frame with a valid camera pose; a snapshot needs posed RGB-D frames "
            "(ScanNet: export pose/<i>.txt with SensReader; invalid poses are inf/nan and skipped)"
        )
    for f in frames:
        T = np.asarray(f.T_world_camera, np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise SnapshotBuildError(f"frame {f.frame_index} has no valid T_world_camera (got shape {T.shape})")


def _keyframes(frames: Sequence[RGBDFrame], params: KeyframeParams) -> list[Keyframe]:
    """The robot's keyframe policy over the sequence; keyframe ID = the frame's sequence index."""
    selector = KeyframeSelector(params)
    kept: dict[int, int] = {}  # selector id -> frame index
    for f in frames:
        if selector.should_add(f):
            kf = selector.add(f)
            kept[kf.keyframe_id] = int(f.frame_index)
    return [dataclasses.replace(kf, keyframe_id=kept[kf.keyframe_id]) for kf in selector.keyframes]


def match_objects_to_instances(
    objects: Iterable[GroundTruthObject], instances: Iterable[Instance], iou_threshold: float = DEFAULT_MATCH_IOU
) -> tuple[dict[int, int], dict[int, float]]:
    """Each annotated object -> the instance with the highest 3D box IoU (kept when >= ``iou_threshold``).

    Returns ``(instance_of_object, match_iou)`` keyed by ``object_id``. Greedy one-to-one in order of
    decreasing IoU, so two objects never claim the same instance.
    """
    objects = list(objects)
    instances = list(instances)
    pairs = []
    best: dict[int, float] = {o.object_id: 0.0 for o in objects}
    for o in objects:
        for inst in instances:
            iou = float(box_iou(o.box, inst.box))
            best[o.object_id] = max(best[o.object_id], iou)
            if iou >= iou_threshold:
                pairs.append((-iou, o.object_id, inst.instance_id))
    taken: set[int] = set()
    mapping: dict[int, int] = {}
    for _, oid, iid in sorted(pairs):
        if oid in mapping or iid in taken:
            continue
        mapping[oid] = iid
        taken.add(iid)
    return mapping, best


def _ground_truth_instances(
    frames: Sequence[RGBDFrame], objects: Sequence[GroundTruthObject], keyframes: Sequence[Keyframe],
    params: SnapshotBuildParams,
) -> tuple[np.ndarray, np.ndarray, list[Instance]]:
    """Fused cloud and one instance per observed object, numbered in order of first sight."""
    all_pts, all_cols = [], []
    first_seen: dict[int, tuple[float, int]] = {}
    last_seen: dict[int, float] = {}
    n_obs: dict[int, int] = {}
    obj_pts: dict[int, list[np.ndarray]] = {o.object_id: [] for o in objects}
    obj_cols: dict[int, list[np.ndarray]] = {o.object_id: [] for o in objects}
    for f in frames:
        pts, cols = _frame_points(f, params)
        all_pts.append(pts)
        all_cols.append(cols)
        for o in objects:
            inside = o.box.contains(pts, margin_m=params.box_margin_m)
            if int(inside.sum()) >= params.min_instance_points:
                first_seen.setdefault(o.object_id, (float(f.stamp_s), int(f.frame_index)))
                last_seen[o.object_id] = float(f.stamp_s)
                n_obs[o.object_id] = n_obs.get(o.object_id, 0) + 1
            if inside.any():
                obj_pts[o.object_id].append(pts[inside])
                obj_cols[o.object_id].append(cols[inside])
    points, colors = _voxel_mean(np.concatenate(all_pts), np.concatenate(all_cols), params.voxel_m)
    order = sorted(first_seen, key=lambda oid: (first_seen[oid], oid))
    by_id = {o.object_id: o for o in objects}
    instances = []
    for new_id, oid in enumerate(order, start=1):
        o = by_id[oid]
        p, c = _voxel_mean(np.concatenate(obj_pts[oid]), np.concatenate(obj_cols[oid]), params.voxel_m)
        if len(p) < 1:
            continue
        best = _best_keyframes(p, keyframes)
        instances.append(
            Instance(
                instance_id=new_id, label=o.label, score=1.0, box=o.box,
                aabb_min=p.min(axis=0), aabb_max=p.max(axis=0), points=p, colors=c,
                n_observations=n_obs[oid], first_seen_s=first_seen[oid][0], last_seen_s=last_seen[oid],
                best_keyframe_ids=best, source="ground_truth",
            )
        )
    return points, colors, instances


def _best_keyframes(points: np.ndarray, keyframes: Sequence[Keyframe], k: int = 3) -> tuple[int, ...]:
    """Up to ``k`` keyframe IDs in which most of ``points`` project inside the image in front of the camera."""
    if len(points) == 0 or not keyframes:
        return ()
    pts = points[np.linspace(0, len(points) - 1, min(len(points), 200)).astype(int)].astype(np.float64)
    scored = []
    for kf in keyframes:
        p_cam = transform_points(np.linalg.inv(kf.T_world_camera), pts)
        z = p_cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = kf.intrinsics.fx * p_cam[:, 0] / z + kf.intrinsics.cx
            v = kf.intrinsics.fy * p_cam[:, 1] / z + kf.intrinsics.cy
        ok = (z > 0.1) & (u >= 0) & (u < kf.intrinsics.width) & (v >= 0) & (v < kf.intrinsics.height)
        if ok.any():
            scored.append((-int(ok.sum()), kf.keyframe_id))
    return tuple(kid for _, kid in sorted(scored)[:k])


def build_snapshot(
    frames: Iterable[RGBDFrame],
    objects: Optional[Sequence[GroundTruthObject]] = None,
    mode: str = "ground_truth",
    params: Optional[SnapshotBuildParams] = None,
    memory_config: Optional[object] = None,
    frame_id: str = "map",
) -> BuiltScene:
    """Build the snapshot of a scan (see the module docstring for the two ``mode``s).

    Args:
        frames: posed RGB-D frames in time order (world frame z up; ``frame_index`` = sequence index).
        objects: the scan's annotated objects (world frame); required for ``"ground_truth"``,
            optional for ``"reconstruction"`` (then only used for the matching).
        mode: ``"ground_truth"`` or ``"reconstruction"``.
        params: cloud, keyframe and matching parameters.
        memory_config: a :class:`~scene_vlm_ros.core.memory.MemoryConfig` for ``"reconstruction"``.
        frame_id: world frame name put into the snapshot.

    Raises:
        SnapshotBuildError: no posed frame, ``"ground_truth"`` without objects, duplicate object IDs.
        ValueError: unknown ``mode``.
    """
    if mode not in INSTANCE_MODES:
        raise ValueError(f"mode {mode!r} must be one of {INSTANCE_MODES}")
    params = params or SnapshotBuildParams()
    frames = list(frames)
    _check_frames(frames)
    objects = list(objects or [])
    ids = [o.object_id for o in objects]
    if len(set(ids)) != len(ids):
        raise SnapshotBuildError(f"annotated object IDs must be unique, got duplicates in {sorted(ids)}")
    if mode == "ground_truth":
        if not objects:
            raise SnapshotBuildError("mode 'ground_truth' needs the scan's annotated objects (none were given)")
        keyframes = _keyframes(frames, params.keyframe)
        points, colors, instances = _ground_truth_instances(frames, objects, keyframes, params)
        snapshot = SceneSnapshot(
            stamp_s=float(frames[-1].stamp_s), frame_id=frame_id, points=points, colors=colors,
            instances=tuple(instances), keyframes=tuple(keyframes),
            T_world_camera_latest=np.asarray(frames[-1].T_world_camera, np.float64).copy(),
            n_frames_integrated=len(frames), metadata={"instance_source": "ground_truth"},
        )
        keyframe_of_frame = {kf.keyframe_id: kf.keyframe_id for kf in keyframes}
    else:
        from ..core.memory import MemoryConfig, SceneMemory

        config = memory_config if memory_config is not None else MemoryConfig()
        if not isinstance(config, MemoryConfig):
            raise TypeError(f"memory_config must be a MemoryConfig, got {type(config).__name__}")
        memory = SceneMemory(config)
        stamp_to_frame: dict[float, int] = {}
        for f in frames:
            memory.integrate(f)
            stamp_to_frame[float(f.stamp_s)] = int(f.frame_index)
        snapshot = memory.snapshot(refresh=True)
        keyframe_of_frame = {
            stamp_to_frame[kf.stamp_s]: kf.keyframe_id for kf in snapshot.keyframes if kf.stamp_s in stamp_to_frame
        }
    mapping, best = match_objects_to_instances(objects, snapshot.instances, params.iou_threshold)
    logger.info(
        "snapshot (%s): %d points, %d instances, %d keyframes; %d of %d objects matched at IoU >= %.2f",
        mode, len(snapshot.points), len(snapshot.instances), len(snapshot.keyframes), len(mapping), len(objects),
        params.iou_threshold,
    )
    return BuiltScene(snapshot, mapping, best, keyframe_of_frame, mode)


def build_snapshot_from_scannet(scan_dir: str, mode: str = "ground_truth", frame_step: int = 10,
                                max_frames: Optional[int] = None,
                                params: Optional[SnapshotBuildParams] = None) -> BuiltScene:
    """Snapshot of an exported ScanNet scan (ground-truth objects from its aggregation + mesh).

    Raises :class:`~scene_vlm_ros.datasets.seven_scenes.DatasetFormatError` for a scan without
    ``pose/`` files and :class:`SnapshotBuildError` when no pose is valid.
    """
    from .scannet import ScanNetScan

    scan = ScanNetScan(scan_dir, frame_step=frame_step, max_frames=max_frames)
    objects = scan.ground_truth_objects() if scan.has_ground_truth else []
    if mode == "ground_truth" and not objects:
        raise SnapshotBuildError(f"{scan_dir}: no <scene>.aggregation.json, so no ground-truth instances; "
                                 "use mode 'reconstruction'")
    return build_snapshot(scan.frames(), objects, mode=mode, params=params)


def build_snapshot_from_synthetic(layout: object, n_frames: int = 60, width: int = 320, height: int = 240,
                                  seed: int = 0, mode: str = "ground_truth",
                                  params: Optional[SnapshotBuildParams] = None) -> tuple[BuiltScene, list[RGBDFrame]]:
    """Snapshot of one of our synthetic rooms (a ``RoomLayout``) seen along one loop of ``n_frames``.

    Returns the built scene and the rendered frames (their ``frame_index`` is the keyframe ID in
    ``"ground_truth"`` mode). Deterministic for (layout, sizes, seed).
    """
    from .render import generate_sequence

    frames = [sf.frame for sf in generate_sequence(layout, n_frames, width, height, speed_mps=None,  # type: ignore[arg-type]
                                                   seed=seed)]
    return build_snapshot(frames, layout.objects, mode=mode, params=params), frames  # type: ignore[attr-defined]
