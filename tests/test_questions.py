"""Question generation from ground truth, verified against the geometry that generated it.

Three hand-made layouts (living room, bedroom, office with COCO detector labels and yawed boxes)
with camera poses. Every generated question is checked independently of the generator: grounding
through the resolver (exactly the target), multi-grounding sets and counts recomputed from the
object list, metric answers recomputed from the boxes here, and finally the spatial engine and the
fallback backend, run on ``snapshot_from_objects(objects)``, must give the generated answer.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from scene_vlm_ros.core.referring import candidates_from_objects, canonical_label, resolve
from scene_vlm_ros.core.spatial import SpatialEngine, snapshot_from_objects
from scene_vlm_ros.core.types import CameraIntrinsics, GroundTruthObject
from scene_vlm_ros.datasets.questions import TASKS, generate_questions, read_questions, write_questions
from scene_vlm_ros.vlm.backends.fallback import FallbackBackend
from scene_vlm_ros.vlm.types import GenerationRequest, Task

logger = logging.getLogger(__name__)

G = GroundTruthObject
INTR = CameraIntrinsics(640, 480, 525.0, 525.0, 319.5, 239.5)


def look_at(eye, target) -> np.ndarray:
    """T_world_camera (optical frame: x right, y down, z forward) of a camera at ``eye`` looking at ``target``."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], axis=1)
    T[:3, 3] = eye
    return T


LIVING = [
    G(1, "table", "brown", (2.5, 2.0, 0.375), (1.4, 0.8, 0.75)),
    G(2, "chair", "brown", (2.5, 1.2, 0.45), (0.5, 0.5, 0.9)),
    G(3, "chair", "red", (2.5, 2.8, 0.45), (0.5, 0.5, 0.9)),
    G(4, "chair", "red", (4.4, 3.4, 0.475), (0.6, 0.6, 0.95)),
    G(5, "lamp", "yellow", (2.2, 2.0, 1.0), (0.3, 0.3, 0.5)),
    G(6, "sofa", "green", (0.6, 2.0, 0.45), (0.9, 2.0, 0.9)),
    G(7, "tv", "black", (4.85, 1.5, 0.9), (0.1, 1.2, 0.7)),
    G(8, "plant", "green", (0.4, 0.4, 0.4), (0.4, 0.4, 0.8)),
    G(9, "trash can", "gray", (4.6, 0.4, 0.3), (0.3, 0.3, 0.6)),
    G(10, "cabinet", "white", (1.5, 3.75, 0.5), (1.0, 0.5, 1.0)),
    G(11, "cabinet", "brown", (3.3, 3.75, 0.4), (0.7, 0.45, 0.8)),
]
BEDROOM = [
    G(1, "bed", "blue", (2.0, 2.6, 0.3), (1.6, 2.0, 0.6)),
    G(2, "nightstand", "white", (0.9, 3.3, 0.25), (0.45, 0.4, 0.5)),
    G(3, "nightstand", "brown", (3.1, 3.3, 0.25), (0.45, 0.4, 0.5)),
    G(4, "lamp", "white", (0.9, 3.3, 0.7), (0.25, 0.25, 0.4)),
    G(5, "lamp", "orange", (3.1, 3.3, 0.65), (0.2, 0.2, 0.3)),
    G(6, "cabinet", "brown", (3.6, 0.5, 1.0), (1.2, 0.6, 2.0)),
    G(7, "desk", "white", (0.6, 0.8, 0.375), (1.2, 0.6, 0.75)),
    G(8, "chair", "black", (0.9, 1.35, 0.45), (0.5, 0.5, 0.9)),
    G(9, "laptop", "gray", (0.5, 0.8, 0.76), (0.35, 0.25, 0.02)),
]
OFFICE = [  # COCO spellings as a detector would label them; yawed boxes
    G(1, "diningtable", "beige", (3.0, 2.5, 0.37), (2.0, 1.0, 0.74), 0.5),
    G(2, "chair", "black", (2.35, 1.75, 0.45), (0.5, 0.5, 0.9), 0.5),
    G(3, "chair", "black", (3.6, 3.2, 0.45), (0.5, 0.5, 0.9), 0.5),
    G(4, "chair", "blue", (5.3, 0.6, 0.5), (0.7, 0.7, 1.0)),
    G(5, "tvmonitor", "black", (3.2, 2.6, 0.98), (0.6, 0.2, 0.48), 0.5),
    G(6, "pottedplant", "green", (5.5, 4.4, 0.5), (0.5, 0.5, 1.0)),
    G(7, "couch", "gray", (0.6, 3.5, 0.45), (0.9, 2.2, 0.9)),
    G(8, "book", "red", (2.5, 2.2, 0.76), (0.25, 0.2, 0.04), 0.3),
    G(9, "cabinet", "white", (5.6, 2.2, 0.6), (0.5, 1.2, 1.2)),
]
LAYOUTS = {
    "living": (
        LIVING,
        (5.0, 4.0, 2.7),
        {
            0: ((0.3, 0.3, 1.5), (2.5, 2.0, 0.5)),
            1: ((4.7, 0.3, 1.4), (2.0, 2.5, 0.4)),
            2: ((2.5, 3.9, 1.6), (2.5, 1.0, 0.5)),
        },
    ),
    "bedroom": (
        BEDROOM,
        (4.2, 4.0, 2.6),
        {5: ((2.0, 0.2, 1.5), (2.0, 3.0, 0.4)), 9: ((4.0, 1.5, 1.5), (1.0, 3.0, 0.5))},
    ),
    "office": (
        OFFICE,
        (6.0, 5.0, 3.0),
        {
            0: ((0.3, 0.3, 1.6), (3.0, 2.5, 0.6)),
            4: ((5.8, 4.8, 1.6), (3.0, 2.0, 0.6)),
            7: ((0.3, 4.7, 1.6), (4.0, 1.0, 0.5)),
        },
    ),
}


