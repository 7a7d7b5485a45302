"""Referring expressions over 3D objects: one vocabulary and one geometry of relations.

Question generation (``datasets/questions.py``), the metric engine (``core/spatial.py``) and the
no-weights fallback backend all go through this module, so a description generated from ground
truth resolves to the same object(s) whenever the map's instances equal the ground truth.

A description is parsed into an :class:`Expression`::

    [det] [size word] [colour] <label> [relation <anchor(s)>] [, seen from <viewer>]

e.g. "the brown chair next to the table", "the largest cabinet", "the lamp between the sofa and
the bed", "chairs", "the trash can closest to me", "the chair to the left of the table, seen from
the door". Evaluation (:func:`resolve`) checks the hard constraints (label, colour, relative size,
relation) against every :class:`Candidate` and ranks the survivors; a superlative ("largest",
"closest to ...") keeps only its winner.

Geometry of the relations (world frame, metres, z up; all boxes gravity-aligned):

- ``next_to``: the horizontal gap between the two footprints is at most :data:`NEXT_TO_MAX_GAP_M`,
  and neither object stands on the other.
- ``on``: the target's bottom is within :data:`ON_MAX_Z_GAP_M` of the anchor's top and the
  target's centre lies inside the anchor's footprint (support). ``under`` is the inverse.
- ``between``: the target's centre projects onto the segment anchor1 -> anchor2 (horizontal) at a
  fraction in [:data:`BETWEEN_MIN_FRACTION`, 1 - that] and lies at most
  :data:`BETWEEN_MAX_OFFSET_FRACTION` x the segment length from it.
- ``left_of`` / ``right_of``: seen by a viewer standing at the viewpoint (the robot/camera, or the
  centre of a viewpoint object) and looking horizontally toward the anchor's centre, the target's
  centre is offset sideways by more than :data:`LEFT_RIGHT_MIN_OFFSET_M` to the viewer's left
  (right) and lies within :data:`LEFT_RIGHT_MAX_DIST_M` of the anchor. Without a viewpoint phrase
  the robot is the viewer, else the centre of all candidates (roughly the room centre).
- ``next_to`` the robot ("the chair next to me"): horizontal centre distance <= :data:`NEXT_TO_ROBOT_M`.
- ``closest_to`` / ``farthest_from``: 3D centre-to-centre distance to the anchor (or to the viewer
  for "me", "the camera", "the robot").
- sizes: "largest"/"biggest"/"smallest" compare box volume, "tallest"/"shortest" box height,
  "longest"/"widest" the footprint's long side; "big" ("large") means a volume at least
  :data:`RELATIVE_SIZE_RATIO` x the median volume of the *other* objects with the same label,
  "small" at most that median divided by the ratio; "tall"/"short" compare heights and
  "long"/"wide"/"narrow" footprint lengths the same way (:data:`RELATIVE_SIZES`). A relative word
  never empties the candidates: an object alone in its class keeps it, and when none stands out by
  the ratio the most extreme one is taken.
- unknown words before the noun narrow nothing ("the wooden chair" is a chair when no object is
  labelled "wooden chair").
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Union

import numpy as np

from .colors import canonical_color, name_color
from .types import GroundTruthObject, Instance, OrientedBox3D

logger = logging.getLogger(__name__)

NEXT_TO_MAX_GAP_M = 0.5
NEXT_TO_ROBOT_M = 1.0
ON_MAX_Z_GAP_M = 0.1
ON_XY_MARGIN_M = 0.02
BETWEEN_MIN_FRACTION = 0.15
BETWEEN_MAX_OFFSET_FRACTION = 0.35
LEFT_RIGHT_MIN_OFFSET_M = 0.15
LEFT_RIGHT_MAX_DIST_M = 3.0
RELATIVE_SIZE_RATIO = 1.3

#: Detector / dataset label spellings -> our canonical label (COCO names as Darknet writes them).
LABEL_SYNONYMS: dict[str, str] = {
    "diningtable": "table",
    "dining table": "table",
    "tvmonitor": "tv",
    "tv monitor": "tv",
    "television": "tv",
    "pottedplant": "plant",
    "potted plant": "plant",
    "houseplant": "plant",
    "couch": "sofa",
    "settee": "sofa",
    "trashcan": "trash can",
    "trash bin": "trash can",
    "garbage can": "trash can",
    "garbage bin": "trash can",
    "wastebasket": "trash can",
    "waste bin": "trash can",
    "bin": "trash can",
    "bookcase": "bookshelf",
    "book shelf": "bookshelf",
    "armchair": "chair",
    "fridge": "refrigerator",
    "night stand": "nightstand",
    "bedside table": "nightstand",
    "cupboard": "cabinet",
    "sofachair": "chair",
    "mug": "cup",
    "monitor": "tv",
    "computer monitor": "tv",
    "tv screen": "tv",
    "dinner table": "table",
    "kitchen table": "table",
    "plant pot": "plant",
    "rubbish bin": "trash can",
    # COCO class names (Darknet spelling included) -> the words people use.
    "cell phone": "phone",
    "cellphone": "phone",
    "mobile phone": "phone",
    "motorbike": "motorcycle",
    "aeroplane": "airplane",
    "sports ball": "ball",
    "hair drier": "hair dryer",
}

#: Colour words that are also object labels (COCO "orange"): a lone one names the object.
COLOR_LABELS = frozenset({"orange", "oranges"})

#: Words that mean "any object" in a description ("the object next to the bed").
ANY_OBJECT_WORDS = frozenset({"object", "objects", "thing", "things", "item", "items", "one", "ones"})

#: Size and shape words -> the size constraint they express.
SIZE_WORDS: dict[str, str] = {
    "largest": "largest",
    "biggest": "largest",
    "smallest": "smallest",
    "tallest": "tallest",
    "highest": "tallest",
    "shortest": "shortest",
    "lowest": "shortest",
    "longest": "longest",
    "widest": "longest",
    "big": "big",
    "large": "big",
    "huge": "big",
    "small": "small",
    "little": "small",
    "tiny": "small",
    "tall": "tall",
    "high": "tall",
    "short": "short",
    "low": "short",
    "long": "long",
    "wide": "long",
    "narrow": "narrow",
}
SIZE_SUPERLATIVES = frozenset({"largest", "smallest", "tallest", "shortest", "longest"})

#: Relative size words -> (quantity compared, the direction that satisfies the word).
#: Quantities: box volume (m^3), box height (m), the footprint's long side (m).
RELATIVE_SIZES: dict[str, tuple[str, int]] = {
    "big": ("volume", +1),
    "small": ("volume", -1),
    "tall": ("height", +1),
    "short": ("height", -1),
    "long": ("length", +1),
    "narrow": ("length", -1),
}

#: Proximity superlatives placed before the noun ("the closest chair to the table").
PROXIMITY_WORDS: dict[str, str] = {
    "closest": "closest_to",
    "nearest": "closest_to",
    "farthest": "farthest_from",
    "furthest": "farthest_from",
}

#: Relation phrases (as word tuples) -> relation name; longest phrases are tried first.
RELATION_PHRASES: dict[tuple[str, ...], str] = {
    ("to", "the", "left", "of"): "left_of",
    ("on", "the", "left", "of"): "left_of",
    ("left", "of"): "left_of",
    ("to", "the", "right", "of"): "right_of",
    ("on", "the", "right", "of"): "right_of",
    ("right", "of"): "right_of",
    ("next", "to"): "next_to",
    ("beside",): "next_to",
    ("near",): "next_to",
    ("close", "to"): "next_to",
    ("by",): "next_to",
    ("on", "top", "of"): "on",
    ("on",): "on",
    ("atop",): "on",
    ("under",): "under",
    ("below",): "under",
    ("beneath",): "under",
    ("underneath",): "under",
    ("between",): "between",
    ("closest", "to"): "closest_to",
    ("nearest", "to"): "closest_to",
    ("farthest", "from"): "farthest_from",
    ("furthest", "from"): "farthest_from",
    ("farthest", "to"): "farthest_from",
}
_RELATION_ORDER = sorted(RELATION_PHRASES, key=len, reverse=True)

#: Viewpoint phrases that introduce who looks ("..., seen from the door").
VIEWPOINT_PHRASES: tuple[tuple[str, ...], ...] = (
    ("when", "looking", "from"),
    ("as", "seen", "from"),
    ("seen", "from"),
    ("viewed", "from"),
    ("looking", "from"),
    ("from", "the", "viewpoint", "of"),
    ("from", "the", "perspective", "of"),
    ("from",),
)

#: Mentions of the robot / the camera / the asker.
ROBOT_WORDS = frozenset(
    {"me", "you", "us", "camera", "the camera", "robot", "the robot", "my view", "my perspective", "here", "viewer"}
)

_DETERMINERS = ("all of the", "all the", "the", "a", "an", "any", "all", "every", "some", "each")
_PREFIXES = (
    "where is", "where are", "where's", "find", "show me", "locate", "point to", "which object is",
    "which is", "is there", "are there", "select", "give me", "which", "what object is", "what is", "what's", "what",
)  # fmt: skip

#: Words that may sit between the noun and its relation in a question ("which chair is next to ...").
_FILLER_WORDS = frozenset({"is", "are", "that", "which", "located", "sitting", "standing", "placed", "thats"})

#: Sentinel anchor meaning the robot / camera position.
ROBOT = "robot"


class ReferringError(ValueError):
    """A description could not be parsed or evaluated (message says why and what to change)."""


@dataclass(frozen=True)
class Candidate:
    """One object a description may refer to: id, canonical label, palette colour name, world box."""

    cid: int
    label: str
    color: str
    box: OrientedBox3D

    @property
    def center(self) -> np.ndarray:
        return np.asarray(self.box.center, dtype=np.float64)

    @property
    def volume(self) -> float:
        return float(np.prod(self.box.size))

    @property
    def height(self) -> float:
        return float(self.box.size[2])

    @property
    def length(self) -> float:
        """The footprint's long side (m)."""
        return float(max(self.box.size[0], self.box.size[1]))

    def quantity(self, name: str) -> float:
        """"volume" (m^3), "height" or "length" (m)."""
        return {"volume": self.volume, "height": self.height, "length": self.length}[name]


