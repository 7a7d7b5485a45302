"""Prompt profiles: the ``gpt4scene`` profile reproduces GPT4Scene's released evaluation input.

The fixture below was written by hand from reading GPT4Scene's ``evaluate/qwen2_vl.py``,
``evaluate/val_dataset.py``, ``evaluate/configs/eval_configs.py`` and the Chat-Scene annotation
scripts their annotation files come from (``preprocess/prepare_{scanrefer,multi3dref,scan2cap,
scanqa,sqa3d}_annos.py`` and ``prompts/prompts.py``):

- ``bulid_message`` puts every image of ``bev_mf_paths`` (32 marked frames, then the marked BEV:
  ``selected_images_mark_3D_val_32.json``) into ONE user turn, followed by the prompt text; there is
  no system message, so Qwen2-VL's chat template adds its default "You are a helpful assistant.";
- ``preprocess_image_nearest`` caps the longer side at ``config.resolution = 512``;
- ScanRefer / Multi3DRefer prompts quote the description with one final punctuation mark removed;
  ScanQA appends " Answer the question using a single word or phrase."; SQA3D prefixes the
  situation; Scan2Cap names the object as ``<OBJ###>``.
"""

from __future__ import annotations

import pytest

from scene_vlm_ros.commands.bench_prompt import build_box_scene
from scene_vlm_ros.vlm.engine import QueryEngine, QueryRequest
from scene_vlm_ros.vlm.prompts import (
    DEFAULT_PROFILE,
    PROMPT_PROFILES,
    PromptProfile,
    build_prompt,
    format_question,
    get_profile,
)
from scene_vlm_ros.vlm.types import GenerationRequest, Task, VLMBackend

# (task, description / question, object_id, situation) -> the prompt text of GPT4Scene's annotation files.
GPT4SCENE_TEXT_FIXTURE = [
    (Task.GROUNDING, "this is a brown chair. it is at the end of the table.", -1, None,
     'Share the ID of the object that best fits the description '
     '"this is a brown chair. it is at the end of the table".'),
    (Task.GROUNDING, "where is the red chair?", -1, None,
     'Share the ID of the object that best fits the description "where is the red chair".'),
    (Task.MULTI_GROUNDING, "there are two chairs by the window.", -1, None,
     'Are there any objects fitting the description of "there are two chairs by the window"? '
     'If so, kindly provide the IDs for those objects.'),
    (Task.CAPTION, "", 12, None,
     "Describe the appearance of the <OBJ012>, then elaborate on its positioning relative to other objects "
     "in the scene."),
    (Task.QA, "What is in the right corner of room by curtains?", -1, None,
     "What is in the right corner of room by curtains? Answer the question using a single word or phrase."),
    (Task.QA, "What is on my left?", -1, "I am standing by the sink.",
     "I am standing by the sink. What is on my left? Answer the question using a single word or phrase."),
]
GPT4SCENE_N_FRAMES = 32
GPT4SCENE_RESOLUTION = 512


@pytest.fixture(scope="module")
def big_room():
    """40 keyframes of 640x480: enough for 32 frames, and larger than the 512 px cap."""
    return build_box_scene(n_orbit_keyframes=35, image_size=(640, 480))


def test_registry_and_errors():
    assert set(PROMPT_PROFILES) == {"default", "gpt4scene"}
    assert get_profile() is DEFAULT_PROFILE and get_profile(None).name == "default"
    assert get_profile("GPT4Scene").name == "gpt4scene"
    custom = PromptProfile("mine", n_frames=4, image_size_px=256, system_template=None)
    assert get_profile(custom) is custom
    with pytest.raises(ValueError, match="unknown prompt profile 'gpt5scene'.*default.*gpt4scene"):
        get_profile("gpt5scene")
    with pytest.raises(ValueError, match="description_style"):
        PromptProfile("bad", 8, 512, None, description_style="spoken")
    with pytest.raises(ValueError, match="unknown prompt profile"):
        QueryEngine(None, prompt_profile="nope")


@pytest.mark.parametrize("task, question, object_id, situation, expected", GPT4SCENE_TEXT_FIXTURE)
def test_gpt4scene_text_matches_their_templates(task, question, object_id, situation, expected):
    assert format_question(task, question, object_id=object_id, situation=situation, profile="gpt4scene") == expected