def _poses(spec: dict) -> dict[int, np.ndarray]:
    return {k: look_at(eye, tgt) for k, (eye, tgt) in spec.items()}


def _gen(name: str, seed: int = 0, max_per_task: int = 1000) -> tuple[list[G], dict, list[dict]]:
    objects, room, cams = LAYOUTS[name]
    poses = _poses(cams)
    return objects, poses, generate_questions(objects, room, poses, INTR, seed=seed, max_per_task=max_per_task)


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def generated(request):
    objects, poses, recs = _gen(request.param)
    return request.param, objects, poses, recs


def _by_id(objects):
    return {o.object_id: o for o in objects}


def test_records_have_the_schema_and_every_task(generated):
    name, _, _, recs = generated
    tasks = {r["task"] for r in recs}
    assert tasks == set(TASKS)
    for r in recs:
        assert set(r) == {"id", "task", "question", "answer", "target_ids", "frame_ids", "family", "value"}
        assert isinstance(r["question"], str) and r["question"] and isinstance(r["answer"], str)
        assert all(isinstance(t, int) for t in r["target_ids"] + r["frame_ids"])
    assert len({r["id"] for r in recs}) == len(recs)
    capped = _gen(name, max_per_task=7)[2]
    assert all(sum(r["task"] == t for r in capped) == 7 for t in TASKS)


def test_deterministic_per_seed_and_seed_changes_selection():
    a = _gen("living", seed=3, max_per_task=8)[2]
    b = _gen("living", seed=3, max_per_task=8)[2]
    c = _gen("living", seed=4, max_per_task=8)[2]
    assert a == b
    assert [r["question"] for r in a] != [r["question"] for r in c]


def test_grounding_questions_resolve_to_exactly_their_target(generated):
    _, objects, poses, recs = generated
    cands = candidates_from_objects(objects)
    families = set()
    for r in (r for r in recs if r["task"] == "grounding"):
        viewer = poses[r["frame_ids"][0]][:3, 3] if r["frame_ids"] else None
        assert [m.cid for m in resolve(r["question"], cands, viewer)] == r["target_ids"], r
        assert len(r["target_ids"]) == 1 and r["answer"] == f"<OBJ{r['target_ids'][0]:03d}>."
        assert r["question"].startswith("the ")
        families.add(r["family"])
    assert len(families) >= 4, families


def test_grounding_relations_hold_in_the_geometry(generated):
    """Independent checks of relation families (written from the boxes, not the resolver)."""
    _, objects, _, recs = generated
    by = _by_id(objects)
    for r in (r for r in recs if r["task"] == "grounding"):
        t = by[r["target_ids"][0]]
        q = r["question"]
        label = canonical_label(t.label)
        assert label in q, (label, q)
        if r["family"] == "on":
            supports = [
                o
                for o in objects
                if o is not t and abs((t.center[2] - t.size[2] / 2) - (o.center[2] + o.size[2] / 2)) < 0.1
            ]
            assert any(canonical_label(o.label) in q.split(" on ")[1] for o in supports), q
        if r["family"] == "next_to" and all(o.yaw == 0.0 for o in objects):
            anchor = _named(objects, q.split(" next to ")[1])
            gap = np.maximum(np.abs(np.subtract(t.center[:2], anchor.center[:2]))
                             - (np.add(t.size[:2], anchor.size[:2])) / 2, 0.0)  # fmt: skip
            assert np.linalg.norm(gap) <= 0.5, q
        if r["family"] == "left_right":
            rest = q.split(" of ", 1)[1]
            anchor, viewer = (_named(objects, p) for p in rest.split(", seen from "))
            assert _yaw_free_side(t.center, anchor.center, viewer.center) in q, q
        if r["family"] == "between":
            a, b = (_named(objects, p) for p in q.split(" between ")[1].split(" and "))
            ab, at = np.subtract(b.center[:2], a.center[:2]), np.subtract(t.center[:2], a.center[:2])
            assert 0.0 < ab @ at / (ab @ ab) < 1.0, q
        if r["family"] == "size_superlative" and "largest" in q:
            same = [o for o in objects if canonical_label(o.label) == label]
            assert np.prod(t.size) == max(np.prod(o.size) for o in same)