Anchor = Union["Expression", str]


@dataclass(frozen=True)
class Expression:
    """A parsed description.

    ``label`` is canonical (None = any object); ``size`` one of :data:`SIZE_WORDS`' values;
    ``relation`` one of next_to/on/under/between/left_of/right_of/closest_to/farthest_from with
    ``anchors`` (Expressions, or :data:`ROBOT`); ``viewpoint`` is the viewer for left/right;
    ``plural``/``quantifier`` say whether the phrase asks for all matches ("chairs", "any ...");
    ``extra_sizes`` holds further relative size words ("the big tall cabinet": size "big", extra "tall").
    """

    text: str
    label: str | None = None
    color: str | None = None
    size: str | None = None
    relation: str | None = None
    anchors: tuple[Anchor, ...] = ()
    viewpoint: Anchor | None = None
    plural: bool = False
    quantifier: str | None = None
    extra_sizes: tuple[str, ...] = ()

    @property
    def is_superlative(self) -> bool:
        return self.size in SIZE_SUPERLATIVES or self.relation in ("closest_to", "farthest_from")

    @property
    def wants_many(self) -> bool:
        """True for Multi3DRefer-style phrases: plural nouns, "any", "all"."""
        return self.plural or self.quantifier in ("any", "all", "every", "some", "each", "all the", "all of the")


