"""Instance association, persistent IDs, merge/split events, boxes, and the mapping metrics."""

from __future__ import annotations

import numpy as np
import pytest

from scene_vlm_ros.core.geometry import box_iou, rot_z
from scene_vlm_ros.core.instances import InstanceMap, InstanceParams, Observation, oriented_box
from scene_vlm_ros.core.types import GroundTruthObject, Instance, OrientedBox3D
from scene_vlm_ros.eval.mapping_metrics import id_switches, instance_recall, match_instances, oracle_ceiling


def box_surface(center, size, yaw=0.0, n=1500, seed=0) -> np.ndarray:
    """(n, 3) points on the surface of a yawed box (world frame)."""
    rng = np.random.default_rng(seed)
    half = np.asarray(size) / 2.0
    pts = rng.uniform(-1, 1, (n, 3)) * half
    axis = rng.integers(0, 3, n)
    sign = rng.choice([-1.0, 1.0], n)
    pts[np.arange(n), axis] = sign * half[axis]
    return (pts @ rot_z(yaw).T + np.asarray(center)).astype(np.float32)


def obs(points, label="", score=0.0, source="detector", stamp=0.0, upstream=None) -> Observation:
    return Observation(points, np.full((len(points), 3), 100, np.uint8), label, score, source, stamp, upstream)


def test_oriented_box_recovers_centre_size_and_yaw():
    pts = box_surface((1.0, 2.0, 0.5), (1.2, 0.6, 1.0), yaw=0.3, n=4000)
    b = oriented_box(pts)
    assert box_iou(b, OrientedBox3D((1.0, 2.0, 0.5), (1.2, 0.6, 1.0), 0.3)) > 0.9
    assert abs(b.yaw - 0.3) < 0.03 or abs(abs(b.yaw - 0.3) - np.pi / 2) < 0.03


def test_reobservations_keep_ids_and_accumulate_labels():
    m = InstanceMap(InstanceParams())
    chair = box_surface((0, 0, 0.45), (0.5, 0.5, 0.9))
    table = box_surface((2, 0, 0.4), (1.2, 0.8, 0.8))
    a = m.observe(obs(chair[:700], "chair", 0.8, stamp=1.0))
    b = m.observe(obs(table[:700], "diningtable", 0.6, stamp=1.0))
    assert a != b
    # Other views of the same objects (different points, partial) associate to the same IDs.
    assert m.observe(obs(chair[700:], "chair", 0.6, stamp=2.0)) == a
    assert m.observe(obs(table[700:], "", 0.0, stamp=3.0)) == b
    # A label vote for something else on the same spot does not steal the ID or flip the label.
    assert m.observe(obs(chair[::3], "sofa", 0.5, stamp=4.0)) == a
    insts = {i.instance_id: i for i in m.instances()}
    assert insts[a].label == "chair" and insts[a].score == pytest.approx(0.7)
    assert insts[a].n_observations == 3
    assert insts[a].first_seen_s == 1.0 and insts[a].last_seen_s == 4.0
    assert insts[b].label == "diningtable"
    assert box_iou(insts[a].box, OrientedBox3D((0, 0, 0.45), (0.5, 0.5, 0.9))) > 0.8
    assert [e["type"] for e in m.events] == ["create", "create"]
    # Too few points: no instance.
    assert m.observe(obs(chair[:5], "chair", 0.9)) is None


def test_mask_upstream_ids_win_over_geometry():
    m = InstanceMap(InstanceParams())
    left = box_surface((0, 0, 0.2), (0.4, 0.4, 0.4))
    right = box_surface((0.42, 0, 0.2), (0.4, 0.4, 0.4), seed=1)  # touching boxes
    ia = m.observe(obs(left, "box", 1.0, "mask", upstream=7))
    ib = m.observe(obs(right, "box", 1.0, "mask", upstream=8))
    assert ia != ib
    assert m.observe(obs(right[::2], "box", 1.0, "mask", upstream=8)) == ib
    assert m.merge_overlapping(1.0) == []


def test_duplicates_merge_with_a_logged_event():
    m = InstanceMap(InstanceParams(assoc_min_overlap=0.99, assoc_max_centroid_m=0.0))  # force a duplicate
    pts = box_surface((0, 0, 0.5), (0.6, 0.6, 1.0), n=3000)
    first = m.observe(obs(pts[:1500], "chair", 0.9))
    second = m.observe(obs(pts[1000:], "chair", 0.9, stamp=5.0))
    assert first != second and len(m) == 2
    merged = m.merge_overlapping(5.0)
    assert merged == [(first, second)]
    assert len(m) == 1 and m.instances()[0].instance_id == first
    ev = m.events[-1]
    assert ev == {"type": "merge", "stamp_s": 5.0, "kept": first, "absorbed": second}


