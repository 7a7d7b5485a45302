"""SPAR-style question generation from 3D ground truth (objects, room size, optional camera poses).

Every question is checked against the geometry that produced it before it is kept:

- ``grounding`` (ScanRefer sense): a plain description ("the brown chair next to the table") that
  resolves to exactly one object through :func:`scene_vlm_ros.core.referring.resolve`.
- ``multi_grounding`` (Multi3DRefer sense): a description with zero, one or several targets
  ("the red chairs", "any green sofa" when there is none); ``target_ids`` is the full match set.
- ``qa``: counting by label/colour ("How many chairs are in the room?" -> ``"3"``).
- ``spatial``: metric questions with exact answers: object-object distance, object-camera distance
  and depth order in a given frame, height/length, relative direction from a viewpoint, floor area,
  camera motion between two frames. Numbers are formatted by ``core.spatial.format_*`` (metres with
  2 decimals, degrees with 1) and also stored as ``value``.

Records: ``{"id", "task", "question", "answer", "target_ids", "frame_ids", "family", "value"}``.
Output is deterministic for a seed. The viewpoint of left/right is always explicit: "seen from
<object>" (viewer at that object's centre, looking horizontally toward the anchor) or "seen from
the camera" (the camera of ``frame_ids[0]``); see ``core/referring.py`` for the relation geometry.
Distractor-sensitive relations are kept only with margins (:data:`MIN_LATERAL_M`,
:data:`MIN_DISTANCE_MARGIN_M`, ...) so that small reconstruction errors do not flip the answer.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..core.colors import COLOR_PALETTE
from ..core.referring import (
    LEFT_RIGHT_MAX_DIST_M,
    LEFT_RIGHT_MIN_OFFSET_M,
    NEXT_TO_MAX_GAP_M,
    Candidate,
    candidates_from_objects,
    canonical_label,
    footprint_gap_m,
    is_between,
    is_next_to,
    is_on,
    lateral_offset_m,
    pluralize,
    relative_size,
    resolve,
)
from ..core.spatial import (
    camera_motion,
    depth_in_camera,
    distance_between,
    distance_to_point,
    format_area,
    format_degrees,
    format_metres,
    grounding_reply,
    height_of,
    length_of,
    multi_grounding_reply,
)
from ..core.types import CameraIntrinsics, GroundTruthObject

logger = logging.getLogger(__name__)

TASKS = ("grounding", "multi_grounding", "qa", "spatial")
RECORD_KEYS = ("id", "task", "question", "answer", "target_ids", "frame_ids", "family", "value")

#: Labels asked about in zero-target questions when the room has none of them.
VOCABULARY = (
    "chair", "table", "sofa", "bed", "lamp", "cabinet", "bookshelf", "tv", "plant", "trash can",
    "desk", "refrigerator", "nightstand", "door", "window", "monitor",
)  # fmt: skip

MIN_LATERAL_M = 0.4  # left/right: sideways offset kept at least this far from the dividing line
MIN_DISTANCE_MARGIN_M = 0.3  # closest/farthest: winner beats the runner-up by this much
MIN_DEPTH_GAP_M = 0.3  # depth order: the two depths differ by this much
MIN_VOLUME_RATIO = 1.2  # largest/smallest: winner's volume differs from the runner-up's by this factor
MIN_HEIGHT_GAP_M = 0.1  # tallest/shortest
THRESHOLD_MARGIN_M = 0.1  # distractors must sit this far from a relation's limit (next to, left/right)
MAX_CAMERA_FRAMES = 6  # frames (chosen by seed) used for camera questions


def _rec(task: str, question: str, answer: str, targets: Sequence[int], frames: Sequence[int], family: str,
         value: float | None) -> dict:  # fmt: skip
    return {
        "id": "", "task": task, "question": question, "answer": answer,
        "target_ids": [int(t) for t in targets], "frame_ids": [int(f) for f in frames], "family": family,
        "value": None if value is None else round(float(value), 4),
    }  # fmt: skip


class _Scene:
    """Candidates of one layout plus the naming helpers every family uses."""

    def __init__(self, objects: Sequence[GroundTruthObject]) -> None:
        self.cands: list[Candidate] = candidates_from_objects(objects)
        self.by_id = {c.cid: c for c in self.cands}
        self._ids: dict[tuple, list[int]] = {}
        self._names: dict[int, str | None] = {}

    def ids(self, description: str, viewer: np.ndarray | None = None) -> list[int]:
        key = (description, None if viewer is None else tuple(np.round(viewer, 9)))
        if key not in self._ids:
            self._ids[key] = [m.cid for m in resolve(description, self.cands, viewer)]
        return self._ids[key]

    def unique(self, description: str, target: int, viewer: np.ndarray | None = None) -> bool:
        return self.ids(description, viewer) == [target]

    def name(self, c: Candidate) -> str | None:
        """Shortest unique label/colour description of a candidate, else None."""
        if c.cid not in self._names:
            self._names[c.cid] = self._name(c)
        return self._names[c.cid]

    def _name(self, c: Candidate) -> str | None:
        for desc in (f"the {c.label}", f"the {c.color} {c.label}"):
            if (desc != f"the {c.label}" and c.color not in COLOR_PALETTE) or not c.label:
                continue
            if self.unique(desc, c.cid):
                return desc
        return None

    def same_label(self, c: Candidate) -> list[Candidate]:
        return [o for o in self.cands if o.label == c.label]


def _head(scene: _Scene, c: Candidate, rest: str, viewer: np.ndarray | None = None) -> str | None:
    """ "the <label> <rest>" if unique, else "the <colour> <label> <rest>" if unique, else None."""
    for desc in (f"the {c.label} {rest}", f"the {c.color} {c.label} {rest}"):
        if scene.unique(desc, c.cid, viewer):
            return desc
    return None


def _winner_with_margin(values: dict[int, float], largest: bool, margin: Callable[[float, float], bool]) -> int | None:
    order = sorted(values, key=lambda k: values[k], reverse=largest)
    if len(order) < 2 or not margin(values[order[0]], values[order[1]]):
        return None
    return order[0]


def _next_to_clear(scene: _Scene, label: str, anchor: Candidate) -> bool:
    """No object with this label has a gap to the anchor within THRESHOLD_MARGIN_M of the next-to limit."""
    for o in scene.cands:
        if o.label == label and o.cid != anchor.cid:
            if abs(footprint_gap_m(o.box, anchor.box) - NEXT_TO_MAX_GAP_M) < THRESHOLD_MARGIN_M:
                return False
    return True


def _left_right_clear(scene: _Scene, c: Candidate, anchor: Candidate, viewer: np.ndarray) -> bool:
    """No same-label object sits near the left/right limits (sideways offset, distance to the anchor)."""
    for o in scene.cands:
        if o.label != c.label or o.cid in (c.cid, anchor.cid):
            continue
        off = abs(lateral_offset_m(o.center, anchor.center, viewer))
        dist = float(np.linalg.norm(o.center[:2] - anchor.center[:2]))
        if (
            abs(off - LEFT_RIGHT_MIN_OFFSET_M) < THRESHOLD_MARGIN_M
            or abs(dist - LEFT_RIGHT_MAX_DIST_M) < THRESHOLD_MARGIN_M
        ):
            return False
    return True


def _grounding(scene: _Scene, cam: dict[int, np.ndarray]) -> list[dict]:
    out: list[dict] = []

    def add(desc: str | None, c: Candidate, family: str, frames: Sequence[int] = ()) -> None:
        if desc:
            out.append(_rec("grounding", desc, grounding_reply(c.cid), [c.cid], frames, family, None))

    for c in scene.cands:
        plain = f"the {c.label}"
        if scene.unique(plain, c.cid):
            add(plain, c, "category")
        elif c.color in COLOR_PALETTE and scene.unique(f"the {c.color} {c.label}", c.cid):
            add(f"the {c.color} {c.label}", c, "color")
        peers = scene.same_label(c)
        if len(peers) >= 2:
            vols = {p.cid: p.volume for p in peers}
            hts = {p.cid: p.height for p in peers}
            ratio = lambda a, b: max(a, b) >= MIN_VOLUME_RATIO * min(a, b)  # noqa: E731
            gap = lambda a, b: abs(a - b) >= MIN_HEIGHT_GAP_M  # noqa: E731
            for word, vals, largest, ok in (
                ("largest", vols, True, ratio), ("smallest", vols, False, ratio),
                ("tallest", hts, True, gap), ("shortest", hts, False, gap),
            ):  # fmt: skip
                if _winner_with_margin(vals, largest, ok) == c.cid:
                    add(f"the {word} {c.label}", c, "size_superlative")
            rel = relative_size(c, scene.cands)
            if rel and scene.unique(f"the {rel} {c.label}", c.cid):
                add(f"the {rel} {c.label}", c, "size_relative")
        for a in scene.cands:
            if a.cid == c.cid or (aname := scene.name(a)) is None:
                continue
            if is_next_to(c.box, a.box) and _next_to_clear(scene, c.label, a):
                add(_head(scene, c, f"next to {aname}"), c, "next_to")
            if is_on(c.box, a.box):
                add(_head(scene, c, f"on {aname}"), c, "on")
            if is_on(a.box, c.box):
                add(_head(scene, c, f"under {aname}"), c, "under")
            if len(peers) >= 2:
                dists = {p.cid: distance_between(p, a) for p in peers if p.cid != a.cid}
                for word, largest in (("closest to", False), ("farthest from", True)):
                    win = _winner_with_margin(dists, largest, lambda x, y: abs(x - y) >= MIN_DISTANCE_MARGIN_M)
                    if win == c.cid and scene.unique(f"the {c.label} {word} {aname}", c.cid):
                        add(f"the {c.label} {word} {aname}", c, "closest" if not largest else "farthest")
            if float(np.linalg.norm(c.center[:2] - a.center[:2])) <= LEFT_RIGHT_MAX_DIST_M - 0.3:
                for v in scene.cands:
                    if v.cid in (a.cid, c.cid) or (vname := scene.name(v)) is None:
                        continue
                    if np.linalg.norm(v.center[:2] - a.center[:2]) < 0.5:
                        continue
                    off = lateral_offset_m(c.center, a.center, v.center)
                    if abs(off) >= MIN_LATERAL_M and _left_right_clear(scene, c, a, v.center):
                        side = "left" if off > 0 else "right"
                        desc = _head(scene, c, f"to the {side} of {aname}, seen from {vname}")
                        if desc:
                            add(desc, c, "left_right")
                            break
                for f, T in cam.items():
                    viewer = T[:3, 3]
                    if np.linalg.norm(viewer[:2] - a.center[:2]) < 0.5:
                        continue
                    off = lateral_offset_m(c.center, a.center, viewer)
                    if abs(off) >= MIN_LATERAL_M and _left_right_clear(scene, c, a, viewer):
                        side = "left" if off > 0 else "right"
                        add(_head(scene, c, f"to the {side} of {aname}, seen from the camera", viewer), c,
                            "left_right_camera", [f])  # fmt: skip
                        break
        for a, b in itertools.combinations(scene.cands, 2):
            if c.cid in (a.cid, b.cid) or not is_between(c.box, a.box, b.box):
                continue
            an, bn = scene.name(a), scene.name(b)
            if an and bn:
                add(_head(scene, c, f"between {an} and {bn}"), c, "between")
        if len(peers) >= 2:
            for f, T in cam.items():
                dists = {p.cid: distance_to_point(p, T[:3, 3]) for p in peers}
                win = _winner_with_margin(dists, False, lambda x, y: abs(x - y) >= MIN_DISTANCE_MARGIN_M)
                if win == c.cid:
                    add(f"the {c.label} closest to the camera", c, "closest_camera", [f])
                    break
    return out


def _multi(scene: _Scene, rng: np.random.Generator) -> list[dict]:
    out: list[dict] = []

    def add(desc: str, family: str) -> None:
        ids = sorted(scene.ids(desc))
        answer = multi_grounding_reply(ids)
        out.append(_rec("multi_grounding", desc, answer, ids, (), family, float(len(ids))))

    labels = sorted({c.label for c in scene.cands if c.label})
    for label in labels:
        members = [c for c in scene.cands if c.label == label]
        if len(members) >= 2:
            add(f"the {pluralize(label)}", "category")
            for color in sorted({c.color for c in members if c.color in COLOR_PALETTE}):
                n = sum(c.color == color for c in members)
                if n < len(members):
                    add(f"the {color} {pluralize(label)}", "color")
        absent = sorted(set(COLOR_PALETTE) - {c.color for c in members})
        if absent:
            color = absent[int(rng.integers(len(absent)))]
            add(f"any {color} {label}", "zero_color")
        for a in scene.cands:
            aname = scene.name(a)
            if a.label == label or aname is None:
                continue
            if any(is_next_to(c.box, a.box) for c in members) and len(members) >= 2 and _next_to_clear(scene, label, a):
                add(f"the {pluralize(label)} next to {aname}", "next_to")
            if any(is_on(c.box, a.box) for c in members):
                add(f"the {pluralize(label)} on {aname}", "on")
    missing = [w for w in VOCABULARY if canonical_label(w) not in labels]  # "monitor" is a "tv"
    for w in [missing[i] for i in rng.permutation(len(missing))[:3]]:
        add(f"any {w}", "zero_category")
    return out


def _qa(scene: _Scene, rng: np.random.Generator) -> list[dict]:
    out = []
    labels = sorted({c.label for c in scene.cands if c.label})
    for label in labels:
        ids = sorted(scene.ids(f"the {pluralize(label)}"))
        out.append(_rec("qa", f"How many {pluralize(label)} are in the room?", str(len(ids)), ids, (), "count",
                        float(len(ids))))  # fmt: skip
        members = [c for c in scene.cands if c.label == label]
        for color in sorted({c.color for c in members if c.color in COLOR_PALETTE}):
            if len(members) >= 2:
                ids = sorted(scene.ids(f"the {color} {pluralize(label)}"))
                out.append(_rec("qa", f"How many {color} {pluralize(label)} are in the room?", str(len(ids)), ids,
                                (), "count_color", float(len(ids))))  # fmt: skip
    missing = [w for w in VOCABULARY if canonical_label(w) not in labels]  # "monitor" is a "tv"
    if missing:
        w = missing[int(rng.integers(len(missing)))]
        out.append(_rec("qa", f"How many {pluralize(w)} are in the room?", "0", [], (), "count", 0.0))
    return out


def _in_view(c: Candidate, T: np.ndarray, intrinsics: CameraIntrinsics | None) -> bool:
    depth = depth_in_camera(c, T)
    if depth <= 0.1:
        return False
    if intrinsics is None:
        return True
    p = np.linalg.inv(T) @ np.append(c.center, 1.0)
    u = intrinsics.fx * p[0] / p[2] + intrinsics.cx
    v = intrinsics.fy * p[1] / p[2] + intrinsics.cy
    return bool(0 <= u < intrinsics.width and 0 <= v < intrinsics.height)


def _spatial(
    scene: _Scene, room_size: tuple[float, float, float], cam: dict[int, np.ndarray],
    intrinsics: CameraIntrinsics | None, rng: np.random.Generator,
) -> list[dict]:  # fmt: skip
    out = []
    named = [(c, n) for c in scene.cands if (n := scene.name(c)) is not None]
    for (a, an), (b, bn) in itertools.combinations(named, 2):
        d = distance_between(a, b)
        out.append(_rec("spatial", f"What is the distance between {an} and {bn}?", format_metres(d), [a.cid, b.cid],
                        (), "distance", d))  # fmt: skip
    for c, n in named:
        out.append(_rec("spatial", f"How tall is {n}?", format_metres(height_of(c)), [c.cid], (), "height",
                        height_of(c)))  # fmt: skip
        out.append(_rec("spatial", f"How long is {n}?", format_metres(length_of(c)), [c.cid], (), "length",
                        length_of(c)))  # fmt: skip
    for (a, an), (b, bn) in itertools.permutations(named, 2):
        for v, vn in named:
            if v.cid in (a.cid, b.cid) or np.linalg.norm(v.center[:2] - b.center[:2]) < 0.5:
                continue
            off = lateral_offset_m(a.center, b.center, v.center)
            if abs(off) >= MIN_LATERAL_M:
                out.append(
                    _rec(
                        "spatial",
                        f"Is {an} to the left or right of {bn}, seen from {vn}?",
                        "left" if off > 0 else "right",
                        [a.cid, b.cid, v.cid],
                        (),
                        "direction",
                        None,
                    )
                )
                break
    area = float(room_size[0]) * float(room_size[1])
    out.append(_rec("spatial", "What is the floor area of the room?", format_area(area), [], (), "room_area", area))
    frames = sorted(cam)
    for f in frames:
        T = cam[f]
        visible = [(c, n) for c, n in named if _in_view(c, T, intrinsics)]
        for c, n in visible:
            d = distance_to_point(c, T[:3, 3])
            out.append(_rec("spatial", f"How far is {n} from the camera?", format_metres(d), [c.cid], [f],
                            "distance_camera", d))  # fmt: skip
        for (a, an), (b, bn) in itertools.combinations(visible, 2):
            da, db = depth_in_camera(a, T), depth_in_camera(b, T)
            ea, eb = distance_to_point(a, T[:3, 3]), distance_to_point(b, T[:3, 3])
            if abs(da - db) < MIN_DEPTH_GAP_M or (da < db) != (ea < eb):
                continue  # depth and distance disagree or are too close: "closer" would be ambiguous
            if rng.random() < 0.5:
                (a, an, da), (b, bn, db) = (b, bn, db), (a, an, da)
            win, wn = (a, an) if da < db else (b, bn)
            out.append(_rec("spatial", f"Which is closer to the camera, {an} or {bn}?", wn,
                            [win.cid, (b if win is a else a).cid], [f], "depth_order", min(da, db)))  # fmt: skip
        for (a, an), (b, bn) in itertools.permutations(visible, 2):
            if np.linalg.norm(T[:2, 3] - b.center[:2]) < 0.5:
                continue
            off = lateral_offset_m(a.center, b.center, T[:3, 3])
            if abs(off) >= MIN_LATERAL_M:
                out.append(
                    _rec(
                        "spatial",
                        f"Is {an} to the left or right of {bn}, seen from the camera?",
                        "left" if off > 0 else "right",
                        [a.cid, b.cid],
                        [f],
                        "direction_camera",
                        None,
                    )
                )
    for i, j in zip(frames, frames[1:]):
        dist, ang = camera_motion(cam[i], cam[j])
        out.append(_rec("spatial", f"How far did the camera move between frame {i} and frame {j}?",
                        format_metres(dist), [], [i, j], "camera_move", dist))  # fmt: skip
        out.append(_rec("spatial", f"How many degrees did the camera turn between frame {i} and frame {j}?",
                        format_degrees(ang), [], [i, j], "camera_turn", ang))  # fmt: skip
    return out


def _select(records: list[dict], rng: np.random.Generator, max_n: int) -> list[dict]:
    """Up to ``max_n`` records, families interleaved round-robin (each shuffled) for variety."""
    seen: set[tuple[str, str, tuple[int, ...]]] = set()
    families: dict[str, list[dict]] = {}
    for r in records:
        key = (r["question"], r["answer"], tuple(r["frame_ids"]))
        if key in seen:
            continue
        seen.add(key)
        families.setdefault(r["family"], []).append(r)
    queues = [[fam[i] for i in rng.permutation(len(fam))] for fam in families.values()]
    queues = [queues[i] for i in rng.permutation(len(queues))]
    out: list[dict] = []
    while len(out) < max_n and any(queues):
        for q in queues:
            if q and len(out) < max_n:
                out.append(q.pop(0))
    return out


def generate_questions(
    objects: list[GroundTruthObject],
    room_size: tuple[float, float, float],
    camera_poses: dict[int, np.ndarray] | None = None,
    intrinsics: CameraIntrinsics | None = None,
    seed: int = 0,
    max_per_task: int = 20,
) -> list[dict]:
    """Verified questions of the four tasks for one scene (see the module docstring for the record).

    ``objects`` are world-frame ground-truth boxes (unique ``object_id``); ``room_size`` is the
    room's (x, y, z) extent in m (floor area = x * y); ``camera_poses`` maps frame index ->
    ``T_world_camera`` (4x4, optical frame) and enables the camera families; ``intrinsics`` (when
    given) restricts camera questions to objects whose centre projects into the image. At most
    ``max_per_task`` records per task; the same inputs and seed give the same list.
    """
    objects = list(objects)
    if not all(isinstance(o, GroundTruthObject) for o in objects):
        raise TypeError("objects must be GroundTruthObject instances (see core/types.py)")
    ids = [o.object_id for o in objects]
    if len(set(ids)) != len(ids):
        raise ValueError(f"object_id values must be unique, got duplicates in {sorted(ids)}")
    if len(room_size) != 3 or not all(np.isfinite(v) and v > 0 for v in room_size):
        raise ValueError(f"room_size must be three positive extents in metres (x, y, z), got {room_size!r}")
    if max_per_task < 0:
        raise ValueError(f"max_per_task must be >= 0, got {max_per_task}")
    cam: dict[int, np.ndarray] = {}
    for k, T in (camera_poses or {}).items():
        T = np.asarray(T, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError(f"camera pose of frame {k} must be a finite 4x4 T_world_camera, got shape {T.shape}")
        cam[int(k)] = T
    rng = np.random.default_rng(seed)
    if len(cam) > MAX_CAMERA_FRAMES:
        keep = sorted(rng.choice(sorted(cam), size=MAX_CAMERA_FRAMES, replace=False).tolist())
        cam = {k: cam[k] for k in keep}
    scene = _Scene(objects)
    pools = {
        "grounding": _grounding(scene, cam),
        "multi_grounding": _multi(scene, rng),
        "qa": _qa(scene, rng),
        "spatial": _spatial(scene, room_size, cam, intrinsics, rng),
    }
    records: list[dict] = []
    for task in TASKS:
        for k, r in enumerate(_select(pools[task], rng, max_per_task)):
            r["id"] = f"{task}-{seed}-{k:03d}"
            records.append(r)
    logger.debug("generated %d questions (%s)", len(records), {t: len(p) for t, p in pools.items()})
    return records


def write_questions(records: Sequence[dict], path: str | Path) -> Path:
    """Write records as a JSON list (conventionally ``<scene>.queries.json``); returns the path."""
    path = Path(path)
    for r in records:
        missing = [k for k in RECORD_KEYS if k not in r]
        if missing:
            raise ValueError(f"question record {r.get('id', '?')} lacks keys {missing}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(records), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_questions(path: str | Path) -> list[dict]:
    """Read a ``.queries.json`` written by :func:`write_questions` (ValueError when malformed)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"question file not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, list):
        raise ValueError(f"{path} must hold a JSON list of question records")
    for r in data:
        if not isinstance(r, dict) or any(k not in r for k in RECORD_KEYS):
            raise ValueError(f"{path}: record {r!r:.80} lacks some of {RECORD_KEYS}")
        if r["task"] not in TASKS:
            raise ValueError(f"{path}: record {r['id']} has unknown task {r['task']!r}; expected one of {TASKS}")
    return data
