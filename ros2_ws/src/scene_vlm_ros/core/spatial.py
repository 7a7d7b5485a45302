"""Metric spatial reasoning over a :class:`SceneSnapshot` (pure geometry, no model).

Answers questions such as "how far is the chair from the table?", "how many chairs are in the
room?", "how tall is the lamp?", "is the lamp to the left or right of the sofa, seen from the
door?", "what is the floor area of the room?", "how far did the camera move between frame 3 and
frame 10?". Object mentions are resolved with :mod:`scene_vlm_ros.core.referring` (the resolver
the fallback backend and the question generator share), so a generated question is answered with
the generated answer when the instances equal the ground truth.

Conventions (see ``core/types.py``): world frame z up, metres; distances are between box centres
(3D); "the camera"/"me"/"the robot" is the optical centre of ``T_world_viewer`` (default
``snapshot.T_world_camera_latest``); depth is the z coordinate in the optical frame (along the
viewing axis), as SPAR's depth tasks define it. Numbers are formatted by the ``format_*`` helpers
below, which question generation uses too, so answers compare as strings.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np

from .colors import COLOR_PALETTE, canonical_color
from .geometry import invert_transform, transform_points
from .referring import (
    ROBOT,
    Candidate,
    ReferringError,
    candidates_from_instances,
    canonical_label,
    label_matches,
    lateral_offset_m,
    parse_expression,
    resolve,
)
from .types import CameraIntrinsics, GroundTruthObject, Instance, Keyframe, OrientedBox3D, SceneSnapshot

logger = logging.getLogger(__name__)

#: Share of points ignored at each end of the cloud's extent when measuring the room (outliers).
ROOM_EXTENT_QUANTILE = 0.001

BoxLike = Union[Instance, GroundTruthObject, Candidate, OrientedBox3D]


#: The single-target grounding reply when no object fits (answer parsers match it literally).
NO_MATCH_REPLY = "No matching object."


class SpatialQueryError(ValueError):
    """The question could not be understood or answered from the map (message says why)."""


@dataclass(frozen=True)
class SpatialAnswer:
    """One metric answer.

    ``text`` is the full reply with the ``<OBJ###>`` tags of the objects involved, ``short`` the bare
    answer as question generation words it ("1.23 m", "left", "3"), ``value`` the number behind it
    (metres, m^2, m^3, degrees, a count; for left/right the signed sideways offset in m, positive =
    left; None when there is none), ``instance_ids`` the objects involved (for "which is closer"
    the winner first), ``kind`` the question family.
    """

    text: str
    value: float | None
    instance_ids: tuple[int, ...]
    kind: str
    short: str = ""


# ----------------------------------------------------------------------------- formatting


def obj_tag(instance_id: int) -> str:
    """Chat-Scene object token: ``<OBJ012>`` (three digits, zero padded)."""
    return f"<OBJ{int(instance_id):03d}>"


def grounding_reply(instance_id: int | None) -> str:
    """Chat-Scene ScanRefer answer: ``"<OBJ012>."``; ``"No matching object."`` when None."""
    return NO_MATCH_REPLY if instance_id is None else f"{obj_tag(instance_id)}."


def multi_grounding_reply(instance_ids: Sequence[int]) -> str:
    """Chat-Scene Multi3DRefer answer: ``"No."`` | ``"Yes. <OBJ001>."`` | ``"Yes. <OBJ001> and <OBJ002>."``
    | ``"Yes. <OBJ001>, <OBJ002>, and <OBJ003>."`` (IDs in the given order)."""
    tags = [obj_tag(i) for i in instance_ids]
    if not tags:
        return "No."
    if len(tags) == 1:
        return f"Yes. {tags[0]}."
    if len(tags) == 2:
        return f"Yes. {tags[0]} and {tags[1]}."
    return "Yes. " + ", ".join(tags[:-1]) + f", and {tags[-1]}."


def format_metres(d: float) -> str:
    return f"{d:.2f} m"


def format_area(a: float) -> str:
    return f"{a:.2f} m²"


def format_volume(v: float) -> str:
    return f"{v:.3f} m³"


def format_degrees(a: float) -> str:
    return f"{a:.1f} degrees"


# ----------------------------------------------------------------------------- low-level geometry


def _box(obj: BoxLike) -> OrientedBox3D:
    if isinstance(obj, OrientedBox3D):
        return obj
    return obj.box


def center_of(obj: BoxLike) -> np.ndarray:
    """(3,) world centre (m) of an instance / ground-truth object / candidate / box."""
    return np.asarray(_box(obj).center, dtype=np.float64)


def distance_between(a: BoxLike, b: BoxLike) -> float:
    """3D centre-to-centre distance (m)."""
    return float(np.linalg.norm(center_of(a) - center_of(b)))


def distance_to_point(obj: BoxLike, xyz: np.ndarray) -> float:
    """3D distance (m) from the object's centre to a world point (e.g. the camera's optical centre)."""
    return float(np.linalg.norm(center_of(obj) - np.asarray(xyz, dtype=np.float64).reshape(3)))


def height_of(obj: BoxLike) -> float:
    """Box height along z (m)."""
    return float(_box(obj).size[2])


def length_of(obj: BoxLike) -> float:
    """Longest horizontal side of the box (m)."""
    s = _box(obj).size
    return float(max(s[0], s[1]))


def width_of(obj: BoxLike) -> float:
    """Shorter horizontal side of the box (m)."""
    s = _box(obj).size
    return float(min(s[0], s[1]))


def volume_of(obj: BoxLike) -> float:
    """Box volume (m^3)."""
    return float(np.prod(_box(obj).size))


def depth_in_camera(obj: BoxLike, T_world_camera: np.ndarray) -> float:  # noqa: N803
    """Depth (m) of the object's centre along the optical axis of a camera (negative = behind)."""
    p = transform_points(invert_transform(np.asarray(T_world_camera, dtype=np.float64)), center_of(obj)[None])
    return float(p[0, 2])