def test_geometry_ids_are_stable_and_splits_are_recorded():
    m = InstanceMap(InstanceParams())
    a = box_surface((0, 0, 0.4), (0.6, 0.6, 0.8))
    b = box_surface((0.8, 0, 0.4), (0.6, 0.6, 0.8), seed=2)
    cols = lambda p: np.zeros((len(p), 3), np.uint8)  # noqa: E731
    # First the two objects are seen as one segment (touching in the early map).
    m.update_geometry([(np.concatenate([a, b]), cols(np.concatenate([a, b])))], 1.0)
    (only,) = m.instances()
    # The map grows, same object plus a new one: the ID stays.
    c = box_surface((3, 3, 0.3), (0.5, 0.5, 0.6), seed=3)
    m.update_geometry([(np.concatenate([a, b]), cols(np.concatenate([a, b]))), (c, cols(c))], 2.0)
    ids = [i.instance_id for i in m.instances()]
    assert only.instance_id in ids and len(ids) == 2
    # Then it separates into two segments: the larger part keeps the ID, the other is a logged split.
    m.update_geometry([(a, cols(a)), (b[:1200], cols(b[:1200])), (c, cols(c))], 3.0)
    assert len(m) == 3
    split = [e for e in m.events if e["type"] == "split"]
    assert len(split) == 1 and split[0]["parent"] == only.instance_id and split[0]["stamp_s"] == 3.0
    kept = next(i for i in m.instances() if i.instance_id == only.instance_id)
    assert np.linalg.norm(kept.center[:2] - [0, 0]) < 0.1
    # A segment that disappears for good is removed after the miss limit, with an event.
    m.update_geometry([(a, cols(a)), (b, cols(b))], 4.0)
    m.update_geometry([(a, cols(a)), (b, cols(b))], 5.0)
    assert len(m) == 2
    assert any(e["type"] == "removed" for e in m.events)


def test_persistence_round_trip():
    m = InstanceMap(InstanceParams())
    m.observe(obs(box_surface((0, 0, 0.4), (0.6, 0.6, 0.8)), "chair", 0.7, "mask", 1.0, 3))
    m.observe(obs(box_surface((2, 0, 0.4), (0.6, 0.6, 0.8), seed=5), "tv", 0.5, "detector", 2.0))
    meta, arrays = m.to_arrays()
    back = InstanceMap.from_arrays(InstanceParams(), meta, arrays)
    for x, y in zip(m.instances(), back.instances()):
        assert x.instance_id == y.instance_id and x.label == y.label and x.source == y.source
        np.testing.assert_allclose(x.points, y.points)
    assert back.next_id == m.next_id and back.events == m.events


def _inst(iid, center, size, yaw=0.0) -> Instance:
    b = OrientedBox3D(center, size, yaw)
    lo, hi = b.aabb()
    return Instance(iid, "", 0.0, b, lo, hi, np.zeros((0, 3)), np.zeros((0, 3)))


def test_metrics():
    gt = [
        GroundTruthObject(1, "chair", "", (0, 0, 0.5), (1, 1, 1)),
        GroundTruthObject(2, "tv", "", (3, 0, 1), (1, 0.2, 0.6)),
    ]
    good = _inst(10, (0, 0, 0.5), (1, 1, 1))
    shifted = _inst(11, (0.4, 0, 0.5), (1, 1, 1))  # IoU = 0.6 / 1.4
    rec = instance_recall([good], gt, (0.25, 0.5))
    assert rec == {0.25: 0.5, 0.5: 0.5}
    assert instance_recall([shifted], gt, (0.25, 0.5)) == {0.25: 0.5, 0.5: 0.0}
    # One-to-one: a single instance cannot recall two objects; the oracle ceiling is per object.
    twin = [GroundTruthObject(i, "a", "", (0, 0, 0.5), (1, 1, 1)) for i in (1, 2)]
    assert instance_recall([good], twin, (0.5,)) == {0.5: 0.5}
    assert oracle_ceiling([good], twin, (0.5,)) == {0.5: 1.0}
    assert instance_recall([], gt, (0.25,)) == {0.25: 0.0}
    with pytest.raises(ValueError):
        instance_recall([good], [], (0.25,))
    assert match_instances([shifted, good], gt, 0.25) == {1: 10}
    assert id_switches([{1: 10}, {1: 10, 2: 4}, {}, {1: 11}, {1: 11, 2: 4}, {1: 10}]) == 2


def test_geometry_segment_gives_a_detector_instance_its_shape():
    m = InstanceMap(InstanceParams())
    chair = box_surface((1.0, 1.0, 0.45), (0.5, 0.5, 0.9), n=3000)
    # A lifted detection: half the chair plus background points behind it (box-shaped 2D region).
    background = box_surface((1.0, 1.6, 0.45), (0.5, 0.1, 0.9), n=800, seed=4)
    iid = m.observe(obs(np.concatenate([chair[:1200], background]), "chair", 0.6, "detector", 1.0))
    before = m.instances()[0]
    assert before.box.size[1] > 0.6  # polluted by the background
    cols = np.zeros((len(chair), 3), np.uint8)
    m.update_geometry([(chair, cols)], 2.0)
    (after,) = m.instances()
    assert after.instance_id == iid and after.label == "chair" and after.source == "detector"
    assert box_iou(after.box, OrientedBox3D((1.0, 1.0, 0.45), (0.5, 0.5, 0.9))) > 0.8