def _named(objects, phrase: str) -> G:
    """The one object a "the [colour] <label>" phrase names (checked here without the resolver)."""
    words = phrase.removeprefix("the ").split()
    full, rest = " ".join(words), " ".join(words[1:])
    hits = [
        o
        for o in objects
        if canonical_label(o.label) == full or (o.color == words[0] and canonical_label(o.label) == rest)
    ]
    assert len(hits) == 1, (phrase, hits)
    return hits[0]


def _independent_multi_set(objects, question: str) -> set[int] | None:
    """Targets of category/colour multi questions computed here from labels and colours."""
    words = question.split()
    if len(words) > 3 or words[0] not in ("the", "any"):
        return None
    colors = {"red", "brown", "green", "black", "white", "blue", "gray", "yellow", "orange", "purple", "pink", "beige"}
    color = words[1] if words[1] in colors and len(words) == 3 else None
    noun = " ".join(words[2:] if color else words[1:])
    return {
        o.object_id for o in objects
        if canonical_label(o.label) == canonical_label(noun) and (color is None or o.color == color)
    }  # fmt: skip


def test_multi_grounding_sets_include_zero_and_several(generated):
    _, objects, _, recs = generated
    cands = candidates_from_objects(objects)
    multi = [r for r in recs if r["task"] == "multi_grounding"]
    sizes = {len(r["target_ids"]) for r in multi}
    assert 0 in sizes and max(sizes) >= 2
    for r in multi:
        assert sorted(m.cid for m in resolve(r["question"], cands)) == r["target_ids"]
        indep = _independent_multi_set(objects, r["question"])
        if indep is not None and r["family"] != "zero_category":
            assert indep == set(r["target_ids"]), r
        if r["family"].startswith("zero"):
            assert r["target_ids"] == [] and r["answer"] == "No."
        else:
            assert r["answer"].startswith("Yes. <OBJ")


def _yaw_free_side(a, b, viewer) -> str:
    fx, fy = b[0] - viewer[0], b[1] - viewer[1]
    dx, dy = a[0] - b[0], a[1] - b[1]
    return "left" if fx * dy - fy * dx > 0 else "right"


def test_spatial_and_qa_answers_recomputed_from_boxes(generated):
    name, objects, poses, recs = generated
    by = _by_id(objects)
    room = LAYOUTS[name][1]
    checked = set()
    for r in (r for r in recs if r["task"] in ("qa", "spatial")):
        fam, ids = r["family"], r["target_ids"]
        c = [np.asarray(by[i].center) for i in ids]
        if fam in ("count", "count_color"):
            noun = r["question"].removeprefix("How many ").removesuffix(" are in the room?").split()
            color = noun[0] if fam == "count_color" else None
            label = canonical_label(" ".join(noun[1:] if color else noun))
            n = sum(canonical_label(o.label) == label and (color is None or o.color == color) for o in objects)
            assert r["answer"] == str(n) and r["value"] == n
        elif fam == "distance":
            assert r["answer"] == f"{np.sqrt(((c[0] - c[1]) ** 2).sum()):.2f} m"
        elif fam == "height":
            assert r["answer"] == f"{by[ids[0]].size[2]:.2f} m"
        elif fam == "length":
            assert r["answer"] == f"{max(by[ids[0]].size[:2]):.2f} m"
        elif fam == "room_area":
            assert r["value"] == pytest.approx(room[0] * room[1])
        elif fam == "direction":
            assert r["answer"] == _yaw_free_side(c[0], c[1], c[2])
        elif fam == "direction_camera":
            assert r["answer"] == _yaw_free_side(c[0], c[1], poses[r["frame_ids"][0]][:3, 3])
        elif fam == "distance_camera":
            T = poses[r["frame_ids"][0]]
            assert r["answer"] == f"{np.linalg.norm(c[0] - T[:3, 3]):.2f} m"
            p = (np.linalg.inv(T) @ np.append(c[0], 1.0))[:3]
            u, v = INTR.fx * p[0] / p[2] + INTR.cx, INTR.fy * p[1] / p[2] + INTR.cy
            assert p[2] > 0 and 0 <= u < INTR.width and 0 <= v < INTR.height  # only objects the frame shows
        elif fam == "depth_order":
            T = poses[r["frame_ids"][0]]
            depth = [(np.linalg.inv(T) @ np.append(p, 1.0))[2] for p in c]
            assert depth[0] < depth[1] and r["answer"] in r["question"]
        elif fam in ("camera_move", "camera_turn"):
            Ta, Tb = (poses[f] for f in r["frame_ids"])
            if fam == "camera_move":
                assert r["answer"] == f"{np.linalg.norm(Tb[:3, 3] - Ta[:3, 3]):.2f} m"
            else:
                ang = np.degrees(Rotation.from_matrix(Ta[:3, :3].T @ Tb[:3, :3]).magnitude())
                assert r["answer"] == f"{ang:.1f} degrees"
        else:
            raise AssertionError(f"unchecked family {fam}")
        checked.add(fam)
    assert {"count", "distance", "height", "room_area", "direction", "distance_camera", "camera_move"} <= checked


