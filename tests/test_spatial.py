"""The referring-expression resolver and the metric spatial engine over hand-made snapshots."""

from __future__ import annotations

import numpy as np
import pytest

from scene_vlm_ros.core.colors import COLOR_PALETTE
from scene_vlm_ros.core.referring import (
    ROBOT,
    ReferringError,
    candidates_from_instances,
    candidates_from_objects,
    canonical_label,
    footprint_gap_m,
    is_between,
    is_next_to,
    is_on,
    lateral_offset_m,
    parse_expression,
    pluralize,
    resolve,
)
from scene_vlm_ros.core.spatial import (
    SpatialEngine,
    SpatialQueryError,
    camera_motion,
    count_label,
    depth_in_camera,
    distance_between,
    floor_area,
    snapshot_from_objects,
)
from scene_vlm_ros.core.types import GroundTruthObject, Instance, OrientedBox3D, SceneSnapshot

G = GroundTruthObject

ROOM = [
    G(1, "diningtable", "brown", (2.0, 2.0, 0.375), (1.2, 0.8, 0.75)),
    G(2, "chair", "brown", (2.0, 1.3, 0.45), (0.5, 0.5, 0.9)),
    G(3, "chair", "red", (2.0, 2.7, 0.45), (0.5, 0.5, 0.9)),
    G(4, "chair", "red", (4.7, 3.7, 0.5), (0.6, 0.6, 1.0)),
    G(5, "lamp", "yellow", (1.8, 2.0, 1.0), (0.3, 0.3, 0.5)),
    G(6, "couch", "green", (0.5, 2.0, 0.45), (0.9, 2.0, 0.9)),
    G(7, "bed", "blue", (4.0, 1.0, 0.3), (1.6, 2.0, 0.6)),
]


def camera_at(eye, yaw_deg: float) -> np.ndarray:
    """Optical-frame pose of a level camera at ``eye`` looking along world yaw ``yaw_deg`` (0 = +x)."""
    y = np.radians(yaw_deg)
    fwd = np.array([np.cos(y), np.sin(y), 0.0])
    right = np.array([np.sin(y), -np.cos(y), 0.0])
    T = np.eye(4)
    T[:3, :3] = np.stack([right, [0.0, 0.0, -1.0], fwd], axis=1)
    T[:3, 3] = eye
    return T


@pytest.fixture(scope="module")
def snap() -> SceneSnapshot:
    poses = {0: camera_at((0.0, 0.0, 1.5), 45.0), 5: camera_at((1.0, 0.0, 1.5), 90.0)}
    return snapshot_from_objects(ROOM, room_bounds=((0, 0, 0), (5.0, 4.0, 2.5)), camera_poses=poses)


def ids(desc: str, cands, viewer=None) -> list[int]:
    return [m.cid for m in resolve(desc, cands, viewer)]


# ----------------------------------------------------------------------------- parsing & vocabulary


@pytest.mark.parametrize(
    "raw, canon",
    [("diningtable", "table"), ("tvmonitor", "tv"), ("pottedplant", "plant"), ("couch", "sofa"),
     ("Trash_Cans", "trash can"), ("bookshelves", "bookshelf"), ("boxes", "box"), ("", "")],
)  # fmt: skip
def test_canonical_labels(raw, canon):
    assert canonical_label(raw) == canon


def test_pluralize_inverts_singular():
    for w in ("chair", "trash can", "box", "shelf", "bench", "plant", "cabinet", "library"):
        assert canonical_label(pluralize(w)) == w


