"""The no-weights fallback backend: reply formats, routing, errors, on ground-truth snapshots."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from scene_vlm_ros.core.spatial import NO_MATCH_REPLY, multi_grounding_reply, snapshot_from_objects
from scene_vlm_ros.core.types import GroundTruthObject
from scene_vlm_ros.vlm.backends.fallback import FallbackBackend, extract_description, route_task
from scene_vlm_ros.vlm.types import (
    GenerationRequest,
    GenerationTimeout,
    ModelError,
    ModelUnavailableError,
    Task,
    VLMBackend,
)

G = GroundTruthObject
OBJECTS = [
    G(1, "diningtable", "brown", (2.0, 2.0, 0.375), (1.2, 0.8, 0.75)),
    G(2, "chair", "brown", (2.0, 1.3, 0.45), (0.5, 0.5, 0.9)),
    G(3, "chair", "red", (2.0, 2.7, 0.45), (0.5, 0.5, 0.9)),
    G(4, "chair", "red", (4.7, 3.7, 0.5), (0.6, 0.6, 1.0)),
    G(5, "chair", "blue", (0.4, 0.4, 0.45), (0.5, 0.5, 0.9)),
    G(12, "lamp", "yellow", (1.8, 2.0, 1.0), (0.3, 0.3, 0.5)),
    G(7, "couch", "green", (0.5, 2.5, 0.45), (0.9, 2.0, 0.9)),
    G(8, "tvmonitor", "black", (3.9, 0.2, 0.9), (1.0, 0.1, 0.6)),
]


def _cam(eye, target):
    z = np.subtract(target, eye) / np.linalg.norm(np.subtract(target, eye))
    x = np.cross(z, [0, 0, 1.0])
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
    T[:3, 3] = eye
    return T


@pytest.fixture(scope="module")
def snap():
    poses = {0: _cam((0.2, 3.9, 1.5), (2.0, 2.0, 0.5)), 3: _cam((4.8, 0.5, 1.5), (2.0, 2.0, 0.5))}
    return snapshot_from_objects(OBJECTS, room_bounds=((0, 0, 0), (5, 4, 2.5)), camera_poses=poses)


def ask(snap, task: Task, question: str, **meta) -> str:
    backend = FallbackBackend()
    backend.load()
    return backend.generate(GenerationRequest([], task, question, snap, metadata=meta), timeout_s=5.0)


def test_backend_identity():
    b = FallbackBackend()
    assert isinstance(b, VLMBackend) and b.name == "fallback" and b.needs_images is False and b.loaded


@pytest.mark.parametrize(
    "question, reply",
    [
        ("the brown chair next to the table", "<OBJ002>."),
        ("the red chair next to the dining table", "<OBJ003>."),
        ("the lamp on the table", "<OBJ012>."),
        ("the largest chair", "<OBJ004>."),
        ("the tv", "<OBJ008>."),
        ("the sofa", "<OBJ007>."),
        ('Share the ID of the object that best fits the description "the blue chair".', "<OBJ005>."),
        ("the chair closest to the camera", "<OBJ002>."),  # latest camera is frame 3, near (4.8, 0.5)
        ("the bed", NO_MATCH_REPLY),
        ("the purple lamp on the table", "<OBJ012>."),  # colour relaxed, relation kept
        ("the purple chair next to the tv", NO_MATCH_REPLY),  # no chair is next to the tv, whatever its colour
        ("xyzzy frobnicate", NO_MATCH_REPLY),
    ],
)
def test_grounding_replies(snap, question, reply):
    assert ask(snap, Task.GROUNDING, question) == reply


def test_grounding_viewer_frame(snap):
    # seen from frame 0 (near the couch) the closest chair is the red one at the table's far side
    assert ask(snap, Task.GROUNDING, "the chair closest to the camera", viewer_frame_id=0) == "<OBJ003>."
    assert ask(snap, Task.GROUNDING, "the chair closest to the camera", viewer_frame_id=3) == "<OBJ002>."
    with pytest.raises(ModelError, match="not a keyframe"):
        ask(snap, Task.GROUNDING, "the chair", viewer_frame_id=42)


@pytest.mark.parametrize(
    "question, reply",
    [
        ("the red chairs", "Yes. <OBJ003> and <OBJ004>."),
        ("chairs", "Yes. <OBJ002>, <OBJ003>, <OBJ004>, and <OBJ005>."),
        ("any green sofa", "Yes. <OBJ007>."),
        ("any purple chair", "No."),
        ("the chairs next to the table", "Yes. <OBJ002> and <OBJ003>."),
        ('Are there any objects fitting the description of "beds"? If so, kindly provide the IDs for those objects.',
         "No."),
    ],
)  # fmt: skip
def test_multi_grounding_replies(snap, question, reply):
    assert ask(snap, Task.MULTI_GROUNDING, question) == reply


def test_multi_reply_format():
    assert multi_grounding_reply([]) == "No."
    assert multi_grounding_reply([1]) == "Yes. <OBJ001>."
    assert multi_grounding_reply([1, 20]) == "Yes. <OBJ001> and <OBJ020>."
    assert multi_grounding_reply([1, 2, 3]) == "Yes. <OBJ001>, <OBJ002>, and <OBJ003>."


def test_spatial_replies_name_the_objects(snap):
    reply = ask(snap, Task.SPATIAL, "How far is the lamp from the blue chair?")
    d = np.linalg.norm(np.subtract((1.8, 2.0, 1.0), (0.4, 0.4, 0.45)))
    assert reply.startswith(f"{d:.2f} m (") and "<OBJ012>" in reply and "<OBJ005>" in reply
    assert ask(snap, Task.SPATIAL, "how many chairs are in the room?").startswith("4 (<OBJ002>")
    assert (
        ask(snap, Task.SPATIAL, "How far is the bed from the lamp?")
        == "Cannot answer: no object labelled 'bed' in the map."
    )


@pytest.mark.parametrize(
    "question, task",
    [
        ("How far is the lamp from the sofa?", Task.SPATIAL),
        ("how many chairs are there", Task.SPATIAL),
        ("Is the lamp to the left or right of the sofa, seen from the door?", Task.SPATIAL),
        ("What is the floor area of the room?", Task.SPATIAL),
        ("the red chairs", Task.MULTI_GROUNDING),
        ("any green sofa", Task.MULTI_GROUNDING),
        ("Are there any lamps on the table?", Task.MULTI_GROUNDING),
        ("all the chairs next to the table", Task.MULTI_GROUNDING),
        ("the brown chair next to the table", Task.GROUNDING),
        ("where is the glass on the table?", Task.GROUNDING),
        ('Share the ID of the object that best fits the description "the largest cabinet".', Task.GROUNDING),
    ],
)
def test_auto_routing(question, task):
    assert route_task(question) == task


def test_auto_answers(snap):
    assert ask(snap, Task.AUTO, "the red chairs") == "Yes. <OBJ003> and <OBJ004>."
    assert ask(snap, Task.AUTO, "the brown chair") == "<OBJ002>."
    assert ask(snap, Task.AUTO, "How tall is the lamp?").startswith("0.50 m (")


def test_extract_description():
    assert (
        extract_description('Share the ID of the object that best fits the description "the red chair".')
        == "the red chair"
    )
    assert extract_description("the red chair") == "the red chair"


@pytest.mark.parametrize("task", [Task.QA, Task.CAPTION])
def test_qa_and_caption_need_a_model(snap, task):
    with pytest.raises(ModelUnavailableError, match="configure model.backend"):
        ask(snap, task, "What colour is the sofa?")


def test_errors_without_snapshot_and_on_cancel(snap):
    b = FallbackBackend()
    with pytest.raises(ModelError, match="snapshot"):
        b.generate(GenerationRequest([], Task.GROUNDING, "the chair", None), timeout_s=1.0)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(GenerationTimeout):
        b.generate(GenerationRequest([], Task.GROUNDING, "the chair", snap), timeout_s=1.0, cancel=cancel)
