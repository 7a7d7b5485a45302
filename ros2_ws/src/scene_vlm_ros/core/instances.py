"""Object instances with persistent integer IDs, built from per-view observations.

An *observation* is a set of world points (N, 3) (metres, z up) believed to be one object, with an
optional label/score, from one of three sources:
- ``mask``: an upstream instance mask (pixel = upstream id) lifted with depth; the upstream id
  is remembered per instance, so re-observations associate directly;
- ``detector``: a 2D detection lifted with depth (:func:`detector.lift_detection`);
- ``geometry``: a segment of the fused map (:mod:`segmentation`), re-run as the map grows.

Association of an observation to an existing instance uses 3D overlap (share of the observation's
voxels already in the instance), centroid distance and label agreement. Instances keep their ID
for life; merges, splits and removals are recorded in an event log with stamps, never silent.

Each instance stores its points as a sparse voxel set (``voxel_m`` grid): per voxel the summed
position and colour and a hit count, so the memory per instance is bounded and a box can ignore
voxels seen only once (depth edge noise) once the object has been seen enough.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import cv2
import numpy as np

from .types import Instance, OrientedBox3D

if TYPE_CHECKING:
    from .labeling import SegmentLabel as SegmentVotes

logger = logging.getLogger(__name__)

_OFFSET = np.int64(1 << 20)


def voxel_keys(points: np.ndarray, voxel_m: float) -> np.ndarray:
    """Packed int64 keys (N,) of the ``voxel_m`` cells holding (N, 3) points (21 bits per axis)."""
    ijk = np.floor(np.asarray(points, dtype=np.float64) / voxel_m).astype(np.int64) + _OFFSET
    return (ijk[:, 0] << 42) | (ijk[:, 1] << 21) | ijk[:, 2]


def coarse_keys(keys: np.ndarray) -> np.ndarray:
    """Keys of the 2x coarser cells holding the cells ``keys`` (unique, sorted).

    Overlap is measured on this coarser grid: two views of one surface sample slightly different
    fine cells (quantisation, depth noise), but almost always the same coarse ones.
    """
    mask = np.int64((1 << 21) - 1)
    i = ((keys >> 42) & mask) - _OFFSET
    j = ((keys >> 21) & mask) - _OFFSET
    k = (keys & mask) - _OFFSET
    return np.unique((((i >> 1) + _OFFSET) << 42) | (((j >> 1) + _OFFSET) << 21) | ((k >> 1) + _OFFSET))


@dataclass(frozen=True)
class InstanceParams:
    """See ``MemoryConfig.inst_*``."""

    voxel_m: float = 0.03
    max_voxels: int = 20000
    min_points: int = 30
    assoc_min_overlap: float = 0.15
    assoc_max_centroid_m: float = 0.5
    merge_overlap: float = 0.6
    noise_min_observations: int = 3
    geometry_miss_limit: int = 2


@dataclass
class Observation:
    """One view of one object: world points (N, 3) float32, colours (N, 3) uint8, label/score, source.

    ``upstream_id``: the id of an upstream instance mask (``mask`` source), else ``None``.
    """

    points: np.ndarray
    colors: np.ndarray
    label: str = ""
    score: float = 0.0
    source: str = "geometry"
    stamp_s: float = 0.0
    upstream_id: Optional[int] = None


@dataclass
class _Track:
    instance_id: int
    source: str
    first_seen_s: float
    last_seen_s: float
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    sum_xyz: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    sum_rgb: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    hits: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    n_observations: int = 0
    label_scores: Counter = field(default_factory=Counter)
    label_counts: Counter = field(default_factory=Counter)
    upstream_ids: set = field(default_factory=set)
    misses: int = 0
    geometry_shape: bool = False
    # Label decided by detector evidence on a geometry segment (labeling.label_segments), with
    # every label's summed votes in label_scores / label_counts; label_history lists the changes.
    voted_label: Optional[tuple[str, float]] = None
    label_history: list = field(default_factory=list)
    best_keyframe_ids: tuple[int, ...] = ()
    cache: Optional[Instance] = None
    _coarse: Optional[np.ndarray] = None
    _bounds: Optional[tuple[np.ndarray, np.ndarray]] = None

    def coarse(self) -> np.ndarray:
        """Coarse-grid keys of the track (cached until its points change)."""
        if self._coarse is None:
            self._coarse = coarse_keys(self.keys)
        return self._coarse

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned (min, max) of the voxel centres (cached until its points change)."""
        if self._bounds is None:
            c = self.sum_xyz / np.maximum(self.hits, 1)[:, None]
            self._bounds = (c.min(axis=0), c.max(axis=0)) if len(c) else (np.zeros(3), np.zeros(3))
        return self._bounds

    def add_points(self, keys: np.ndarray, pts: np.ndarray, rgb: np.ndarray, max_voxels: int) -> None:
        """Accumulate voxelised points; keeps the ``max_voxels`` most-hit voxels."""
        all_keys = np.concatenate([self.keys, keys])
        uniq, inv = np.unique(all_keys, return_inverse=True)
        n = len(uniq)
        add_xyz = np.concatenate([self.sum_xyz, pts.astype(np.float64)])
        add_rgb = np.concatenate([self.sum_rgb, rgb.astype(np.float64)])
        add_hits = np.concatenate([self.hits, np.ones(len(keys), np.int64)])
        self.sum_xyz = np.stack([np.bincount(inv, add_xyz[:, i], n) for i in range(3)], axis=1)
        self.sum_rgb = np.stack([np.bincount(inv, add_rgb[:, i], n) for i in range(3)], axis=1)
        self.hits = np.bincount(inv, add_hits, n).astype(np.int64)
        self.keys = uniq
        if n > max_voxels:
            keep = np.sort(np.argsort(-self.hits, kind="stable")[:max_voxels])
            self.keys, self.sum_xyz, self.sum_rgb, self.hits = (
                self.keys[keep],
                self.sum_xyz[keep],
                self.sum_rgb[keep],
                self.hits[keep],
            )
        self.cache = None
        self._coarse = None
        self._bounds = None

    def set_points(self, keys: np.ndarray, pts: np.ndarray, rgb: np.ndarray, max_voxels: int) -> None:
        """Replace the point set (geometry source: the fused map's segment is the whole truth)."""
        self.keys = np.zeros(0, np.int64)
        self.sum_xyz = np.zeros((0, 3))
        self.sum_rgb = np.zeros((0, 3))
        self.hits = np.zeros(0, np.int64)
        self.add_points(keys, pts, rgb, max_voxels)

    def label(self) -> tuple[str, float]:
        """Most supported label (by summed score) and its mean score; ``("", 0)`` when unlabelled."""
        if self.voted_label is not None:
            return self.voted_label
        if not self.label_scores:
            return "", 0.0
        label, total = self.label_scores.most_common(1)[0]
        return label, float(total) / max(1, self.label_counts[label])

    def points(self, min_hits: int = 1) -> tuple[np.ndarray, np.ndarray]:
        keep = self.hits >= min_hits
        if keep.sum() < 4:
            keep = np.ones(len(self.hits), dtype=bool)
        h = self.hits[keep][:, None].astype(np.float64)
        return (self.sum_xyz[keep] / h).astype(np.float32), np.clip(self.sum_rgb[keep] / h, 0, 255).astype(np.uint8)