def test_parse_descriptions():
    e = parse_expression("the brown chair next to the table")
    assert (e.label, e.color, e.relation, e.plural) == ("chair", "brown", "next_to", False)
    assert e.anchors[0].label == "table"
    e = parse_expression("the lamp between the sofa and the bed")
    assert e.relation == "between" and [a.label for a in e.anchors] == ["sofa", "bed"]
    e = parse_expression("the trash can closest to me")
    assert (e.label, e.relation, e.anchors) == ("trash can", "closest_to", (ROBOT,))
    e = parse_expression("the closest chair to the table")
    assert e.relation == "closest_to" and e.anchors[0].label == "table" and e.label == "chair"
    e = parse_expression("the farthest chair from the door")
    assert e.relation == "farthest_from" and e.anchors[0].label == "door"
    e = parse_expression("the chair to the left of the table, seen from the door")
    assert e.relation == "left_of" and e.anchors[0].label == "table" and e.viewpoint.label == "door"
    e = parse_expression("Which chair is next to the table?")
    assert (e.label, e.relation, e.anchors[0].label) == ("chair", "next_to", "table")
    e = parse_expression("what's the lamp that is on the table")
    assert (e.label, e.relation, e.anchors[0].label) == ("lamp", "on", "table")
    assert parse_expression("the orange").label == "orange" and parse_expression("the orange").color is None
    e = parse_expression("Where is the largest grey cabinet?")
    assert (e.label, e.color, e.size) == ("cabinet", "gray", "largest")
    assert parse_expression("chairs").wants_many and parse_expression("any green couch").wants_many
    assert not parse_expression("the chair").wants_many
    with pytest.raises(ReferringError, match="between"):
        parse_expression("the lamp between the sofa")
    with pytest.raises(ReferringError, match="empty"):
        parse_expression("  ")


# ----------------------------------------------------------------------------- relations


def test_relation_geometry():
    table = OrientedBox3D((0.0, 0.0, 0.375), (1.0, 1.0, 0.75))
    cup = OrientedBox3D((0.2, 0.1, 0.8), (0.1, 0.1, 0.1))
    chair = OrientedBox3D((0.0, 0.9, 0.45), (0.5, 0.5, 0.9))
    far = OrientedBox3D((3.0, 0.0, 0.45), (0.5, 0.5, 0.9))
    assert is_on(cup, table) and not is_on(table, cup) and not is_on(chair, table)
    assert footprint_gap_m(chair, table) == pytest.approx(0.15)
    assert is_next_to(chair, table) and not is_next_to(cup, table) and not is_next_to(far, table)
    # rotated by 45 deg the footprints' gap is measured on the rotated corners
    rot = OrientedBox3D((1.5, 0.0, 0.45), (1.0, 1.0, 0.9), np.pi / 4)
    assert footprint_gap_m(rot, table) == pytest.approx(1.5 - 0.5 - np.sqrt(0.5), abs=1e-6)
    mid = OrientedBox3D((1.5, 0.2, 0.45), (0.4, 0.4, 0.9))
    assert is_between(mid, table, far) and not is_between(far, table, mid)
    # viewer at origin looking along +x at (2, 0): +y is to the viewer's left
    assert lateral_offset_m(np.array([2, 1, 0]), np.array([2, 0, 0]), np.zeros(3)) == pytest.approx(1.0)
    assert lateral_offset_m(np.array([2, -1, 0]), np.array([2, 0, 0]), np.zeros(3)) == pytest.approx(-1.0)


def test_resolver_on_ground_truth():
    cands = candidates_from_objects(ROOM)
    assert ids("the brown chair", cands) == [2]
    assert sorted(ids("the red chairs", cands)) == [3, 4]
    assert sorted(ids("the chairs next to the table", cands)) == [2, 3]
    assert ids("the chair next to the bed", cands) == []
    assert ids("the lamp on the dining table", cands) == [5]
    assert ids("the table under the lamp", cands) == [1]
    assert ids("the largest chair", cands) == [4]
    assert ids("the big chair", cands) == [4]
    assert ids("the chair closest to the sofa", cands) in ([2], [3])
    assert ids("the chair farthest from the couch", cands) == [4]
    assert ids("the table between the sofa and the bed", cands) == [1]
    # looking from the bed toward the table, chair 3 (+y of the table) is on the right
    assert ids("the chair to the right of the table, seen from the bed", cands) == [3]
    assert ids("the chair to the left of the table, seen from the bed", cands) == [2]
    assert ids("the chair closest to me", cands, viewer=np.array([4.5, 4.0, 1.0])) == [4]
    assert ids("any purple sofa", cands) == []
    with pytest.raises(ReferringError, match="robot"):
        resolve("the chair closest to me", cands)