@dataclass(frozen=True)
class Match:
    """A candidate that satisfies a description; higher ``score`` is better (0..1]."""

    cid: int
    score: float


@dataclass
class _Context:
    candidates: Sequence[Candidate]
    viewer_xyz: np.ndarray | None
    by_id: dict[int, Candidate] = field(default_factory=dict)


# ----------------------------------------------------------------------------- vocabulary


def singularize(word: str) -> str:
    """English singular of one lower-case noun ("shelves" -> "shelf", "boxes" -> "box")."""
    irregular = {
        "shelves": "shelf", "people": "person", "knives": "knife", "mice": "mouse", "glasses": "glass",
        "buses": "bus", "skis": "ski", "ties": "tie",
    }  # fmt: skip
    if word in irregular:
        return irregular[word]
    if word.endswith("elves"):
        return word[:-5] + "elf"
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses", "zes")):
        return word[:-2]
    if len(word) > 2 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def pluralize(label: str) -> str:
    """Plural of a (possibly multi-word) label: the last word is inflected ("trash can" -> "trash cans")."""
    words = label.split()
    if not words:
        return label
    w = words[-1]
    irregular = {"shelf": "shelves", "person": "people", "knife": "knives", "mouse": "mice"}
    if w in irregular:
        out = irregular[w]
    elif w.endswith("elf"):
        out = w[:-1] + "ves"
    elif w.endswith("y") and len(w) > 1 and w[-2] not in "aeiou":
        out = w[:-1] + "ies"
    elif w.endswith(("ch", "sh", "x", "s", "z")):
        out = w + "es"
    else:
        out = w + "s"
    return " ".join(words[:-1] + [out])