def _snapshot(name: str, objects, poses):
    room = LAYOUTS[name][1]
    return snapshot_from_objects(objects, room_bounds=((0.0, 0.0, 0.0), room), camera_poses=poses, intrinsics=INTR)


def test_engine_and_fallback_reproduce_every_generated_answer(generated):
    name, objects, poses, recs = generated
    snap = _snapshot(name, objects, poses)
    backend = FallbackBackend()
    backend.load()
    engine_ok = fallback_ok = n_engine = n_fallback = 0
    failures = []
    for r in recs:
        frame = r["frame_ids"][0] if r["frame_ids"] and r["family"] not in ("camera_move", "camera_turn") else None
        meta = {"viewer_frame_id": frame} if frame is not None else {}
        if r["task"] in ("qa", "spatial"):
            n_engine += 1
            ans = SpatialEngine(snap, T_world_viewer=poses[frame] if frame is not None else None).answer(r["question"])
            ok = ans.short == r["answer"]
            engine_ok += ok
            if not ok:
                failures.append(("engine", r, ans))
        if r["task"] in ("grounding", "multi_grounding", "spatial"):
            n_fallback += 1
            task = Task(r["task"])
            reply = backend.generate(GenerationRequest([], task, r["question"], snap, metadata=meta), timeout_s=5.0)
            ok = reply == r["answer"] if task != Task.SPATIAL else reply.startswith(r["answer"] + " (")
            fallback_ok += ok
            if not ok:
                failures.append(("fallback", r, reply))
    logger.info("%s: engine %d/%d, fallback %d/%d", name, engine_ok, n_engine, fallback_ok, n_fallback)
    print(f"{name}: engine {engine_ok}/{n_engine}, fallback {fallback_ok}/{n_fallback}")
    assert not failures, failures[:5]


def test_auto_routing_reproduces_answers(generated):
    """Task.AUTO on the plain question text picks the right family for generated questions."""
    name, objects, poses, recs = generated
    snap = _snapshot(name, objects, poses)
    backend = FallbackBackend()
    wrong = []
    for r in recs:
        if r["task"] == "qa" or r["frame_ids"]:
            continue  # QA is for VLMs; frame-bound questions need viewer_frame_id (tested above)
        reply = backend.generate(GenerationRequest([], Task.AUTO, r["question"], snap), timeout_s=5.0)
        ok = reply.startswith(r["answer"] + " (") if r["task"] == "spatial" else reply == r["answer"]
        if not ok:
            wrong.append((r["task"], r["question"], r["answer"], reply))
    assert not wrong, wrong[:5]


def test_write_read_roundtrip_and_bad_files(tmp_path):
    recs = _gen("bedroom", max_per_task=5)[2]
    path = write_questions(recs, tmp_path / "bedroom.queries.json")
    assert read_questions(path) == recs
    bad = tmp_path / "bad.queries.json"
    bad.write_text(json.dumps([{"id": "x"}]))
    with pytest.raises(ValueError, match="lacks"):
        read_questions(bad)
    with pytest.raises(FileNotFoundError):
        read_questions(tmp_path / "missing.queries.json")


def test_bad_inputs_raise_specific_errors():
    with pytest.raises(ValueError, match="unique"):
        generate_questions([LIVING[0], LIVING[0]], (5, 4, 3))
    with pytest.raises(ValueError, match="room_size"):
        generate_questions(LIVING, (5, -4, 3))
    with pytest.raises(ValueError, match="4x4"):
        generate_questions(LIVING, (5, 4, 3), camera_poses={0: np.eye(3)})
