"""Prompt building: Chat-Scene templates, message layout, image sizes, targets, artifacts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from scene_vlm_ros.commands.bench_prompt import build_box_scene
from scene_vlm_ros.vlm.artifacts import write_prompt_artifacts
from scene_vlm_ros.vlm.prompts import (
    build_prompt,
    format_question,
    format_target,
    infer_task,
    obj_token,
)
from scene_vlm_ros.vlm.types import Task


@pytest.fixture(scope="module")
def room():
    return build_box_scene(n_orbit_keyframes=4)


def test_obj_token():
    assert obj_token(7) == "<OBJ007>"
    assert obj_token(12) == "<OBJ012>"
    assert obj_token(1234) == "<OBJ1234>"
    with pytest.raises(ValueError):
        obj_token(-1)


def test_chat_scene_templates():
    assert format_question(Task.GROUNDING, "the red chair") == (
        'Share the ID of the object that best fits the description "the red chair".'
    )
    assert format_question(Task.MULTI_GROUNDING, "red chairs") == (
        'Are there any objects fitting the description of "red chairs"? '
        "If so, kindly provide the IDs for those objects."
    )
    assert format_question(Task.CAPTION, "", object_id=12) == (
        "Describe the appearance of the <OBJ012>, then elaborate on its positioning relative to other objects "
        "in the scene."
    )
    assert format_question(Task.QA, "What color is the table?") == (
        "What color is the table? Answer the question using a single word or phrase."
    )
    assert format_question(Task.QA, "What is in front of me?", situation="I am sitting on the sofa.") == (
        "I am sitting on the sofa. What is in front of me? Answer the question using a single word or phrase."
    )
    assert format_question(Task.SPATIAL, "How far is the chair from the table in metres?") == (
        "How far is the chair from the table in metres?"
    )
    with pytest.raises(ValueError, match="empty question"):
        format_question(Task.GROUNDING, "  ")


@pytest.mark.parametrize(
    "question,task",
    [
        ("Are there any chairs near the table?", Task.MULTI_GROUNDING),
        ("What color is the table?", Task.QA),
        ("the red chair next to the table", Task.GROUNDING),
        ("where is the yellow box", Task.GROUNDING),
        ("Is the bin left of the chair", Task.QA),
    ],
)
def test_infer_task(question, task):
    assert infer_task(question) == task


def test_format_target_strings():
    assert format_target(Task.GROUNDING, [12]) == "<OBJ012>."
    assert format_target(Task.MULTI_GROUNDING, []) == "No."
    assert format_target(Task.MULTI_GROUNDING, [1]) == "Yes. <OBJ001>."
    assert format_target(Task.MULTI_GROUNDING, [1, 2]) == "Yes. <OBJ001> and <OBJ002>."
    assert format_target(Task.MULTI_GROUNDING, [1, 2, 3, 2]) == "Yes. <OBJ001>, <OBJ002>, and <OBJ003>."
    assert format_target(Task.QA, [], answer_text=" brown ") == "brown"
    with pytest.raises(ValueError, match="exactly one"):
        format_target(Task.GROUNDING, [1, 2])
    with pytest.raises(ValueError, match="answer_text"):
        format_target(Task.QA, [])


def test_build_prompt_layout_and_sizes(room):
    bundle = build_prompt(room, "the yellow box", Task.GROUNDING, n_frames=3, image_size=256)
    system, user = bundle.messages
    assert system["role"] == "system" and "<OBJ###>" in system["content"][0]["text"]
    assert "3 video frames" in system["content"][0]["text"]
    assert user["role"] == "user"
    images = [c["image"] for c in user["content"] if c["type"] == "image"]
    assert [c["type"] for c in user["content"]] == ["image"] * 4 + ["text"], "frames, then BEV, then text"
    assert user["content"][-1]["text"] == format_question(Task.GROUNDING, "the yellow box")
    assert len(bundle.frame_ids) == 3 and len(bundle.marked_frames) == 3
    for img in images:
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        assert max(img.shape[:2]) <= 256
    assert images[-1] is bundle.bev_image and images[-1].shape == (256, 256, 3)
    assert images[0].shape == (192, 256, 3), "320x240 frames capped to 256 on the longer side"
    # Markers on the BEV for every instance, frames carry their own placements.
    assert {p.instance_id for p in bundle.bev_placements} == {i.instance_id for i in room.instances}
    assert set(bundle.frame_placements) == set(bundle.frame_ids)
    assert set(bundle.timings_ms) == {"select", "bev", "markers", "total"}
    assert all(v >= 0 for v in bundle.timings_ms.values())


def test_build_prompt_tasks_and_validation(room):
    cap = build_prompt(room, "", Task.CAPTION, n_frames=1, object_id=4, image_size=128)
    assert "<OBJ004>" in cap.text
    assert cap.frame_ids == [3], "captioning prefers a frame that shows the object"
    with pytest.raises(ValueError, match="object_id"):
        build_prompt(room, "", Task.CAPTION, object_id=77)
    auto = build_prompt(room, "Are there any chairs?", Task.AUTO, n_frames=1, image_size=128)
    assert auto.task == Task.MULTI_GROUNDING
    with pytest.raises(TypeError):
        build_prompt(room, None, Task.QA)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="image_size"):
        build_prompt(room, "x", Task.QA, image_size=10)
    no_frames = build_prompt(room, "x", Task.QA, n_frames=0, image_size=128)
    assert [c["type"] for c in no_frames.messages[1]["content"]] == ["image", "text"]


def test_prompt_artifacts(room, tmp_path):
    result = write_prompt_artifacts(room, tmp_path, question="the blue cabinet", n_frames=2, image_size=128)
    doc = json.loads((tmp_path / "prompt.json").read_text())
    names = [c["image"] for c in doc["messages"][1]["content"] if c["type"] == "image"]
    assert names[-1] == "bev.png" and len(names) == 3
    for name in names:
        assert (tmp_path / name).is_file()
    bev = np.asarray(Image.open(tmp_path / "bev.png"))
    raw = np.asarray(Image.open(tmp_path / "bev_raw.png"))
    assert bev.shape == raw.shape == (128, 128, 3) and not np.array_equal(bev, raw)
    assert doc["frame_ids"] == result["frame_ids"] and len(result["frames"]) == 2
    assert doc["messages"][1]["content"][-1]["text"].endswith('"the blue cabinet".')


def test_bench_prompt_reports_percentiles():
    """The benchmark runs end to end on a small cloud (speed itself is never asserted)."""
    from scene_vlm_ros.commands.bench_prompt import bench_prompt

    r = bench_prompt(n_points=20_000, size_px=128, n_frames=2, repeats=2, frame_size=(160, 120))
    for name in ("bev", "markers", "prompt"):
        assert r[name]["n"] == 2 and 0 < r[name]["p50_ms"] <= r[name]["p95_ms"]
    assert r["n_points"] == 20_000 and r["n_frames"] == 2


@pytest.mark.parametrize(
    "request_text,description",
    [
        ("Are there any chairs near the table?", "chairs near the table"),
        ("where is the yellow box?", "the yellow box"),
        ("Find the red chair.", "the red chair"),
        ("the brown table", "the brown table"),
    ],
)
def test_requests_become_quoted_descriptions(request_text, description):
    task = infer_task(request_text)
    text = format_question(task, request_text)
    assert f'"{description}"' in text