def relative_direction(target: BoxLike, anchor: BoxLike, viewer_xyz: np.ndarray) -> tuple[str, float]:
    """("left"|"right", signed offset m) of target w.r.t. anchor, seen from ``viewer_xyz`` looking at the anchor."""
    off = lateral_offset_m(center_of(target), center_of(anchor), np.asarray(viewer_xyz, dtype=np.float64))
    return ("left" if off > 0 else "right"), off


def camera_motion(T_world_a: np.ndarray, T_world_b: np.ndarray) -> tuple[float, float]:  # noqa: N803
    """(translation m, rotation angle deg) of the camera from pose a to pose b (geodesic angle)."""
    Ta, Tb = np.asarray(T_world_a, dtype=np.float64), np.asarray(T_world_b, dtype=np.float64)
    dist = float(np.linalg.norm(Tb[:3, 3] - Ta[:3, 3]))
    R = Ta[:3, :3].T @ Tb[:3, :3]
    cos = float(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))
    return dist, float(np.degrees(np.arccos(cos)))


def count_label(snapshot: SceneSnapshot, label: str) -> int:
    """Number of instances whose canonical label is ``label`` (synonyms and plurals accepted)."""
    wanted = canonical_label(label)
    if not wanted:
        raise SpatialQueryError("count_label needs a non-empty label, e.g. 'chair'")
    return sum(1 for inst in snapshot.instances if label_matches(wanted, canonical_label(inst.label)))


def floor_extent(snapshot: SceneSnapshot) -> tuple[float, float]:
    """(x extent, y extent) in m of the mapped area: the cloud's robust xy extent, else the boxes'."""
    pts = np.asarray(snapshot.points, dtype=np.float64)
    if len(pts) >= 3:
        lo = np.quantile(pts[:, :2], ROOM_EXTENT_QUANTILE, axis=0)
        hi = np.quantile(pts[:, :2], 1.0 - ROOM_EXTENT_QUANTILE, axis=0)
    elif snapshot.instances:
        corners = np.concatenate([inst.box.corners() for inst in snapshot.instances])
        lo, hi = corners[:, :2].min(axis=0), corners[:, :2].max(axis=0)
    else:
        raise SpatialQueryError("the map is empty; integrate some frames before asking about the room size")
    return float(hi[0] - lo[0]), float(hi[1] - lo[1])


