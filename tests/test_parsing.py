"""Answer parsing: round trip with format_target, tolerant id spellings, unknown ids, yes/no."""

from __future__ import annotations

import numpy as np
import pytest

from scene_vlm_ros.core.types import Instance, OrientedBox3D, SceneSnapshot
from scene_vlm_ros.vlm.parsing import extract_ids, instances_for, parse_answer
from scene_vlm_ros.vlm.prompts import format_target
from scene_vlm_ros.vlm.types import Task

IDS = (0, 1, 2, 3, 7, 12, 105)


@pytest.fixture(scope="module")
def snap() -> SceneSnapshot:
    insts = []
    for i in IDS:
        box = OrientedBox3D((float(i), 0.0, 0.5), (0.5, 0.5, 1.0))
        lo, hi = box.aabb()
        insts.append(Instance(i, f"thing{i}", 1.0, box, lo, hi, np.zeros((0, 3)), np.zeros((0, 3))))
    return SceneSnapshot(0.0, "map", np.zeros((0, 3)), np.zeros((0, 3)), instances=tuple(insts))


@pytest.mark.parametrize("target", [[12], [0], [105]])
def test_grounding_round_trip(snap, target):
    text = format_target(Task.GROUNDING, target)
    parsed = parse_answer(text, Task.GROUNDING, snap)
    assert parsed.instance_ids == tuple(target) and parsed.unknown_ids == () and parsed.yes_no is None


@pytest.mark.parametrize("target", [[], [1], [1, 2], [1, 2, 3], [105, 7, 0, 12]])
def test_multi_grounding_round_trip(snap, target):
    text = format_target(Task.MULTI_GROUNDING, target)
    parsed = parse_answer(text, Task.MULTI_GROUNDING, snap)
    assert parsed.instance_ids == tuple(target)
    assert parsed.yes_no is bool(target)


@pytest.mark.parametrize(
    "text,ids",
    [
        ("<OBJ12>", [12]),
        ("OBJ 12.", [12]),
        ("OBJ012", [12]),
        ("obj_012", [12]),
        ("It is object 12.", [12]),
        ("object id 7", [7]),
        ("obj#12", [12]),
        ("#12 and #7", [12, 7]),
        ("ID 12", [12]),
        ("id: 3", [3]),
        ("< OBJ 007 >", [7]),
        ("The answer is <OBJ003>, not <obj003> or OBJ 3.", [3]),
    ],
)
def test_tolerant_variants(snap, text, ids):
    assert list(parse_answer(text, Task.GROUNDING, snap).instance_ids) == ids


def test_bare_numbers_are_not_ids(snap):
    parsed = parse_answer("2 chairs.", Task.QA, snap)
    assert parsed.instance_ids == () and parsed.answer == "2 chairs"
    assert extract_ids("there are 3 of them, 12 in total") == []


def test_unknown_ids_reported_not_turned_into_instances(snap):
    parsed = parse_answer("Yes. <OBJ001>, <OBJ099>, and <OBJ012>.", Task.MULTI_GROUNDING, snap)
    assert parsed.instance_ids == (1, 12) and parsed.unknown_ids == (99,)
    assert [i.instance_id for i in instances_for(parsed, snap)] == [1, 12]


def test_yes_no_and_free_text(snap):
    no = parse_answer("No.", Task.MULTI_GROUNDING, snap)
    assert no.instance_ids == () and no.yes_no is False
    contradictory = parse_answer("No. <OBJ001>.", Task.MULTI_GROUNDING, snap)
    assert contradictory.instance_ids == () and contradictory.yes_no is False
    implicit = parse_answer("<OBJ002> and <OBJ003>.", Task.MULTI_GROUNDING, snap)
    assert implicit.instance_ids == (2, 3) and implicit.yes_no is True
    qa = parse_answer("yes", Task.QA, snap)
    assert qa.yes_no is True and qa.answer == "yes"
    qa2 = parse_answer("Brown.", Task.QA, snap)
    assert qa2.answer == "Brown" and qa2.yes_no is None
    assert parse_answer("<OBJ003>", Task.QA, None).instance_ids == (3,)  # no snapshot: no existence check
    with pytest.raises(TypeError):
        parse_answer(None, Task.QA, snap)  # type: ignore[arg-type]