def test_instance_candidates_name_colours_from_points():
    rng = np.random.default_rng(0)
    pts = rng.random((300, 3)).astype(np.float32)
    noisy = np.clip(np.array(COLOR_PALETTE["red"]) + rng.normal(0, 12, (300, 3)), 0, 255).astype(np.uint8)
    inst = Instance(
        9, "diningtable", 0.8, OrientedBox3D((0.5, 0.5, 0.5), (1, 1, 1)), pts.min(0), pts.max(0), pts, noisy
    )
    (c,) = candidates_from_instances([inst])
    assert (c.cid, c.label, c.color) == (9, "table", "red")


# ----------------------------------------------------------------------------- engine


def test_snapshot_from_objects(snap):
    assert [i.instance_id for i in snap.instances] == [o.object_id for o in ROOM]
    for inst, obj in zip(snap.instances, ROOM):
        assert inst.box == obj.box and np.all(obj.box.contains(inst.points, 1e-4))
    assert [k.keyframe_id for k in snap.keyframes] == [0, 5]
    assert np.allclose(snap.T_world_camera_latest, snap.keyframe(5).T_world_camera)
    assert [c.color for c in candidates_from_instances(snap.instances)] == [o.color for o in ROOM]


def test_low_level_functions(snap):
    a, b = snap.instance(2), snap.instance(4)
    assert distance_between(a, b) == pytest.approx(np.linalg.norm([2.7, 2.4, 0.05]))
    assert (
        count_label(snap, "chairs") == 3 and count_label(snap, "dining tables") == 1 and count_label(snap, "sofa") == 1
    )
    assert floor_area(snap) == pytest.approx(20.0, rel=1e-3)
    T = snap.keyframe(5).T_world_camera  # at (1, 0, 1.5) looking along +y
    assert depth_in_camera(snap.instance(5), T) == pytest.approx(2.0)
    dist, ang = camera_motion(snap.keyframe(0).T_world_camera, T)
    assert dist == pytest.approx(1.0) and ang == pytest.approx(45.0)


def test_floor_area_ignores_sparse_outliers():
    objs = [G(1, "box", "red", (1.0, 1.0, 0.5), (0.5, 0.5, 1.0))]
    base = snapshot_from_objects(objs, room_bounds=((0, 0, 0), (4.0, 3.0, 2.0)))
    pts = np.concatenate([base.points, np.array([[40.0, 40.0, 0.0], [-9.0, 3.0, 1.0]], np.float32)])
    noisy = SceneSnapshot(0.0, "map", pts, np.zeros((len(pts), 3), np.uint8), base.instances, n_frames_integrated=1)
    assert floor_area(noisy) == pytest.approx(12.0, rel=1e-3)