def test_profile_templates_are_part_of_the_profile():
    custom = PromptProfile("terse", 4, 256, None, description_style="benchmark",
                           grounding_template="Which object is {description}?")
    assert format_question(Task.GROUNDING, "the red chair.", profile=custom) == "Which object is the red chair?"
    # Training hashes repr(profile) into the checkpoint's prompt version: a template change must show.
    assert repr(custom) != repr(PromptProfile("terse", 4, 256, None, description_style="benchmark"))


def test_default_profile_keeps_our_request_handling():
    # The default profile strips the spoken request verb; gpt4scene quotes the description as is.
    assert format_question(Task.GROUNDING, "where is the red chair?") == (
        'Share the ID of the object that best fits the description "the red chair".')


def test_gpt4scene_message_layout_and_sizes(big_room):
    bundle = build_prompt(big_room, "this is the yellow box.", Task.GROUNDING, profile="gpt4scene")
    assert bundle.profile == "gpt4scene" and bundle.system_text == ""
    assert [m["role"] for m in bundle.messages] == ["user"], "one user turn, no system message"
    content = bundle.messages[0]["content"]
    assert [c["type"] for c in content] == ["image"] * (GPT4SCENE_N_FRAMES + 1) + ["text"]
    images = [c["image"] for c in content[:-1]]
    assert len(bundle.frame_ids) == GPT4SCENE_N_FRAMES == len(set(bundle.frame_ids))
    for img, marked in zip(images[:-1], bundle.marked_frames):
        assert img is marked
    assert images[-1] is bundle.bev_image, "the BEV comes last, after the 32 frames"
    # 640x480 frames: longer side capped at 512 -> 512x384 (their int(w * 512 / max(w, h))).
    assert all(img.shape == (384, 512, 3) for img in images[:-1])
    assert images[-1].shape == (GPT4SCENE_RESOLUTION, GPT4SCENE_RESOLUTION, 3)
    assert content[-1]["text"] == GPT4SCENE_TEXT_FIXTURE[0][4].replace(
        "this is a brown chair. it is at the end of the table", "this is the yellow box")

    default = build_prompt(big_room, "this is the yellow box.", Task.GROUNDING)
    assert [m["role"] for m in default.messages] == ["system", "user"]
    assert len(default.frame_ids) == DEFAULT_PROFILE.n_frames == 8


class _Recorder(VLMBackend):
    name = "recorder-test"
    needs_images = True

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    def load(self) -> None:
        pass

    def generate(self, request, *, timeout_s, cancel=None) -> str:
        self.requests.append(request)
        return "<OBJ001>."


def test_engine_sends_the_profile_prompt(big_room):
    import time

    backend = _Recorder()
    engine = QueryEngine(backend, prompt_profile="gpt4scene")
    assert engine.n_frames == 32 and engine.image_size_px == 512
    res = engine.answer(QueryRequest("the yellow box", Task.GROUNDING), big_room, time.monotonic() + 60)
    assert res.error_code == 0
    msgs = backend.requests[-1].messages
    assert [m["role"] for m in msgs] == ["user"]
    assert sum(c["type"] == "image" for c in msgs[0]["content"]) == 33
    # An explicit frame count overrides the profile's (the node's query.n_frames when a user sets it).
    small = QueryEngine(backend, prompt_profile="gpt4scene", n_frames=4)
    small.answer(QueryRequest("the yellow box", Task.GROUNDING), big_room, time.monotonic() + 60)
    assert sum(c["type"] == "image" for c in backend.requests[-1].messages[0]["content"]) == 5


def test_qwen2vl_template_adds_the_default_system_turn(tmp_path, big_room):
    """Rendered through a Qwen2-VL processor (our tiny checkpoint carries Qwen2-VL's ChatML template
    with its default system turn), the gpt4scene prompt starts exactly like GPT4Scene's evaluation
    input: default system turn, then 33 image placeholders, then the question."""
    pytest.importorskip("transformers")
    from scene_vlm_ros.vlm.backends.tiny import build_tiny_qwen2vl
    from scene_vlm_ros.vlm.backends.transformers_backend import TransformersBackend

    backend = TransformersBackend(build_tiny_qwen2vl(tmp_path / "tiny"), device="cpu")
    backend.load()
    bundle = build_prompt(big_room, "the yellow box.", Task.GROUNDING, profile="gpt4scene", n_frames=3)
    inputs = backend.build_inputs(bundle.messages)
    text = backend._processor.tokenizer.decode(inputs["input_ids"][0])
    vision = "<|vision_start|>"
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                           + vision)
    assert text.count(vision) == 4
    assert text.endswith('Share the ID of the object that best fits the description "the yellow box".'
                         "<|im_end|>\n<|im_start|>assistant\n")
    backend.unload()