def oriented_box(points: np.ndarray, axis_aligned_slack: float = 0.15) -> OrientedBox3D:
    """Gravity-aligned box of (N, 3) world points: min-area rectangle of the xy footprint, z span.

    When the axis-aligned footprint is at most ``axis_aligned_slack`` (share) larger than the
    min-area one, yaw 0 is kept instead: furniture mostly stands square to the room, and a partial
    view (one face plus noise) otherwise tilts the min-area rectangle arbitrarily.
    """
    pts = np.asarray(points, dtype=np.float64)
    z0, z1 = float(pts[:, 2].min()), float(pts[:, 2].max())
    lo, hi = pts[:, :2].min(axis=0), pts[:, :2].max(axis=0)
    aabb_box = OrientedBox3D(
        (float((lo[0] + hi[0]) / 2), float((lo[1] + hi[1]) / 2), (z0 + z1) / 2),
        (float(hi[0] - lo[0]), float(hi[1] - lo[1]), z1 - z0),
        0.0,
    )
    if len(pts) < 3:
        return aabb_box
    (cx, cy), (w, h), angle_deg = cv2.minAreaRect(pts[:, :2].astype(np.float32))
    if (hi[0] - lo[0]) * (hi[1] - lo[1]) <= (1.0 + axis_aligned_slack) * w * h:
        return aabb_box
    yaw = float(np.radians(angle_deg))
    # Normalise yaw into [-pi/4, pi/4) by swapping extents, so equal boxes give equal numbers.
    while yaw >= np.pi / 4:
        yaw -= np.pi / 2
        w, h = h, w
    while yaw < -np.pi / 4:
        yaw += np.pi / 2
        w, h = h, w
    return OrientedBox3D((float(cx), float(cy), (z0 + z1) / 2), (float(w), float(h), z1 - z0), yaw)