def canonical_label(label: str) -> str:
    """Canonical form of a detector / dataset / user label: lower case, spaces, singular, synonyms.

    ``"diningtable"`` -> ``"table"``, ``"pottedplant"`` -> ``"plant"``, ``"Trash_Cans"`` ->
    ``"trash can"``, ``"couch"`` -> ``"sofa"``; ``""`` stays ``""`` (unknown label).
    """
    text = re.sub(r"[_\-]+", " ", label.strip().lower())
    words = text.split()
    if not words:
        return ""
    joined = " ".join(words)
    if joined in LABEL_SYNONYMS:
        return LABEL_SYNONYMS[joined]
    words[-1] = singularize(words[-1])
    joined = " ".join(words)
    return LABEL_SYNONYMS.get(joined, joined)


def label_matches(wanted: str | None, label: str) -> bool:
    """Does a candidate's canonical ``label`` satisfy the wanted label (None = any)?

    Exact match, or head-noun match ("coffee table" is a "table").
    """
    if wanted is None:
        return True
    return label == wanted or label.endswith(" " + wanted)


# ----------------------------------------------------------------------------- candidates


def candidates_from_instances(instances: Iterable[Instance]) -> list[Candidate]:
    """Candidates of a snapshot's instances: colour named from the instance's point colours."""
    return [
        Candidate(int(inst.instance_id), canonical_label(inst.label), name_color(inst.colors), inst.box)
        for inst in instances
    ]


def candidates_from_objects(objects: Iterable[GroundTruthObject]) -> list[Candidate]:
    """Candidates of ground-truth objects (colour word canonicalised to the palette, else kept)."""
    out = []
    for obj in objects:
        color = canonical_color(obj.color) or obj.color.strip().lower()
        out.append(Candidate(int(obj.object_id), canonical_label(obj.label), color, obj.box))
    return out


# ----------------------------------------------------------------------------- geometry of relations


def _seg_point_dist(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    denom = float(ab @ ab)
    t = 0.0 if denom == 0.0 else float(np.clip((p - a) @ ab / denom, 0.0, 1.0))
    return float(np.linalg.norm(p - (a + t * ab)))


def _cross2(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))


def _segments_cross(p1: np.ndarray, p2: np.ndarray, q1: np.ndarray, q2: np.ndarray) -> bool:
    d1, d2 = _cross2(q1, q2, p1), _cross2(q1, q2, p2)
    d3, d4 = _cross2(p1, p2, q1), _cross2(p1, p2, q2)
    return (d1 * d2 < 0) and (d3 * d4 < 0)


def footprint(box: OrientedBox3D) -> np.ndarray:
    """Counter-clockwise (4, 2) xy corners of a gravity-aligned box (world frame, m)."""
    hx, hy = box.size[0] / 2.0, box.size[1] / 2.0
    local = np.array([[-hx, -hy], [hx, -hy], [hx, hy], [-hx, hy]])
    c, s = np.cos(box.yaw), np.sin(box.yaw)
    return local @ np.array([[c, -s], [s, c]]).T + np.asarray(box.center[:2], dtype=np.float64)


def point_in_footprint(xy: np.ndarray, box: OrientedBox3D, margin_m: float = 0.0) -> bool:
    """Is the world xy point inside the box's footprint grown by ``margin_m``?"""
    c, s = np.cos(box.yaw), np.sin(box.yaw)
    d = np.asarray(xy, dtype=np.float64)[:2] - np.asarray(box.center[:2])
    local = np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1]])
    return bool(np.all(np.abs(local) <= np.asarray(box.size[:2]) / 2.0 + margin_m))


def footprint_gap_m(a: OrientedBox3D, b: OrientedBox3D) -> float:
    """Horizontal distance (m) between two box footprints; 0 when they overlap."""
    pa, pb = footprint(a), footprint(b)
    if any(point_in_footprint(p, b) for p in pa) or any(point_in_footprint(p, a) for p in pb):
        return 0.0
    for i in range(4):
        for j in range(4):
            if _segments_cross(pa[i], pa[(i + 1) % 4], pb[j], pb[(j + 1) % 4]):
                return 0.0
    dists = [_seg_point_dist(p, pb[j], pb[(j + 1) % 4]) for p in pa for j in range(4)]
    dists += [_seg_point_dist(p, pa[j], pa[(j + 1) % 4]) for p in pb for j in range(4)]
    return float(min(dists))