@pytest.mark.parametrize(
    "question, short, kind, inst_ids",
    [
        ("How far is the brown chair from the lamp?", f"{np.linalg.norm([0.2, 0.7, 0.55]):.2f} m", "distance", (2, 5)),
        ("what's the distance between the couch and the bed", f"{np.linalg.norm([3.5, 1.0, 0.15]):.2f} m", "distance",
         (6, 7)),
        ("How many chairs are there?", "3", "count", (2, 3, 4)),
        ("how many red chairs are in the room", "2", "count", (3, 4)),
        ("How many sofas are in the room?", "1", "count", (6,)),
        ("How many tvs are in the room?", "0", "count", ()),
        ("How tall is the lamp?", "0.50 m", "height", (5,)),
        ("What is the height of the bed?", "0.60 m", "height", (7,)),
        ("How long is the couch?", "2.00 m", "length", (6,)),
        ("How far is the bed from me?", f"{np.linalg.norm([3.0, 1.0, -1.2]):.2f} m", "distance_camera", (7,)),
        ("How far is the chair farthest from the couch from the camera?", f"{np.linalg.norm([3.7, 3.7, -1.0]):.2f} m",
         "distance_camera", (4,)),
        ("How far is the chair farthest from the couch from the lamp?", f"{np.linalg.norm([2.9, 1.7, -0.5]):.2f} m",
         "distance", (4, 5)),
        ("Is the red chair next to the table to the left or right of the table, seen from the bed?", "right",
         "direction", (3, 1, 7)),
        ("Is the brown chair to the left or right of the table, seen from the camera?", "right", "direction", (2, 1)),
        ("Which is closer to the camera, the chair farthest from the couch or the lamp?", "the lamp", "depth_order",
         (5, 4)),
        # depth along the optical axis, not Euclidean distance: the bed is off to the side but shallower
        ("Which is closer to the camera, the bed or the lamp?", "the bed", "depth_order", (7, 5)),
        ("What is the floor area of the room?", "20.00 m²", "room_area", ()),
        ("How far did the camera move between frame 0 and frame 5?", "1.00 m", "camera_move", ()),
        ("How many degrees did the camera turn between frame 0 and frame 5?", "45.0 degrees", "camera_turn", ()),
    ],
)  # fmt: skip
def test_engine_answers(snap, question, short, kind, inst_ids):
    ans = SpatialEngine(snap).answer(question)
    assert (ans.short, ans.kind, ans.instance_ids) == (short, kind, inst_ids)
    assert ans.text.startswith(short)
    for i in inst_ids:
        assert f"<OBJ{i:03d}>" in ans.text
    if kind in ("distance", "height", "length", "distance_camera", "count"):
        assert ans.value == pytest.approx(float(short.split()[0]), abs=0.005)


def test_engine_viewer_override_changes_the_answer(snap):
    far = camera_at((4.5, 4.0, 1.5), 180.0)
    q = "How far is the bed from the camera?"
    assert SpatialEngine(snap).answer(q).short != SpatialEngine(snap, T_world_viewer=far).answer(q).short


@pytest.mark.parametrize(
    "question, match",
    [
        ("How far is the fridge from the bed?", "no object labelled 'refrigerator'"),
        ("What is the meaning of life?", "could not understand"),
        ("How far did the camera move between frame 0 and frame 3?", "frame 3 is not a keyframe"),
        ("How tall is the purple chair?", "no object in the map fits"),
        ("", "empty question"),
    ],
)
def test_engine_errors(snap, question, match):
    with pytest.raises(SpatialQueryError, match=match):
        SpatialEngine(snap).answer(question)


def test_engine_without_camera_pose_says_so():
    snap = snapshot_from_objects(ROOM)
    with pytest.raises(SpatialQueryError, match="pose is unknown"):
        SpatialEngine(snap).answer("How far is the bed from me?")


def test_every_coco_name_of_the_real_detector_parses_to_its_label(yolo_dir):
    """The shipped detector's class names (coco.names) survive canonicalisation, parsing and plurals."""
    names = [n.strip() for n in (yolo_dir / "coco.names").read_text().splitlines() if n.strip()]
    assert len(names) == 80
    mass_nouns = {"broccoli"}
    for name in names:
        label = canonical_label(name)
        assert canonical_label(label) == label, name
        assert parse_expression(f"the {name}").label == label, name
        if name not in mass_nouns:
            plural = parse_expression(f"the {pluralize(label)}")
            assert plural.label == label and plural.wants_many, name
    assert [canonical_label(n) for n in ("diningtable", "tvmonitor", "pottedplant", "sofa")] == [
        "table", "tv", "plant", "sofa"
    ]  # fmt: skip
    assert parse_expression("the orange lamp").color == "orange"


def test_engine_rejects_a_bad_viewer_pose(snap):
    with pytest.raises(ValueError, match="4x4"):
        SpatialEngine(snap, T_world_viewer=np.eye(3))