def floor_area(snapshot: SceneSnapshot) -> float:
    """Floor area (m^2) of the axis-aligned xy extent of the map (see :func:`floor_extent`)."""
    w, d = floor_extent(snapshot)
    return w * d


# ----------------------------------------------------------------------------- test / dataset helper


def snapshot_from_objects(
    objects: Sequence[GroundTruthObject],
    *,
    points_per_object: int = 200,
    room_bounds: tuple[Sequence[float], Sequence[float]] | None = None,
    floor_step_m: float = 0.1,
    camera_poses: Mapping[int, np.ndarray] | None = None,
    intrinsics: CameraIntrinsics | None = None,
    T_world_camera_latest: np.ndarray | None = None,  # noqa: N803
    seed: int = 0,
) -> SceneSnapshot:
    """A snapshot whose instances *are* the ground-truth objects (for tests and oracle baselines).

    Each object becomes an Instance with ``instance_id = object_id``, ``box = object.box``, and
    ``points_per_object`` points sampled uniformly inside the box, painted in the palette colour of
    ``object.color`` (gray when it is no palette colour). ``room_bounds = (min_xyz, max_xyz)`` adds
    a floor grid (step ``floor_step_m``, edges included) so the cloud spans the room. Each camera
    pose becomes a keyframe (``keyframe_id`` = frame index, black images of ``intrinsics`` size)
    and the latest pose defaults to the one with the highest index.
    """
    if points_per_object < 1:
        raise ValueError(f"points_per_object must be >= 1, got {points_per_object}")
    rng = np.random.default_rng(seed)
    instances, all_pts, all_cols = [], [], []
    for obj in objects:
        box = obj.box
        local = (rng.random((points_per_object, 3)) - 0.5) * np.asarray(box.size, dtype=np.float64)
        pts = (local @ box.rotation().T + np.asarray(box.center)).astype(np.float32)
        name = canonical_color(obj.color) or "gray"
        cols = np.tile(np.asarray(COLOR_PALETTE[name], dtype=np.uint8), (points_per_object, 1))
        instances.append(
            Instance(
                instance_id=int(obj.object_id),
                label=obj.label,
                score=1.0,
                box=box,
                aabb_min=pts.min(axis=0),
                aabb_max=pts.max(axis=0),
                points=pts,
                colors=cols,
                n_observations=1,
                source="mask",
            )  # fmt: skip
        )
        all_pts.append(pts)
        all_cols.append(cols)
    if room_bounds is not None:
        lo, hi = np.asarray(room_bounds[0], dtype=np.float64), np.asarray(room_bounds[1], dtype=np.float64)
        xs = np.append(np.arange(lo[0], hi[0], floor_step_m), hi[0])
        ys = np.append(np.arange(lo[1], hi[1], floor_step_m), hi[1])
        gx, gy = np.meshgrid(xs, ys)
        floor = np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, lo[2])], axis=1).astype(np.float32)
        all_pts.append(floor)
        all_cols.append(np.tile(np.asarray(COLOR_PALETTE["gray"], dtype=np.uint8), (len(floor), 1)))
    keyframes = []
    latest = T_world_camera_latest
    if camera_poses:
        intr = intrinsics or CameraIntrinsics(64, 48, 50.0, 50.0, 32.0, 24.0)
        for idx in sorted(camera_poses):
            keyframes.append(
                Keyframe(
                    int(idx),
                    float(idx),
                    np.zeros((intr.height, intr.width, 3), np.uint8),
                    np.zeros((intr.height, intr.width), np.float32),
                    intr,
                    np.asarray(camera_poses[idx], np.float64),
                )
            )
        if latest is None:
            latest = np.asarray(camera_poses[max(camera_poses)], dtype=np.float64)
    points = np.concatenate(all_pts) if all_pts else np.zeros((0, 3), np.float32)
    colors = np.concatenate(all_cols) if all_cols else np.zeros((0, 3), np.uint8)
    return SceneSnapshot(
        stamp_s=0.0, frame_id="map", points=points, colors=colors, instances=tuple(instances),
        keyframes=tuple(keyframes), T_world_camera_latest=latest, n_frames_integrated=max(1, len(keyframes)),
        metadata={"source": "ground_truth"},
    )  # fmt: skip