def is_on(target: OrientedBox3D, anchor: OrientedBox3D) -> bool:
    """Support: target's bottom touches the anchor's top and its centre is over the anchor."""
    t_bottom = target.center[2] - target.size[2] / 2.0
    a_top = anchor.center[2] + anchor.size[2] / 2.0
    if abs(t_bottom - a_top) > ON_MAX_Z_GAP_M:
        return False
    return point_in_footprint(np.asarray(target.center[:2]), anchor, ON_XY_MARGIN_M)


def is_next_to(target: OrientedBox3D, anchor: OrientedBox3D) -> bool:
    """Horizontal footprint gap <= NEXT_TO_MAX_GAP_M and no support relation either way."""
    if is_on(target, anchor) or is_on(anchor, target):
        return False
    # Cheap lower bound first: centre distance minus the footprints' circumscribed radii.
    lower = float(np.hypot(target.center[0] - anchor.center[0], target.center[1] - anchor.center[1]))
    lower -= float(np.hypot(*target.size[:2]) + np.hypot(*anchor.size[:2])) / 2.0
    if lower > NEXT_TO_MAX_GAP_M:
        return False
    return footprint_gap_m(target, anchor) <= NEXT_TO_MAX_GAP_M


def between_coords(target_xy: np.ndarray, a_xy: np.ndarray, b_xy: np.ndarray) -> tuple[float, float]:
    """(fraction along a->b of the target's projection, perpendicular offset in m), horizontal."""
    # Plain floats: generation calls this for every object triple.
    ax, ay, bx, by = float(a_xy[0]), float(a_xy[1]), float(b_xy[0]), float(b_xy[1])
    dx, dy = bx - ax, by - ay
    length_sq = dx * dx + dy * dy
    if length_sq < 1e-12:
        return float("nan"), float("inf")
    tx, ty = float(target_xy[0]) - ax, float(target_xy[1]) - ay
    return (tx * dx + ty * dy) / length_sq, abs(dx * ty - dy * tx) / length_sq**0.5


def is_between(target: OrientedBox3D, a: OrientedBox3D, b: OrientedBox3D) -> bool:
    """Target centre projects inside the a->b segment (margins) and lies close to it."""
    s, perp = between_coords(target.center, a.center, b.center)
    length = float(np.hypot(b.center[0] - a.center[0], b.center[1] - a.center[1]))
    return BETWEEN_MIN_FRACTION <= s <= 1.0 - BETWEEN_MIN_FRACTION and perp <= BETWEEN_MAX_OFFSET_FRACTION * length


def lateral_offset_m(target_xyz: np.ndarray, anchor_xyz: np.ndarray, viewer_xyz: np.ndarray) -> float:
    """Signed sideways offset (m) of the target from the anchor, seen by a viewer looking at the anchor.

    Positive = to the viewer's left (z up, right-handed: left = forward rotated +90 deg about z).
    Raises ReferringError when viewer and anchor coincide horizontally (no viewing direction).
    """
    v = np.asarray(viewer_xyz, dtype=np.float64)[:2]
    a = np.asarray(anchor_xyz, dtype=np.float64)[:2]
    t = np.asarray(target_xyz, dtype=np.float64)[:2]
    fwd = a - v
    n = float(np.linalg.norm(fwd))
    if n < 1e-6:
        raise ReferringError("the viewpoint coincides with the anchor object; name another viewpoint")
    fwd /= n
    left = np.array([-fwd[1], fwd[0]])
    return float((t - a) @ left)


def relative_size(cand: Candidate, candidates: Sequence[Candidate], quantity: str = "volume") -> str | None:
    """The relative size word that fits a candidate against the others with the same label:
    "big"/"small" for ``quantity="volume"``, "tall"/"short" for "height", "long"/"narrow" for
    "length"; None when it is not :data:`RELATIVE_SIZE_RATIO` apart from their median (or alone)."""
    others = [c.quantity(quantity) for c in candidates if c.cid != cand.cid and c.label == cand.label]
    if not others:
        return None
    med = float(np.median(others))
    more = next(w for w, (q, d) in RELATIVE_SIZES.items() if q == quantity and d > 0)
    less = next(w for w, (q, d) in RELATIVE_SIZES.items() if q == quantity and d < 0)
    value = cand.quantity(quantity)
    if value >= RELATIVE_SIZE_RATIO * med:
        return more
    if value * RELATIVE_SIZE_RATIO <= med:
        return less
    return None