class InstanceMap:
    """The set of object instances and their event log (not thread-safe; the memory locks it)."""

    def __init__(self, params: InstanceParams) -> None:
        self.params = params
        self._tracks: dict[int, _Track] = {}
        self._next_id = 1
        self._upstream: dict[int, int] = {}
        self.events: list[dict] = []
        self._events_view: tuple[dict, ...] = ()

    def events_view(self) -> tuple[dict, ...]:
        """Read-only view of the (append-only) event log, rebuilt only when events were added, so
        that taking a snapshot does not copy the whole history every time."""
        if len(self._events_view) != len(self.events):
            self._events_view = tuple(self.events)
        return self._events_view

    def __len__(self) -> int:
        return len(self._tracks)

    @property
    def next_id(self) -> int:
        return self._next_id

    def _new_track(self, source: str, stamp_s: float) -> _Track:
        tr = _Track(self._next_id, source, stamp_s, stamp_s)
        self._tracks[tr.instance_id] = tr
        self._next_id += 1
        return tr

    def _log(self, kind: str, stamp_s: float, **kw: object) -> None:
        ev = {"type": kind, "stamp_s": float(stamp_s), **kw}
        self.events.append(ev)
        # Creations are routine (debug); merges, splits and removals change IDs users may hold (info).
        logger.log(logging.DEBUG if kind == "create" else logging.INFO, "instance event: %s", ev)

    @staticmethod
    def _overlap(keys: np.ndarray, track: _Track | _KeySet) -> float:
        """Share (0-1) of the cells of ``keys`` that ``track`` occupies, on the coarse grid."""
        if len(keys) == 0 or len(track.keys) == 0:
            return 0.0
        other = track.coarse() if isinstance(track, _Track) else coarse_keys(track.keys)
        return float(np.isin(coarse_keys(keys), other, assume_unique=True).mean())

    def _associate(self, obs: Observation, keys: np.ndarray) -> Optional[_Track]:
        p = self.params
        centroid = obs.points.mean(axis=0)
        best, best_score = None, 0.0
        for tr in self._tracks.values():
            if obs.source == "mask" and tr.upstream_ids and obs.upstream_id not in tr.upstream_ids:
                # Upstream segmenter says these are different objects: trust it.
                continue
            overlap = self._overlap(keys, tr)
            tr_label, _ = tr.label()
            if obs.label and tr_label and obs.label != tr_label and overlap < 0.5:
                continue
            score = overlap
            if overlap < p.assoc_min_overlap:
                tr_centroid = tr.sum_xyz.sum(axis=0) / max(1, tr.hits.sum())
                dist = float(np.linalg.norm(tr_centroid - centroid))
                if dist > p.assoc_max_centroid_m or not (obs.label and obs.label == tr_label):
                    continue
                score = 0.5 * p.assoc_min_overlap * (1.0 - dist / p.assoc_max_centroid_m)
            if score > best_score:
                best, best_score = tr, score
        return best

    def observe(self, obs: Observation) -> Optional[int]:
        """Fuse one observation into the map; returns the instance ID it went to (None if too small)."""
        if len(obs.points) < self.params.min_points:
            return None
        keys = voxel_keys(obs.points, self.params.voxel_m)
        track: Optional[_Track] = None
        if obs.upstream_id is not None and obs.upstream_id in self._upstream:
            track = self._tracks.get(self._upstream[obs.upstream_id])
        if track is None:
            track = self._associate(obs, keys)
        if track is None:
            track = self._new_track(obs.source, obs.stamp_s)
            self._log("create", obs.stamp_s, instance_id=track.instance_id, source=obs.source, label=obs.label)
        if obs.upstream_id is not None:
            self._upstream[obs.upstream_id] = track.instance_id
            track.upstream_ids.add(obs.upstream_id)
        track.add_points(keys, obs.points, obs.colors, self.params.max_voxels)
        track.n_observations += 1
        track.last_seen_s = max(track.last_seen_s, obs.stamp_s)
        track.first_seen_s = min(track.first_seen_s, obs.stamp_s)
        if obs.label:
            track.label_scores[obs.label] += float(obs.score)
            track.label_counts[obs.label] += 1
        # A semantic source outranks geometry once it has seen the object.
        if track.source == "geometry" and obs.source != "geometry":
            track.source = obs.source
        return track.instance_id

    def merge_overlapping(self, stamp_s: float) -> list[tuple[int, int]]:
        """Merge pairs whose smaller member lies mostly (``merge_overlap``) inside the other.

        The older (smaller) ID survives; returns ``[(kept, absorbed), ...]`` and logs each merge.
        """
        merged: list[tuple[int, int]] = []
        ids = sorted(self._tracks)
        for i, a in enumerate(ids):
            if a not in self._tracks:
                continue
            for b in ids[i + 1 :]:
                if b not in self._tracks or a not in self._tracks:
                    continue
                ta, tb = self._tracks[a], self._tracks[b]
                if ta.upstream_ids and tb.upstream_ids:
                    continue
                la, lb = ta.label()[0], tb.label()[0]
                if la and lb and la != lb:
                    continue
                (alo, ahi), (blo, bhi) = ta.bounds(), tb.bounds()
                if np.any(alo > bhi + 2 * self.params.voxel_m) or np.any(blo > ahi + 2 * self.params.voxel_m):
                    continue  # disjoint boxes cannot share cells: skip the costly overlap
                small, big = (ta, tb) if len(ta.keys) <= len(tb.keys) else (tb, ta)
                if np.isin(small.coarse(), big.coarse(), assume_unique=True).mean() < self.params.merge_overlap:
                    continue
                self._absorb(ta, tb)
                merged.append((a, b))
                self._log("merge", stamp_s, kept=a, absorbed=b)
        return merged

    def _absorb(self, keep: _Track, gone: _Track) -> None:
        h = gone.hits[:, None].astype(np.float64)
        keep.add_points(gone.keys, gone.sum_xyz / h, gone.sum_rgb / h, self.params.max_voxels)
        keep.n_observations += gone.n_observations
        keep.first_seen_s = min(keep.first_seen_s, gone.first_seen_s)
        keep.last_seen_s = max(keep.last_seen_s, gone.last_seen_s)
        keep.label_scores.update(gone.label_scores)
        keep.label_counts.update(gone.label_counts)
        keep.upstream_ids |= gone.upstream_ids
        for up in gone.upstream_ids:
            self._upstream[up] = keep.instance_id
        del self._tracks[gone.instance_id]

    def update_geometry(self, segments: list[tuple[np.ndarray, np.ndarray]], stamp_s: float,
                        votes: Optional[list[SegmentVotes]] = None) -> None:
        """Reconcile geometric segments of the whole map with the geometry instances.

        ``segments``: ``[(points (N, 3), colors (N, 3)), ...]``; ``votes``: the detector labels voted
        for each segment (:func:`labeling.label_segments`), which the matched instance takes. A
        segment mostly covered by a mask/detector instance is skipped (that source has it). Each
        remaining segment goes to the geometry instance it overlaps most; when two segments claim
        one instance the larger keeps the ID and the other is a ``split``; when one segment covers
        several instances they are ``merge``d into the oldest. Geometry instances matched by no
        segment for ``geometry_miss_limit`` refreshes are ``removed``.
        """
        p = self.params
        sem = [t for t in self._tracks.values() if t.source != "geometry"]
        # A geometry instance that a mask/detector instance now covers is that object: fold it in.
        for i, t in list(self._tracks.items()):
            if t.source != "geometry":
                continue
            owner = max(sem, key=lambda s: self._overlap(t.keys, s), default=None)
            if owner is not None and self._overlap(t.keys, owner) > 0.3:
                del self._tracks[i]
                self._log("merge", stamp_s, kept=owner.instance_id, absorbed=i, source="geometry")
        geo = {i: t for i, t in self._tracks.items() if t.source == "geometry"}
        claims: dict[int, list[tuple[float, int]]] = {}
        seg_keys = []
        refined: set[int] = set()
        for si, (pts, cols) in enumerate(segments):
            keys = voxel_keys(pts, p.voxel_m)
            seg_keys.append(keys)
            cover = [(max(self._overlap(keys, t), self._overlap(t.keys, _KeySet(keys))), t) for t in sem]
            covered = [(ov, t) for ov, t in cover if ov > 0.3]
            if covered:
                seg_keys[-1] = None
                ov, owner = max(covered, key=lambda c: c[0])
                # A detector instance is a box lifted with depth: the segment is its better shape
                # (the label stays). Mask instances are already pixel-exact and keep their points.
                if owner.source == "detector" and owner.instance_id not in refined:
                    owner.set_points(keys, pts, cols, p.max_voxels)
                    owner.geometry_shape = True
                    refined.add(owner.instance_id)
                continue
            overlaps = sorted(((self._overlap(t.keys, _KeySet(keys)), i) for i, t in geo.items()), reverse=True)
            hits = [i for ov, i in overlaps if ov >= p.assoc_min_overlap]
            seg_label = votes[si].label if votes is not None else ""
            if seg_label:
                # A named segment goes to the instance of its own name when it overlaps one, and
                # never merges instances named otherwise (a cup carved out of a table shares
                # cells with the table's instance but is not the table).
                same = [i for i in hits if self._tracks[i].label()[0] in ("", seg_label)]
                hits = same or hits[:1]
            if len(hits) > 1:
                kept = min(hits)
                for other in hits:
                    if other != kept and other in self._tracks:
                        del self._tracks[other]
                        geo.pop(other, None)
                        self._log("merge", stamp_s, kept=kept, absorbed=other, source="geometry")
                hits = [kept]
            if hits:
                claims.setdefault(hits[0], []).append((float(len(pts)), si))
            else:
                claims.setdefault(-1 - si, []).append((float(len(pts)), si))
        matched: set[int] = set()
        for target, segs in claims.items():
            segs.sort(reverse=True)
            for rank, (_, si) in enumerate(segs):
                pts, cols = segments[si]
                keys = seg_keys[si]
                if target >= 0 and rank == 0 and target in self._tracks:
                    tr = self._tracks[target]
                else:
                    tr = self._new_track("geometry", stamp_s)
                    if target >= 0:
                        self._log("split", stamp_s, parent=target, child=tr.instance_id, source="geometry")
                    else:
                        self._log("create", stamp_s, instance_id=tr.instance_id, source="geometry", label="")
                tr.set_points(keys, pts, cols, p.max_voxels)
                tr.n_observations += 1
                tr.last_seen_s = stamp_s
                tr.misses = 0
                self._set_votes(tr, votes[si] if votes is not None else None, stamp_s)
                matched.add(tr.instance_id)
        for i, tr in list(geo.items()):
            if i in matched or i not in self._tracks:
                continue
            tr.misses += 1
            if tr.misses >= p.geometry_miss_limit:
                del self._tracks[i]
                self._log("removed", stamp_s, instance_id=i, source="geometry")

    def _set_votes(self, tr: _Track, votes: Optional[SegmentVotes], stamp_s: float) -> None:
        """Give a geometry track the labels voted for its segment; log a ``label`` event on change."""
        if votes is None:
            return
        before = tr.label()[0]
        tr.label_scores = Counter(votes.votes)
        tr.label_counts = Counter(votes.counts)
        tr.voted_label = (votes.label, float(votes.score))
        if votes.label != before:
            tr.label_history.append({"stamp_s": float(stamp_s), "label": votes.label, "score": float(votes.score)})
            self._log("label", stamp_s, instance_id=tr.instance_id, label=votes.label, previous=before,
                      score=round(float(votes.score), 3))
        tr.cache = None

    def label_info(self, instance_id: int) -> dict:
        """Votes per label (``{label: summed vote}``), views per label and the label history of one
        instance (``[{stamp_s, label, score}, ...]``, oldest first); KeyError for an unknown ID."""
        tr = self._tracks[instance_id]
        return {"label": tr.label()[0], "score": tr.label()[1], "votes": dict(tr.label_scores),
                "counts": dict(tr.label_counts), "history": list(tr.label_history)}

    def nbytes(self) -> int:
        """Bytes held by the instances' voxel arrays."""
        return sum(t.keys.nbytes + t.sum_xyz.nbytes + t.sum_rgb.nbytes + t.hits.nbytes for t in self._tracks.values())

    def set_best_keyframes(self, instance_id: int, keyframe_ids: tuple[int, ...]) -> None:
        tr = self._tracks.get(instance_id)
        if tr is not None and tr.best_keyframe_ids != keyframe_ids:
            tr.best_keyframe_ids = keyframe_ids
            tr.cache = None

    def track_points(self) -> dict[int, np.ndarray]:
        """Centre-of-voxel points (N, 3) of every instance, by ID (for keyframe ranking)."""
        return {i: t.points()[0] for i, t in self._tracks.items()}

    def instances(self) -> tuple[Instance, ...]:
        """Immutable :class:`Instance` views, by ascending ID (cached per instance until it changes)."""
        out = []
        for i in sorted(self._tracks):
            tr = self._tracks[i]
            if tr.cache is None:
                # Hit counts mean "seen in several views" only for accumulated sources; a geometry
                # instance's points are one segment of the fused map (already multi-view filtered).
                accumulated = tr.source != "geometry" and not tr.geometry_shape
                min_hits = 2 if accumulated and tr.n_observations >= self.params.noise_min_observations else 1
                pts, cols = tr.points(min_hits)
                box = oriented_box(pts)
                label, score = tr.label()
                tr.cache = Instance(
                    instance_id=i,
                    label=label,
                    score=score,
                    box=box,
                    aabb_min=pts.min(axis=0),
                    aabb_max=pts.max(axis=0),
                    points=pts,
                    colors=cols,
                    n_observations=tr.n_observations,
                    first_seen_s=tr.first_seen_s,
                    last_seen_s=tr.last_seen_s,
                    best_keyframe_ids=tr.best_keyframe_ids,
                    # A geometry segment named by detector votes reports the detector as its source.
                    source="detector" if tr.source == "geometry" and label else tr.source,
                )
            out.append(tr.cache)
        return tuple(out)

    # --- persistence -----------------------------------------------------------------------
    def to_arrays(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-able metadata, arrays by name) of the whole map, for ``SceneMemory.save``."""
        meta = {"next_id": self._next_id, "upstream": {str(k): v for k, v in self._upstream.items()},
                "events": self.events, "tracks": []}
        arrays: dict[str, np.ndarray] = {}
        for i, tr in self._tracks.items():
            meta["tracks"].append({
                "instance_id": i, "source": tr.source, "first_seen_s": tr.first_seen_s,
                "last_seen_s": tr.last_seen_s, "n_observations": tr.n_observations,
                "label_scores": dict(tr.label_scores), "label_counts": dict(tr.label_counts),
                "upstream_ids": sorted(int(u) for u in tr.upstream_ids), "misses": tr.misses,
                "geometry_shape": tr.geometry_shape,
                "voted_label": None if tr.voted_label is None else list(tr.voted_label),
                "label_history": tr.label_history,
                "best_keyframe_ids": list(tr.best_keyframe_ids),
            })
            arrays[f"keys_{i}"] = tr.keys
            arrays[f"xyz_{i}"] = tr.sum_xyz
            arrays[f"rgb_{i}"] = tr.sum_rgb
            arrays[f"hits_{i}"] = tr.hits
        return meta, arrays

    @classmethod
    def from_arrays(cls, params: InstanceParams, meta: dict, arrays: dict[str, np.ndarray]) -> InstanceMap:
        m = cls(params)
        m._next_id = int(meta["next_id"])
        m._upstream = {int(k): int(v) for k, v in meta["upstream"].items()}
        m.events = list(meta["events"])
        for t in meta["tracks"]:
            i = int(t["instance_id"])
            tr = _Track(i, t["source"], float(t["first_seen_s"]), float(t["last_seen_s"]))
            tr.keys = arrays[f"keys_{i}"].astype(np.int64)
            tr.sum_xyz = arrays[f"xyz_{i}"].astype(np.float64)
            tr.sum_rgb = arrays[f"rgb_{i}"].astype(np.float64)
            tr.hits = arrays[f"hits_{i}"].astype(np.int64)
            tr.n_observations = int(t["n_observations"])
            tr.label_scores = Counter({k: float(v) for k, v in t["label_scores"].items()})
            tr.label_counts = Counter({k: int(v) for k, v in t["label_counts"].items()})
            tr.upstream_ids = set(int(u) for u in t["upstream_ids"])
            tr.misses = int(t["misses"])
            tr.geometry_shape = bool(t.get("geometry_shape", False))
            if t.get("voted_label") is not None:
                tr.voted_label = (str(t["voted_label"][0]), float(t["voted_label"][1]))
            tr.label_history = list(t.get("label_history", []))
            tr.best_keyframe_ids = tuple(int(k) for k in t["best_keyframe_ids"])
            m._tracks[i] = tr
        return m


class _KeySet:
    """Adapter so ``InstanceMap._overlap(keys, other)`` can test against a bare key array."""

    def __init__(self, keys: np.ndarray) -> None:
        self.keys = keys