# ----------------------------------------------------------------------------- the engine

_QA_SUFFIXES = ("answer the question using a single word or phrase",)
_ROOM_WORDS = ("the room", "this room", "the scene", "the space")
_CAMERA_WORDS = ("the camera", "me", "the robot", "you", "us", "here")


def _clean(question: str) -> str:
    q = question.strip().lower()
    for suf in _QA_SUFFIXES:
        q = q.replace(suf, "")
    q = re.sub(r"\s+", " ", q).strip()
    return q.rstrip("?.! ").strip()


class SpatialEngine:
    """Answers metric questions about one snapshot.

    ``T_world_viewer`` is the camera pose (optical frame, 4x4) that "me"/"the camera" means;
    default ``snapshot.T_world_camera_latest``.
    """

    def __init__(self, snapshot: SceneSnapshot, T_world_viewer: np.ndarray | None = None) -> None:  # noqa: N803
        self.snapshot = snapshot
        T = T_world_viewer if T_world_viewer is not None else snapshot.T_world_camera_latest
        self.T_world_viewer = None if T is None else np.asarray(T, dtype=np.float64)
        if self.T_world_viewer is not None and (
            self.T_world_viewer.shape != (4, 4) or not np.all(np.isfinite(self.T_world_viewer))
        ):
            raise ValueError(f"T_world_viewer must be a finite 4x4 camera pose, got shape {self.T_world_viewer.shape}")
        self.candidates = candidates_from_instances(snapshot.instances)
        self._by_id = {inst.instance_id: inst for inst in snapshot.instances}

    @property
    def viewer_xyz(self) -> np.ndarray | None:
        return None if self.T_world_viewer is None else self.T_world_viewer[:3, 3]

    # -- mentions ------------------------------------------------------------------------------

    def resolve_all(self, description: str) -> list[Instance]:
        """All instances fitting a description, best first (SpatialQueryError when none)."""
        try:
            expr = parse_expression(description)
            matches = resolve(expr, self.candidates, self.viewer_xyz)
        except ReferringError as exc:
            raise SpatialQueryError(str(exc)) from exc
        if not matches:
            if expr.label is not None and not any(label_matches(expr.label, c.label) for c in self.candidates):
                raise SpatialQueryError(f"no object labelled '{expr.label}' in the map")
            raise SpatialQueryError(f"no object in the map fits '{description.strip()}'")
        return [self._by_id[m.cid] for m in matches]

    def resolve_one(self, description: str) -> Instance:
        """The best instance for a description (the top-ranked one when several fit)."""
        return self.resolve_all(description)[0]

    def _viewer_pose(self) -> np.ndarray:
        if self.T_world_viewer is None:
            raise SpatialQueryError("the camera/robot pose is unknown for this map; cannot answer relative to it")
        return self.T_world_viewer

    def _pair(self, text: str, sep: str) -> tuple[str, Instance, str, Instance]:
        """Split "A <sep> B" at the first place where both sides name an object."""
        parts = text.split(f" {sep} ")
        last_err: SpatialQueryError | None = None
        for k in range(1, len(parts)):
            a, b = f" {sep} ".join(parts[:k]).strip(), f" {sep} ".join(parts[k:]).strip()
            try:
                return a, self.resolve_one(a), b, self.resolve_one(b)
            except SpatialQueryError as exc:
                last_err = exc
        raise last_err or SpatialQueryError(f"could not find two objects joined by '{sep}' in '{text}'")

    # -- families ------------------------------------------------------------------------------

    def _count(self, desc: str) -> SpatialAnswer:
        desc = re.sub(r"\b(are there|is there|are in|is in|in|do you see|can you see|are|is)\b", " ", desc)
        for room in _ROOM_WORDS:
            desc = desc.replace(room, " ")
        desc = re.sub(r"\s+", " ", desc).strip()
        try:
            expr = parse_expression(desc)
            matches = resolve(expr, self.candidates, self.viewer_xyz)
        except ReferringError as exc:
            raise SpatialQueryError(f"could not understand what to count in '{desc}': {exc}") from exc
        ids = tuple(sorted(m.cid for m in matches))
        n = len(ids)
        detail = ", ".join(obj_tag(i) for i in ids) if ids else "none in the map"
        return SpatialAnswer(f"{n} ({detail}).", float(n), ids, "count", str(n))

    def _distance(self, a_text: str, a: Instance, b_text: str, b: Instance) -> SpatialAnswer:
        d = distance_between(a, b)
        ids = (a.instance_id, b.instance_id)
        text = f"{format_metres(d)} (between {obj_tag(ids[0])} and {obj_tag(ids[1])}, centre to centre)."
        return SpatialAnswer(text, d, ids, "distance", format_metres(d))

    def _distance_camera(self, a: Instance) -> SpatialAnswer:
        d = distance_to_point(a, self._viewer_pose()[:3, 3])
        text = f"{format_metres(d)} (from the camera to the centre of {obj_tag(a.instance_id)})."
        return SpatialAnswer(text, d, (a.instance_id,), "distance_camera", format_metres(d))

    def _measure(self, what: str, desc: str) -> SpatialAnswer:
        if desc in _ROOM_WORDS and what in ("big", "large", "size", "area"):
            return self._room()
        inst = self.resolve_one(desc)
        tag = obj_tag(inst.instance_id)
        if what in ("tall", "high", "height"):
            v, short, kind = height_of(inst), format_metres(height_of(inst)), "height"
        elif what in ("long", "length"):
            v, short, kind = length_of(inst), format_metres(length_of(inst)), "length"
        elif what in ("wide", "width"):
            v, short, kind = width_of(inst), format_metres(width_of(inst)), "width"
        else:
            v, short, kind = volume_of(inst), format_volume(volume_of(inst)), "volume"
        return SpatialAnswer(f"{short} ({kind} of {tag}).", v, (inst.instance_id,), kind, short)

    def _direction(self, a_text: str, b_text: str, viewer_text: str | None) -> SpatialAnswer:
        a, b = self.resolve_one(a_text), self.resolve_one(b_text)
        if viewer_text is None or viewer_text.strip() in _CAMERA_WORDS or viewer_text.strip() == ROBOT:
            viewer_xyz = self._viewer_pose()[:3, 3]
            seen, ids = "seen from the camera", (a.instance_id, b.instance_id)
        else:
            v = self.resolve_one(viewer_text)
            viewer_xyz, seen = center_of(v), f"seen from {obj_tag(v.instance_id)}"
            ids = (a.instance_id, b.instance_id, v.instance_id)
        try:
            side, off = relative_direction(a, b, viewer_xyz)
        except ReferringError as exc:
            raise SpatialQueryError(str(exc)) from exc
        text = (
            f"{side} ({obj_tag(a.instance_id)} is {abs(off):.2f} m to the {side} of {obj_tag(b.instance_id)}, {seen})."
        )
        return SpatialAnswer(text, off, ids, "direction", side)

    def _depth_order(self, closer: bool, a_text: str, a: Instance, b_text: str, b: Instance) -> SpatialAnswer:
        T = self._viewer_pose()
        da, db = depth_in_camera(a, T), depth_in_camera(b, T)
        a_wins = (da < db) if closer else (da > db)
        win_text, win, lose = (a_text, a, b) if a_wins else (b_text, b, a)
        dw, dl = (da, db) if a_wins else (db, da)
        text = (
            f"{win_text} ({obj_tag(win.instance_id)} at {dw:.2f} m depth, {obj_tag(lose.instance_id)} at {dl:.2f} m)."
        )
        return SpatialAnswer(text, dw, (win.instance_id, lose.instance_id), "depth_order", win_text)

    def _room(self) -> SpatialAnswer:
        w, d = floor_extent(self.snapshot)
        area = w * d
        text = f"{format_area(area)} (floor area, {w:.2f} m x {d:.2f} m)."
        return SpatialAnswer(text, area, (), "room_area", format_area(area))

    def _keyframe(self, idx: int) -> Keyframe:
        kf = self.snapshot.keyframe(idx)
        if kf is None:
            have = [k.keyframe_id for k in self.snapshot.keyframes]
            raise SpatialQueryError(f"frame {idx} is not a keyframe of this map (keyframes: {have[:20]})")
        return kf

    def _camera_motion(self, i: int, j: int, turn: bool) -> SpatialAnswer:
        dist, ang = camera_motion(self._keyframe(i).T_world_camera, self._keyframe(j).T_world_camera)
        if turn:
            short = format_degrees(ang)
            return SpatialAnswer(
                f"{short} (camera rotation from frame {i} to frame {j}).", ang, (), "camera_turn", short
            )
        short = format_metres(dist)
        return SpatialAnswer(
            f"{short} (camera translation from frame {i} to frame {j}).", dist, (), "camera_move", short
        )

    # -- entry point ---------------------------------------------------------------------------

    def answer(self, question: str) -> SpatialAnswer:
        """Answer one metric question; SpatialQueryError when it is not understood or not answerable."""
        if not isinstance(question, str) or not question.strip():
            raise SpatialQueryError("empty question; ask e.g. 'how far is the chair from the table?'")
        q = _clean(question)
        m = re.match(r"^how far did the camera (?:move|travel|go) between frames? (\d+) and (?:frame )?(\d+)$", q)
        if m:
            return self._camera_motion(int(m.group(1)), int(m.group(2)), turn=False)
        m = re.match(
            r"^(?:how many degrees|how much|by how much|how far) did the camera (?:turn|rotate)"
            r" between frames? (\d+) and (?:frame )?(\d+)$",
            q,
        )
        if m:
            return self._camera_motion(int(m.group(1)), int(m.group(2)), turn=True)
        if re.match(
            r"^(?:what is|what's|how big is|how large is) (?:the )?(?:floor )?(?:area|size) of the room$", q
        ) or (re.match(r"^how (?:big|large) is the room$", q)):
            return self._room()
        m = re.match(r"^how many (.+)$", q)
        if m:
            return self._count(m.group(1))
        m = re.match(r"^(?:what is|what's) the distance (?:between|from) (.+)$", q)
        if m:
            body = m.group(1)
            sep = " to " if " and " not in body and " to " in body else " and "
            if sep == " and ":
                a_text, a, b_text, b = self._pair(body, "and")
            else:
                a_text, a, b_text, b = self._pair(body, "to")
            return self._distance(a_text, a, b_text, b)
        m = re.match(r"^how far (?:away )?(?:is|are) (.+) from (" + "|".join(_CAMERA_WORDS) + r")$", q)
        if m:
            return self._distance_camera(self.resolve_one(m.group(1)))
        m = re.match(r"^how far (?:away )?(?:is|are) (.+ from .+)$", q)
        if m:
            a_text, a, b_text, b = self._pair(m.group(1), "from")
            return self._distance(a_text, a, b_text, b)
        m = re.match(r"^how far (?:away )?(?:is|are) (.+?)(?: away)?$", q)
        if m:
            return self._distance_camera(self.resolve_one(m.group(1)))
        m = re.match(
            r"^which (?:one )?is (closer|nearer|farther|further) (?:to|from) (?:the camera|me|the robot), (.+)$", q
        )
        if m:
            a_text, a, b_text, b = self._pair(m.group(2), "or")
            return self._depth_order(m.group(1) in ("closer", "nearer"), a_text, a, b_text, b)
        m = re.match(
            r"^is (.+?) (?:to the |on the )?(?:left|right) or (?:to the |on the )?(?:left|right) of (.+?)"
            r"(?:,? (?:when )?(?:as )?(?:seen|viewed|looking) from (.+))?$",
            q,
        )
        if m:
            return self._direction(m.group(1), m.group(2), m.group(3))
        m = re.match(r"^how (tall|high|long|wide|big|large) is (.+)$", q)
        if m:
            return self._measure(m.group(1), m.group(2))
        m = re.match(r"^(?:what is|what's) the (height|length|width|volume|size|area) of (.+)$", q)
        if m:
            return self._measure(m.group(1), m.group(2))
        raise SpatialQueryError(
            f"could not understand '{question.strip()}' as a spatial question; ask about a distance, a count, "
            "a size, left/right, which is closer, the room size or camera motion between frames"
        )