def _relative_filter(pool: list[Candidate], word: str, all_cands: Sequence[Candidate]) -> list[Candidate]:
    """Candidates of ``pool`` that a relative size word fits. The word narrows only what it can:
    alone in its class, a candidate keeps it; when no candidate stands out by the ratio, the most
    extreme one is kept ("the tall lamp" of two lamps is the taller), so the word never empties
    the pool."""
    quantity, direction = RELATIVE_SIZES[word]
    fits = []
    for c in pool:
        rel = relative_size(c, all_cands, quantity)
        alone = not any(o.cid != c.cid and o.label == c.label for o in all_cands)
        if rel == word or alone:
            fits.append(c)
    if fits or not pool:
        return fits
    return [max(pool, key=lambda c: direction * c.quantity(quantity))]


# ----------------------------------------------------------------------------- parsing


def _tokens(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("'s ", " ")).split()


def _strip_words(words: list[str], phrases: Sequence[str]) -> tuple[list[str], str | None]:
    for phrase, pw in _split_sorted(tuple(phrases)):
        if words[: len(pw)] == pw:
            return words[len(pw) :], phrase
    return words, None


@functools.lru_cache(maxsize=16)
def _split_sorted(phrases: tuple[str, ...]) -> tuple[tuple[str, list[str]], ...]:
    """Phrases with their words, longest first (so "all the" wins over "all")."""
    return tuple((p, p.split()) for p in sorted(phrases, key=lambda p: -len(p.split())))


def _find_phrase(words: list[str], phrases: Sequence[tuple[str, ...]], start: int = 0) -> tuple[int, tuple[str, ...]]:
    for i in range(start, len(words)):
        for p in phrases:
            if tuple(words[i : i + len(p)]) == p:
                return i, p
    return -1, ()


def _parse_anchor(words: list[str], original: str) -> Anchor:
    text = " ".join(words)
    stripped, _ = _strip_words(words, _DETERMINERS)
    if text in ROBOT_WORDS or " ".join(stripped) in ROBOT_WORDS:
        return ROBOT
    if not stripped:
        raise ReferringError(f"missing object after a relation word in {original!r}")
    return _parse_words(words, original)


def _split_viewpoint(words: list[str], original: str) -> tuple[list[str], Anchor | None]:
    i, phrase = _find_phrase(words, VIEWPOINT_PHRASES)
    if i < 0:
        return words, None
    rest = words[i + len(phrase) :]
    # "... looking from the door toward the table": the direction is implied by the anchor.
    for stop in ("toward", "towards", "to", "at"):
        if stop in rest:
            rest = rest[: rest.index(stop)]
    if not rest:
        return words, None
    return words[:i], _parse_anchor(rest, original)


