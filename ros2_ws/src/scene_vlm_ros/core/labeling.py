"""Names for geometric segments from 2D detections: evidence, association, voting, carve-outs.

A keyframe's detections are lifted with the depth inside their boxes (:func:`detector.lift_detection`,
with a depth band that fits the class's size) and kept as :class:`LabelEvidence`: label, detector
confidence, the lifted world points. On every map refresh the whole evidence is matched against
the new geometric segments (world points (N, 3), metres, z up):

1. **Association by 3D overlap.** A piece of evidence goes to the segment that holds the largest
   share of its points (on the :func:`instances.coarse_keys` grid), not to the one nearest its
   box centre; below ``min_overlap`` it goes nowhere.
2. **Size agreement.** Each COCO class has a plausible horizontal extent (:data:`CLASS_EXTENT_M`).
   Evidence votes for its segment only when the segment's extent fits its class: a cup whose box
   also covers the table under it overlaps the table segment most, but a 2 m segment cannot be a
   cup, so the cup never names the table.
3. **Carve-outs.** Evidence that lands on a segment too large for its class (a cup, a book, a
   chair that geometry merged into the table or its neighbours) is grouped with the other views of
   the same object (same label, overlapping points), and the group becomes its own segment: for
   objects standing on a surface, its points above that surface; for furniture, the segment's
   points inside the group's region. The carved points leave the parent segment.
4. **Orphans.** Confident evidence that lands on no segment (an object seen in too few frames for
   the fused map to keep its surface) becomes a segment of its own, from its lifted points.
5. **Voting.** Each segment's label is the label with the largest summed vote (confidence x overlap
   share), over all views; a segment with votes below ``min_vote`` stays unlabelled ("").

Everything here is a pure function of (segments, evidence), so a refresh re-derives labels from
the full evidence and the result does not depend on the order frames arrived in.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from .instances import coarse_keys, voxel_keys
from .referring import canonical_label

logger = logging.getLogger(__name__)

#: Plausible largest horizontal extent (m) of an object of each canonical class: (min, max).
#: Rough furniture/household dimensions; ``min`` allows for partial views.
CLASS_EXTENT_M: dict[str, tuple[float, float]] = {
    "table": (0.5, 3.0),
    "sofa": (0.8, 3.0),
    "bed": (1.0, 2.6),
    "bench": (0.6, 2.5),
    "chair": (0.3, 1.0),
    "toilet": (0.3, 0.9),
    "tv": (0.3, 1.8),
    "refrigerator": (0.5, 1.2),
    "oven": (0.4, 1.0),
    "microwave": (0.3, 0.7),
    "sink": (0.3, 1.2),
    "plant": (0.2, 1.2),
    "person": (0.3, 1.2),
    "laptop": (0.2, 0.6),
    "keyboard": (0.25, 0.6),
    "suitcase": (0.3, 1.0),
    "backpack": (0.2, 0.6),
    "book": (0.1, 0.5),
    "cup": (0.05, 0.3),
    "bottle": (0.05, 0.4),
    "wine glass": (0.05, 0.3),
    "bowl": (0.08, 0.4),
    "vase": (0.08, 0.5),
    "clock": (0.1, 0.5),
    "phone": (0.05, 0.4),
    "remote": (0.05, 0.4),
    "mouse": (0.05, 0.3),
    "teddy bear": (0.1, 0.6),
}
_DEFAULT_EXTENT_M = (0.05, 1.0)

#: Classes that stand on a surface: a carve-out keeps only their points above it.
SURFACE_OBJECTS = frozenset({
    "cup", "bottle", "wine glass", "bowl", "vase", "book", "laptop", "keyboard", "phone", "remote", "mouse",
    "clock", "microwave", "tv", "teddy bear", "plant", "backpack", "scissors", "toaster",
})


def class_extent_m(label: str) -> tuple[float, float]:
    """(min, max) plausible horizontal extent (m) of a detector label (any spelling)."""
    return CLASS_EXTENT_M.get(canonical_label(label), _DEFAULT_EXTENT_M)


def depth_band_for(label: str) -> float:
    """Depth band (m) around the box's central depth that a detection of ``label`` is lifted with:
    about the object's size, so a cup's box does not take in the table top behind it."""
    return float(np.clip(class_extent_m(label)[1] * 0.6, 0.1, 0.8))


@dataclass(frozen=True)
class LabelEvidence:
    """One lifted detection: detector ``label`` and ``score`` (0-1), world ``points`` (N, 3) float32
    (metres, z up) with their ``colors`` (N, 3) uint8, and the keyframe ``stamp_s``."""

    label: str
    score: float
    points: np.ndarray
    colors: np.ndarray
    stamp_s: float

    @property
    def nbytes(self) -> int:
        return int(self.points.nbytes + self.colors.nbytes)

    def cells(self, voxel_m: float) -> np.ndarray:
        """Coarse-grid cells (unique, sorted) of the points; computed once per grid (a refresh
        re-reads every kept evidence, the points never change)."""
        cache = self.__dict__.setdefault("_cells", {})  # frozen dataclass: the cache is not a field
        if voxel_m not in cache:
            cache[voxel_m] = _coarse(self.points, voxel_m)
        return cache[voxel_m]


@dataclass(frozen=True)
class LabelingParams:
    """Association and voting thresholds.

    voxel_m: grid of the overlap test (its 2x coarser grid is used, like instance association).
    min_overlap: least share of an evidence's cells inside a segment to associate it at all.
    full_overlap: share from which an evidence votes with its whole confidence (less: in proportion).
    oversize_ratio: a segment wider than this x the class's max extent is too large to be that object.
    min_vote: least summed vote (confidence x overlap) for a segment to take a label.
    carve_min_points / carve_min_vote: least fused points and summed vote for a carve-out.
    carve_above_m: a surface object's carve-out keeps points this far above the surface under it.
    min_remainder_points: a parent left with fewer points after carve-outs is dropped.
    orphan_min_vote: evidence that lands on no segment becomes an instance of its own (its lifted
        points) when the summed confidence of its views reaches this.
    split_apart: views of one furniture class whose centres on a segment lie this share of the
        class's largest extent apart show several objects: the segment is split between them.
    """

    voxel_m: float = 0.03
    min_overlap: float = 0.2
    full_overlap: float = 0.5
    oversize_ratio: float = 1.5
    min_vote: float = 0.3
    carve_min_points: int = 3
    carve_min_vote: float = 0.4
    carve_above_m: float = 0.02
    min_remainder_points: int = 10
    orphan_min_vote: float = 0.8
    split_apart: float = 0.4


@dataclass
class SegmentLabel:
    """Outcome for one segment: winning ``label`` ("" = unlabelled), its mean detector ``score``,
    and the ``votes`` (summed vote weight) and ``counts`` (views) of every label that voted."""

    label: str = ""
    score: float = 0.0
    votes: Counter = field(default_factory=Counter)
    counts: Counter = field(default_factory=Counter)
    raw: Counter = field(default_factory=Counter)

    def add(self, label: str, weight: float, score: float) -> None:
        self.votes[label] += weight
        self.counts[label] += 1
        self.raw[label] += score

    def decide(self, min_vote: float) -> None:
        if not self.votes:
            return
        label, vote = max(self.votes.items(), key=lambda kv: (kv[1], kv[0]))
        if vote >= min_vote:
            self.label = label
            self.score = float(self.raw[label]) / max(1, self.counts[label])


def _horizontal_extent(points: np.ndarray) -> float:
    """Largest horizontal extent (m) of (N, 3) points, trimmed 2-98 % against stray points."""
    if len(points) < 2:
        return 0.0
    lo, hi = np.percentile(points[:, :2], [2, 98], axis=0)
    return float(np.max(hi - lo))


def _coarse(points: np.ndarray, voxel_m: float) -> np.ndarray:
    return coarse_keys(voxel_keys(points, voxel_m)) if len(points) else np.zeros(0, np.int64)


def _group_evidence(items: list[tuple[int, LabelEvidence, np.ndarray]]) -> list[list[int]]:
    """Groups (lists of positions in ``items``, ordered by first member) of same-label evidence:
    connected components of "shares at least 30 % of the smaller one's cells", i.e. the views of
    one object. Shared-cell counts of all pairs come from one sparse product, so thousands of views
    of one cup stay cheap."""
    labels = [canonical_label(ev.label) for _, ev, _ in items]
    groups: list[list[int]] = []
    for label in sorted(set(labels)):
        pos = [i for i, lab in enumerate(labels) if lab == label]
        keys = [items[i][2] for i in pos]
        sizes = np.array([len(k) for k in keys])
        if sizes.sum() == 0:
            groups += [[i] for i in pos]
            continue
        uniq, inv = np.unique(np.concatenate(keys), return_inverse=True)
        rows = np.repeat(np.arange(len(pos)), sizes)
        views = csr_matrix((np.ones(len(inv)), (rows, inv)), shape=(len(pos), len(uniq)))
        shared = (views @ views.T).tocoo()
        ok = shared.data >= 0.3 * np.maximum(1, np.minimum(sizes[shared.row], sizes[shared.col]))
        adjacency = csr_matrix((np.ones(int(ok.sum())), (shared.row[ok], shared.col[ok])), shape=(len(pos),) * 2)
        _, comp = connected_components(adjacency, directed=False)
        for c in np.unique(comp):
            groups.append([pos[i] for i in np.nonzero(comp == c)[0]])
    groups.sort(key=lambda g: g[0])
    return groups


Segment = tuple[np.ndarray, np.ndarray]


class _CellIndex:
    """Which segment owns each coarse cell (a cell shared by two segments goes to the larger)."""

    def __init__(self, seg_keys: list[np.ndarray]) -> None:
        order = sorted(range(len(seg_keys)), key=lambda i: len(seg_keys[i]))
        keys = np.concatenate([seg_keys[i] for i in order]) if seg_keys else np.zeros(0, np.int64)
        owner = np.concatenate([np.full(len(seg_keys[i]), i, np.int64) for i in order]) if seg_keys else keys
        # Stable unique keeps the first occurrence: reverse so that the larger segment comes first.
        keys, owner = keys[::-1], owner[::-1]
        self.keys, first = np.unique(keys, return_index=True)
        self.owner = owner[first]
        self.n = len(seg_keys)

    def best(self, cells: np.ndarray) -> tuple[int, float]:
        """(segment holding most of ``cells``, that share), or (-1, 0) when none holds any."""
        if len(cells) == 0 or len(self.keys) == 0:
            return -1, 0.0
        pos = np.clip(np.searchsorted(self.keys, cells), 0, len(self.keys) - 1)
        hit = self.keys[pos] == cells
        if not np.any(hit):
            return -1, 0.0
        counts = np.bincount(self.owner[pos[hit]], minlength=self.n)
        best = int(np.argmax(counts))
        return best, float(counts[best]) / len(cells)


def label_segments(
    segments: list[Segment],
    evidence: list[LabelEvidence],
    params: Optional[LabelingParams] = None,
) -> tuple[list[Segment], list[SegmentLabel]]:
    """Label geometric segments from detection evidence (see the module doc).

    ``segments``: ``(points (N_i, 3), colors (N_i, 3))`` of each segment, world frame. Returns
    ``(segments', labels)``: the segments with carve-outs removed from their parents and appended
    as new segments (a parent left with fewer than ``min_remainder_points`` is dropped), and one
    :class:`SegmentLabel` per returned segment.
    """
    p = params or LabelingParams()
    seg_pts = [np.asarray(s[0], dtype=np.float64) for s in segments]
    seg_cols = [np.asarray(s[1], dtype=np.uint8) for s in segments]
    seg_keys = [_coarse(s, p.voxel_m) for s in seg_pts]
    seg_extent = [_horizontal_extent(s) for s in seg_pts]
    index = _CellIndex(seg_keys)
    labels = [SegmentLabel() for _ in seg_pts]
    oversized: dict[int, list[tuple[int, LabelEvidence, np.ndarray]]] = {}
    orphans: list[tuple[int, LabelEvidence, np.ndarray]] = []
    fitting: dict[int, list[tuple[int, LabelEvidence, np.ndarray, float]]] = {}
    for ei, ev in enumerate(evidence):
        if len(ev.points) == 0:
            continue
        ekeys = ev.cells(p.voxel_m)
        best, best_ov = index.best(ekeys)
        lo, hi = class_extent_m(ev.label)
        ext = seg_extent[best] if best >= 0 else 0.0
        logger.debug("evidence %d %s %.2f -> segment %d (overlap %.2f, extent %.2f m)", ei, ev.label, ev.score, best,
                     best_ov, ext)
        if best < 0 or best_ov < p.min_overlap:
            orphans.append((ei, ev, ekeys))
            continue
        if ext > p.oversize_ratio * hi:
            oversized.setdefault(best, []).append((ei, ev, ekeys))
            continue
        # A box lifted with depth also takes in some surroundings, so half its points inside a
        # segment is full support; a segment smaller than the class's smallest view is probably a
        # fragment: half a vote.
        weight = float(ev.score) * min(1.0, best_ov / p.full_overlap) * (0.5 if ext < 0.5 * lo else 1.0)
        fitting.setdefault(best, []).append((ei, ev, ekeys, weight))
    for si, items in sorted(fitting.items()):
        apart = _distinct_pieces(seg_pts[si], [(ei, ev, k) for ei, ev, k, _ in items], p)
        for ei, ev, ekeys, weight in items:
            if ei in apart:
                oversized.setdefault(si, []).append((ei, ev, ekeys))
            else:
                labels[si].add(ev.label, weight, float(ev.score))
    new_segments: list[Segment] = []
    new_labels: list[SegmentLabel] = []
    remove: dict[int, np.ndarray] = {}
    for lab in labels:
        lab.decide(p.min_vote)
    for si in sorted(oversized):
        parent, parent_rgb = seg_pts[si], seg_cols[si]
        taken = remove.setdefault(si, np.zeros(len(parent), dtype=bool))
        parent_cells = coarse_keys_per_point(parent, p.voxel_m)
        furniture: list[tuple[list, np.ndarray]] = []
        for group in _group_evidence(oversized[si]):
            items = [oversized[si][g] for g in group]
            if sum(float(ev.score) for _, ev, _ in items) < p.carve_min_vote:
                continue
            label = items[0][1].label
            region = np.unique(np.concatenate([k for _, _, k in items]))
            inside = np.isin(parent_cells, region) & ~taken
            if canonical_label(label) not in SURFACE_OBJECTS:
                # Furniture is carved only out of segments no class fits (the table's own votes
                # win over the chairs whose boxes reach over its edge).
                if not labels[si].label and np.any(inside):
                    furniture.append((items, np.median(parent[inside, :2], axis=0)))
                continue
            # The fused map holds a cup as a voxel or two; the views' own depth is denser.
            ev_pts = np.concatenate([ev.points for _, ev, _ in items]).astype(np.float64)
            ev_rgb = np.concatenate([ev.colors for _, ev, _ in items])
            carved, z_surface = _above_surface(parent, inside, p)
            above = ev_pts[:, 2] > z_surface + p.carve_above_m
            pts = np.concatenate([parent[carved], ev_pts[above]])
            rgb = np.concatenate([parent_rgb[carved], ev_rgb[above]])
            if _carve_ok(pts, label, p):
                taken |= carved
                new_segments.append((pts, rgb))
                new_labels.append(_group_label(items))
        if furniture:
            # Several pieces of furniture that geometry joined (two chairs back to back): each
            # point goes to the nearest detected piece within that class's reach.
            centres = np.array([c for _, c in furniture])
            reach = np.array([0.6 * class_extent_m(items[0][1].label)[1] for items, _ in furniture])
            d = np.linalg.norm(parent[:, None, :2] - centres[None, :, :], axis=2)
            nearest = np.argmin(d, axis=1)
            for k, (items, _) in enumerate(furniture):
                carved = (nearest == k) & (d[:, k] <= reach[k]) & ~taken
                pts, rgb = parent[carved], parent_rgb[carved]
                if _carve_ok(pts, items[0][1].label, p):
                    taken |= carved
                    new_segments.append((pts, rgb))
                    new_labels.append(_group_label(items))
    # Objects the fused map does not hold (seen in too few frames to pass the surface filter, or
    # removed with a wall): confident detections stand for themselves.
    for group in _group_evidence(orphans):
        items = [orphans[g] for g in group]
        if sum(float(ev.score) for _, ev, _ in items) < p.orphan_min_vote:
            continue
        pts = np.concatenate([ev.points for _, ev, _ in items]).astype(np.float64)
        rgb = np.concatenate([ev.colors for _, ev, _ in items])
        if _carve_ok(pts, items[0][1].label, p):
            new_segments.append((pts, rgb))
            new_labels.append(_group_label(items))
    out_segments: list[Segment] = []
    out_labels: list[SegmentLabel] = []
    for si, pts in enumerate(seg_pts):
        rgb = seg_cols[si]
        if si in remove:
            pts, rgb = pts[~remove[si]], rgb[~remove[si]]
            if len(pts) < p.min_remainder_points:
                continue
        out_segments.append((pts, rgb))
        out_labels.append(labels[si])
    out_segments += new_segments
    out_labels += new_labels
    for lab in out_labels:
        lab.decide(p.min_vote)
    return out_segments, out_labels


def _distinct_pieces(parent: np.ndarray, items: list[tuple[int, LabelEvidence, np.ndarray]], p: LabelingParams
                     ) -> set[int]:
    """Evidence indices that show *several* pieces of furniture of one class inside one segment
    (two chairs side by side that geometry joined): groups of views whose centres on the segment
    lie farther apart than :attr:`LabelingParams.split_apart` x the class's largest extent. Those go
    to the carve-out step instead of voting for the segment as a whole."""
    out: set[int] = set()
    if len(items) < 2:
        return out
    cells = coarse_keys_per_point(parent, p.voxel_m)
    by_label: dict[str, list[list[int]]] = {}
    for group in _group_evidence(items):
        label = canonical_label(items[group[0]][1].label)
        if label not in SURFACE_OBJECTS:
            by_label.setdefault(label, []).append(group)
    for label, groups in by_label.items():
        if len(groups) < 2:
            continue
        centres = []
        for group in groups:
            inside = np.isin(cells, np.unique(np.concatenate([items[g][2] for g in group])))
            centres.append(np.median(parent[inside, :2], axis=0) if np.any(inside) else None)
        ok = [c for c in centres if c is not None]
        far = max((float(np.linalg.norm(a - b)) for a in ok for b in ok), default=0.0)
        if far >= p.split_apart * class_extent_m(label)[1]:
            out |= {items[g][0] for group in groups for g in group}
    return out


def _carve_ok(pts: np.ndarray, label: str, p: LabelingParams) -> bool:
    """Is a carved point set big enough, and small enough for its class?"""
    return len(pts) >= p.carve_min_points and _horizontal_extent(pts) <= p.oversize_ratio * class_extent_m(label)[1]


def _group_label(items: list[tuple[int, LabelEvidence, np.ndarray]]) -> SegmentLabel:
    lab = SegmentLabel()
    for _, ev, _ in items:
        lab.add(ev.label, float(ev.score), float(ev.score))
    return lab


def coarse_keys_per_point(points: np.ndarray, voxel_m: float) -> np.ndarray:
    """Coarse-grid key (N,) of each point (the cell :func:`instances.coarse_keys` would give it)."""
    ijk = np.floor(np.asarray(points, dtype=np.float64) / (2 * voxel_m)).astype(np.int64) + np.int64(1 << 20)
    return (ijk[:, 0] << 42) | (ijk[:, 1] << 21) | ijk[:, 2]


def _above_surface(parent: np.ndarray, inside: np.ndarray, p: LabelingParams) -> tuple[np.ndarray, float]:
    """(mask (N,) of ``parent`` points above the surface inside the evidence region, the surface
    height z (m)). The surface is the region's low points (where the boxes met the support): an
    object standing on it is everything ``carve_above_m`` higher."""
    if not np.any(inside):
        return np.zeros(len(parent), dtype=bool), float("inf")
    z_surface = float(np.percentile(parent[inside, 2], 20))
    return inside & (parent[:, 2] > z_surface + p.carve_above_m), z_surface