def _parse_words(words: list[str], original: str) -> Expression:
    words, _ = _strip_words(words, _PREFIXES)
    words, quant = _strip_words(words, _DETERMINERS)
    if not words:
        raise ReferringError(f"could not understand {original!r}: no object named")
    # Head noun phrase ends at the first relation phrase (or a viewpoint phrase).
    rel_i, rel_phrase = _find_phrase(words, _RELATION_ORDER, start=1)
    head = words if rel_i < 0 else words[:rel_i]
    rest = [] if rel_i < 0 else words[rel_i + len(rel_phrase) :]
    relation = None if rel_i < 0 else RELATION_PHRASES[rel_phrase]
    viewpoint: Anchor | None = None  # only left/right take a viewpoint, parsed from their tail below

    size = color = proximity = None
    sizes: list[str] = []
    noun: list[str] = []
    for i, w in enumerate(head):
        # Adjectives may follow an unknown word ("the shiny tall lamp"); the head's last word is
        # the noun whatever it is.
        modifier = not noun or i < len(head) - 1
        if w in SIZE_WORDS and modifier:
            sizes.append(SIZE_WORDS[w])
            size = size or SIZE_WORDS[w]
        elif w in PROXIMITY_WORDS and not noun:
            proximity = PROXIMITY_WORDS[w]
        elif canonical_color(w) and modifier and color is None:
            color = canonical_color(w)
        elif (w in ("one", "ones") and noun) or w in _FILLER_WORDS:
            continue
        else:
            noun.append(w)
    # "the closest chair to the table": the "to/from X" after the noun belongs to the superlative.
    if proximity is not None:
        if relation is None:
            for stop in ("to", "from"):
                if stop in noun:
                    k = noun.index(stop)
                    rest, noun = noun[k + 1 :], noun[:k]
                    break
        relation = proximity
    plural = False
    label: str | None = None
    if not noun and color is not None and head and head[-1] in COLOR_LABELS:
        noun, color = [head[-1]], None  # "the orange" is the fruit (a COCO class), not any orange object
    if noun and not (len(noun) == 1 and noun[0] in ANY_OBJECT_WORDS):
        raw = " ".join(noun)
        label = canonical_label(raw)
        plural = singularize(noun[-1]) != noun[-1] and raw not in LABEL_SYNONYMS
    elif noun:
        plural = noun[0].endswith("s")

    anchors: tuple[Anchor, ...] = ()
    if relation is not None:
        rest, viewpoint = _split_viewpoint(rest, original) if relation in ("left_of", "right_of") else (rest, None)
        if relation == "between":
            if "and" not in rest:
                raise ReferringError(f"'between' needs two objects ('between the X and the Y') in {original!r}")
            k = rest.index("and")
            anchors = (_parse_anchor(rest[:k], original), _parse_anchor(rest[k + 1 :], original))
        elif rest:
            anchors = (_parse_anchor(rest, original),)
        elif relation in ("closest_to", "farthest_from"):
            anchors = (ROBOT,)  # "the closest chair" = closest to me
        else:
            raise ReferringError(f"missing object after the relation in {original!r}")
    if label is None and color is None and size is None and relation is None:
        raise ReferringError(f"could not understand {original!r}: no object named")
    return Expression(
        text=original, label=label, color=color, size=size, relation=relation, anchors=anchors,
        viewpoint=viewpoint, plural=plural, quantifier=quant, extra_sizes=tuple(sizes[1:]),
    )  # fmt: skip


def parse_expression(text: str) -> Expression:
    """Parse a description into an :class:`Expression` (ReferringError when it names nothing)."""
    if not isinstance(text, str) or not text.strip():
        raise ReferringError("empty description; say which object, e.g. 'the brown chair next to the table'")
    return _parse_cached(text.strip())


@functools.lru_cache(maxsize=4096)
def _parse_cached(text: str) -> Expression:
    # Expressions are immutable, so generation's many repeated descriptions share one parse.
    return _parse_words(_tokens(text), text)


# ----------------------------------------------------------------------------- evaluation


def _anchor_points(anchor: Anchor, ctx: _Context, exclude: int | None) -> list[tuple[int | None, np.ndarray]]:
    """World centres an anchor may stand for: [(candidate id or None for the robot, xyz)]."""
    if isinstance(anchor, str):
        if ctx.viewer_xyz is None:
            raise ReferringError("the description refers to the robot/camera, but its position is unknown")
        return [(None, np.asarray(ctx.viewer_xyz, dtype=np.float64))]
    pool = [c for c in ctx.candidates if c.cid != exclude]
    matches = _evaluate(anchor, _Context(pool, ctx.viewer_xyz, ctx.by_id))
    return [(m.cid, ctx.by_id[m.cid].center) for m in matches]


def _viewer_for(expr: Expression, ctx: _Context, target: int) -> list[np.ndarray]:
    if expr.viewpoint is None:
        if ctx.viewer_xyz is not None:
            return [np.asarray(ctx.viewer_xyz, dtype=np.float64)]
        return [np.mean([c.center for c in ctx.candidates], axis=0)]
    return [p for _, p in _anchor_points(expr.viewpoint, ctx, exclude=target)]


def _relation_holds(expr: Expression, cand: Candidate, ctx: _Context) -> tuple[bool, float]:
    """(holds, distance used for ranking) of the expression's relation for one candidate."""
    rel = expr.relation
    if rel is None:
        if ctx.viewer_xyz is not None:
            return True, float(np.linalg.norm(cand.center - ctx.viewer_xyz))
        return True, 0.0
    if rel == "between":
        firsts = _anchor_points(expr.anchors[0], ctx, exclude=cand.cid)
        seconds = _anchor_points(expr.anchors[1], ctx, exclude=cand.cid)
        best = None
        for ia, pa in firsts:
            for ib, pb in seconds:
                if ia == ib or ia is None or ib is None:
                    continue
                if is_between(cand.box, ctx.by_id[ia].box, ctx.by_id[ib].box):
                    _, perp = between_coords(cand.center, pa, pb)
                    best = perp if best is None else min(best, perp)
        return best is not None, 0.0 if best is None else best
    anchors = _anchor_points(expr.anchors[0], ctx, exclude=cand.cid)
    if rel in ("closest_to", "farthest_from"):
        if not anchors:
            return False, 0.0
        return True, min(float(np.linalg.norm(cand.center - p)) for _, p in anchors)
    best = None
    for aid, p in anchors:
        dist = float(np.linalg.norm(cand.center[:2] - p[:2]))
        if rel in ("left_of", "right_of"):
            if dist > LEFT_RIGHT_MAX_DIST_M:
                continue
            ok = False
            for viewer in _viewer_for(expr, ctx, cand.cid):
                try:
                    off = lateral_offset_m(cand.center, p, viewer)
                except ReferringError:
                    continue
                ok = ok or (off > LEFT_RIGHT_MIN_OFFSET_M if rel == "left_of" else off < -LEFT_RIGHT_MIN_OFFSET_M)
        elif aid is None:
            ok = dist <= NEXT_TO_ROBOT_M if rel == "next_to" else False  # "next to me": the robot is a point
        else:
            abox = ctx.by_id[aid].box
            ok = {"next_to": is_next_to, "on": is_on, "under": lambda t, a: is_on(a, t)}[rel](cand.box, abox)
        if ok:
            best = dist if best is None else min(best, dist)
    return best is not None, 0.0 if best is None else best


def _label_pool(label: str | None, candidates: Sequence[Candidate]) -> list[Candidate]:
    """Candidates with the wanted label. Words before the noun that are no label of any candidate
    narrow nothing: "the wooden chair" falls back to "chair" when no candidate is a "wooden chair"."""
    pool = [c for c in candidates if label_matches(label, c.label)]
    words = [] if label is None else label.split()
    while not pool and len(words) > 1:
        words = words[1:]
        head = canonical_label(" ".join(words))
        pool = [c for c in candidates if label_matches(head, c.label)]
    return pool


def _evaluate(expr: Expression, ctx: _Context) -> list[Match]:
    pool = _label_pool(expr.label, ctx.candidates)
    if expr.color is not None:
        pool = [c for c in pool if c.color == expr.color]
    for word in (expr.size, *expr.extra_sizes):
        if word in RELATIVE_SIZES:
            pool = _relative_filter(pool, word, ctx.candidates)
    scored: list[tuple[Candidate, float]] = []
    for c in pool:
        ok, dist = _relation_holds(expr, c, ctx)
        if ok:
            scored.append((c, dist))
    if not scored:
        return []
    if expr.size in SIZE_SUPERLATIVES:
        key = {
            "largest": lambda cd: -cd[0].volume, "smallest": lambda cd: cd[0].volume,
            "tallest": lambda cd: -cd[0].height, "shortest": lambda cd: cd[0].height,
            "longest": lambda cd: -cd[0].length,
        }[expr.size]  # fmt: skip
        return [Match(min(scored, key=key)[0].cid, 1.0)]
    if expr.relation == "closest_to":
        return [Match(min(scored, key=lambda cd: cd[1])[0].cid, 1.0)]
    if expr.relation == "farthest_from":
        return [Match(max(scored, key=lambda cd: cd[1])[0].cid, 1.0)]
    scored.sort(key=lambda cd: (cd[1], cd[0].cid))
    return [Match(c.cid, 1.0 / (1.0 + d)) for c, d in scored]


def resolve(
    description: str | Expression,
    candidates: Sequence[Candidate],
    viewer_xyz: np.ndarray | None = None,
) -> list[Match]:
    """All candidates that satisfy the description, best first.

    A superlative ("the largest ...", "... closest to ...") returns only its winner. Other matches
    are ranked by distance to the relation's anchor, else to the viewer when known (score
    ``1 / (1 + d)``). ``viewer_xyz`` is the robot/camera position (world, m) for "me"/"the camera"
    and the default left/right viewpoint. Raises ReferringError for unparseable text or a robot
    reference without a viewer.
    """
    expr = parse_expression(description) if isinstance(description, str) else description
    viewer = None if viewer_xyz is None else np.asarray(viewer_xyz, dtype=np.float64).reshape(3)
    ctx = _Context(list(candidates), viewer, {c.cid: c for c in candidates})
    return _evaluate(expr, ctx)
