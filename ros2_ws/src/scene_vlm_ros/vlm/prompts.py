"""GPT4Scene-style prompts: marked frames + marked BEV + a Chat-Scene question template.

One definition serves the robot and the training pipeline: :func:`build_prompt` turns a snapshot
and a question into chat messages (frames first, then the BEV, each image's longer side capped at
``image_size`` with nearest resampling, as GPT4Scene did), and :func:`format_target` writes the
answer strings a model is trained to produce, which :mod:`scene_vlm_ros.vlm.parsing` reads back.

Object ids in text follow Chat-Scene: ``<OBJ###>``, the marker number zero-padded to three digits.

Prompt profiles (:class:`PromptProfile`, :func:`get_profile`) name the few things that differ
between the models we prompt: frame count, image cap, system turn and how a request becomes the
quoted description. ``default`` is ours (8 frames, a system turn explaining the markers);
``gpt4scene`` reproduces the evaluation input of GPT4Scene's released code (their
``evaluate/qwen2_vl.py`` with Chat-Scene's annotation prompts): 32 marked frames then the BEV in one
user turn, no system turn (Qwen2-VL's chat template then inserts its default "You are a helpful
assistant."), longer side capped at 512 px, and the first Chat-Scene template of each task with the
description's final punctuation mark dropped. The node, ``scene-vlm eval`` and training all select a
profile by name through :func:`get_profile`.
"""

from __future__ import annotations

import logging
import re
import string
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..core.bev import BevImage, render_bev
from ..core.frame_selection import DEFAULT_N_FRAMES, select_frames
from ..core.markers import MarkerPlacement, draw_bev_markers, mark_frame, prepare_instance_samples
from ..core.types import SceneSnapshot
from .routing import infer_task
from .types import Task

logger = logging.getLogger(__name__)

#: Chat-Scene templates (see docs research-notes, GPT4Scene section). ``{description}``,
#: ``{question}``, ``{situation}`` and ``{obj}`` are filled by :func:`format_question`.
GROUNDING_TEMPLATE = 'Share the ID of the object that best fits the description "{description}".'
MULTI_GROUNDING_TEMPLATE = (
    'Are there any objects fitting the description of "{description}"? '
    "If so, kindly provide the IDs for those objects."
)
CAPTION_TEMPLATE = (
    "Describe the appearance of the {obj}, then elaborate on its positioning relative to other objects in the scene."
)
QA_TEMPLATE = "{question} Answer the question using a single word or phrase."
SITUATED_QA_TEMPLATE = "{situation} {question} Answer the question using a single word or phrase."

#: Explains the visual prompt; ``{n_frames}`` is filled in.
SYSTEM_TEMPLATE = (
    "You see an indoor scene through {n_frames} video frames followed by one bird's-eye view (BEV) image, a "
    "top-down view of the reconstructed 3D scene. Objects carry numbered markers: the same number marks the "
    "same object in every frame and in the BEV. In text, the object with marker N is written <OBJ###>, N "
    "padded to three digits (marker 7 is <OBJ007>, marker 12 is <OBJ012>). Refer to objects only by these IDs."
)



@dataclass(frozen=True)
class PromptProfile:
    """How one model family wants to be prompted (see the module docstring).

    Attributes:
        name: registry key (``default``, ``gpt4scene``).
        n_frames: marked keyframes before the BEV (fewer when the snapshot has fewer keyframes).
        image_size_px: longer side cap of every image (px, nearest resampling); the BEV is square.
        system_template: system turn with ``{n_frames}`` filled in, or None for no system turn.
        description_style: how a grounding request becomes the quoted description: ``"request"``
            drops a spoken request verb ("where is the red chair?" -> "the red chair",
            :func:`description_of`); ``"benchmark"`` drops only one final punctuation mark, as
            Chat-Scene's annotation scripts do with ScanRefer / Multi3DRefer descriptions.
        summary: one line for ``--help`` texts and docs.
        *_template: the user text per task (``{description}``, ``{question}``, ``{situation}``,
            ``{obj}`` are filled by :func:`format_question`); part of the profile so that its
            ``repr`` (which training hashes into the checkpoint's prompt version) covers them.
    """

    name: str
    n_frames: int
    image_size_px: int
    system_template: str | None
    description_style: str = "request"
    summary: str = ""
    grounding_template: str = GROUNDING_TEMPLATE
    multi_grounding_template: str = MULTI_GROUNDING_TEMPLATE
    caption_template: str = CAPTION_TEMPLATE
    qa_template: str = QA_TEMPLATE
    situated_qa_template: str = SITUATED_QA_TEMPLATE

    def __post_init__(self) -> None:
        if self.description_style not in ("request", "benchmark"):
            raise ValueError(f"description_style must be 'request' or 'benchmark', got {self.description_style!r}")
        if self.n_frames < 0 or self.image_size_px < 64:
            raise ValueError(f"profile {self.name}: n_frames must be >= 0 and image_size_px >= 64")


DEFAULT_PROFILE = PromptProfile(
    "default", n_frames=DEFAULT_N_FRAMES, image_size_px=512, system_template=SYSTEM_TEMPLATE,
    description_style="request",
    summary="ours: 8 marked frames + BEV, a system turn explaining the markers (the node's default)",
)
GPT4SCENE_PROFILE = PromptProfile(
    "gpt4scene", n_frames=32, image_size_px=512, system_template=None, description_style="benchmark",
    summary="GPT4Scene's released evaluation input: 32 marked frames + BEV, no system turn, 512 px",
)
#: Every selectable profile by name.
PROMPT_PROFILES: dict[str, PromptProfile] = {p.name: p for p in (DEFAULT_PROFILE, GPT4SCENE_PROFILE)}


def get_profile(profile: str | PromptProfile | None = None) -> PromptProfile:
    """The profile named ``profile`` (None -> ``default``; a PromptProfile passes through).

    Raises:
        ValueError: unknown name; the message lists the known ones.
    """
    if profile is None:
        return DEFAULT_PROFILE
    if isinstance(profile, PromptProfile):
        return profile
    key = str(profile).strip().lower()
    if key not in PROMPT_PROFILES:
        raise ValueError(f"unknown prompt profile {profile!r}; choose one of {sorted(PROMPT_PROFILES)}")
    return PROMPT_PROFILES[key]


#: The file `scene-vlm-train export` writes beside a model: how the model was prompted in training.
EXPORT_METADATA = "scene_vlm_export.json"


def prompt_version(profile: str | PromptProfile) -> str:
    """``<profile>-<sha256[:12]>`` of the profile's full definition (templates, frames, image cap): a
    model exported with one version and run with another saw different prompts in training."""
    import hashlib

    p = get_profile(profile)
    return f"{p.name}-{hashlib.sha256(repr(p).encode()).hexdigest()[:12]}"


def export_prompt_settings(model_dir: str | Path | None) -> Optional[dict]:
    """``{prompt_profile, n_frames, image_size_px, prompt_version}`` that a model exported by
    `scene-vlm-train export` was trained with (``scene_vlm_export.json`` in ``model_dir``), or None
    for a model without it (someone else's checkpoint). Raises ValueError for an unreadable file."""
    import json

    if not model_dir:
        return None
    path = Path(model_dir).expanduser() / EXPORT_METADATA
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        return {"prompt_profile": str(meta["prompt_profile"]), "n_frames": int(meta["n_frames"]),
                "image_size_px": int(meta["image_size_px"]), "prompt_version": str(meta.get("prompt_version", ""))}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a readable export description ({exc})") from exc


def obj_token(instance_id: int) -> str:
    """``<OBJ###>`` of an instance id (three digits zero-padded; more digits when needed)."""
    iid = int(instance_id)
    if iid < 0:
        raise ValueError(f"instance ids in prompts must be >= 0, got {instance_id}")
    return f"<OBJ{iid:03d}>"


_REQUEST_PREFIX_RE = re.compile(
    r"^(are there (any|some)|is there (a|an|any)|find all|list all|show all|show me all|find|locate|show me|"
    r"where is|where's|where are|point (to|at)|go to|take me to)\s+",
    re.IGNORECASE,
)


def description_of(request: str) -> str:
    """The object description inside a spoken request: "where is the red chair?" -> "the red chair".

    Chat-Scene's grounding templates quote a description, not a command, so the request verb and
    the trailing punctuation are dropped.
    """
    d = _REQUEST_PREFIX_RE.sub("", request.strip()).strip()
    return d.rstrip(".?! ") or request.strip()


def benchmark_description(text: str) -> str:
    """A benchmark description as Chat-Scene quotes it: outer whitespace and one final punctuation mark dropped."""
    d = text.strip()
    if d and d[-1] in string.punctuation:
        d = d[:-1]
    return d


def format_question(
    task: Task, question: str, object_id: int = -1, situation: str | None = None,
    profile: str | PromptProfile | None = None,
) -> str:
    """The user text of one request, from the Chat-Scene template of ``task``.

    ``question`` is the description for (multi-)grounding (with the ``default`` profile a request
    verb such as "find" or "are there any" is dropped, :func:`description_of`; with ``gpt4scene``
    only a final punctuation mark, :func:`benchmark_description`) and the question for QA;
    captioning uses ``object_id`` and ignores ``question``; ``Task.SPATIAL`` questions (SPAR-style)
    carry their own answer format and pass through unchanged.
    """
    prof = get_profile(profile)
    describe = benchmark_description if prof.description_style == "benchmark" else description_of
    task = Task(task)
    q = (question or "").strip()
    if task == Task.AUTO:
        task = infer_task(q)
    if task == Task.CAPTION:
        return prof.caption_template.format(obj=obj_token(object_id))
    if not q:
        raise ValueError(f"an empty question cannot be prompted for task {task.value}")
    if task == Task.GROUNDING:
        return prof.grounding_template.format(description=describe(q))
    if task == Task.MULTI_GROUNDING:
        return prof.multi_grounding_template.format(description=describe(q))
    if task == Task.QA:
        if situation and situation.strip():
            return prof.situated_qa_template.format(situation=situation.strip(), question=q)
        return prof.qa_template.format(question=q)
    return q  # Task.SPATIAL


def _join_ids(tokens: Sequence[str]) -> str:
    if len(tokens) == 1:
        return tokens[0]
    if len(tokens) == 2:
        return f"{tokens[0]} and {tokens[1]}"
    return ", ".join(tokens[:-1]) + f", and {tokens[-1]}"


def format_target(task: Task, target_ids: Iterable[int], answer_text: str | None = None) -> str:
    """The answer a model should give (training targets; the parser reads the same format).

    Grounding: ``<OBJ012>.`` (exactly one id). Multi-grounding: ``No.`` | ``Yes. <OBJ001>.`` |
    ``Yes. <OBJ001> and <OBJ002>.`` | ``Yes. <OBJ001>, <OBJ002>, and <OBJ003>.`` (ids deduplicated,
    order kept). QA, spatial and captioning: ``answer_text`` as given (stripped).
    """
    task = Task(task)
    ids: list[int] = []
    for i in target_ids:
        if int(i) not in ids:
            ids.append(int(i))
    tokens = [obj_token(i) for i in ids]
    if task == Task.GROUNDING:
        if len(tokens) != 1:
            raise ValueError(f"grounding targets need exactly one id, got {ids}")
        return f"{tokens[0]}."
    if task == Task.MULTI_GROUNDING:
        return "No." if not tokens else f"Yes. {_join_ids(tokens)}."
    if task == Task.AUTO:
        raise ValueError("format_target needs a concrete task, not Task.AUTO")
    if answer_text is None or not answer_text.strip():
        raise ValueError(f"task {task.value} needs answer_text for its target")
    return answer_text.strip()


@dataclass
class PromptBundle:
    """Everything one prompt consists of, for the backend and for inspection.

    ``messages`` are chat messages in the :mod:`scene_vlm_ros.vlm.types` format (frames first, then
    the BEV, then the text). ``bev`` is the unmarked render with its pixel mapping; ``bev_image``
    the marked BEV actually sent. ``frame_ids``/``marked_frames`` are in prompt order.
    ``timings_ms`` has ``select``, ``bev``, ``markers`` (BEV + frames) and ``total``.
    ``system_text`` is ``""`` when the profile sends no system turn.
    """

    messages: list[dict[str, Any]]
    bev: BevImage
    bev_image: np.ndarray
    frame_ids: list[int]
    marked_frames: list[np.ndarray]
    task: Task
    text: str
    system_text: str
    bev_placements: list[MarkerPlacement] = field(default_factory=list)
    frame_placements: dict[int, list[MarkerPlacement]] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    profile: str = DEFAULT_PROFILE.name


def build_messages(system_text: str | None, images: Sequence[np.ndarray], text: str) -> list[dict[str, Any]]:
    """Chat messages: a system turn (none when ``system_text`` is None or empty), then one user turn
    with ``images`` followed by ``text``."""
    content: list[dict[str, Any]] = [{"type": "image", "image": img} for img in images]
    content.append({"type": "text", "text": text})
    messages: list[dict[str, Any]] = []
    if system_text:
        messages.append({"role": "system", "content": [{"type": "text", "text": system_text}]})
    messages.append({"role": "user", "content": content})
    return messages


def build_prompt(
    snapshot: SceneSnapshot,
    question: str,
    task: Task,
    n_frames: int | None = None,
    object_id: int = -1,
    situation: str | None = None,
    image_size: int | None = None,
    candidate_ids: Iterable[int] | None = None,
    profile: str | PromptProfile | None = None,
) -> PromptBundle:
    """Build the GPT4Scene visual prompt of one request.

    Args:
        snapshot: the scene (world frame, z up); its keyframes supply the frames.
        question: description (grounding), question (QA/spatial); ignored for captioning.
        task: what is asked; ``Task.AUTO`` is resolved with :func:`infer_task`.
        n_frames: frames to select (None: the profile's, 8 for ``default``, 32 for
            ``gpt4scene``); fewer when the snapshot has fewer keyframes.
        object_id: the instance to caption (``Task.CAPTION``); must exist in the snapshot.
        situation: SQA3D-style situation text for situated QA.
        image_size: longer side cap of every image (px; None: the profile's); the BEV is
            ``image_size`` square.
        candidate_ids: instances the question is likely about; frames showing them are preferred.
        profile: a :class:`PromptProfile` or its name (None: ``default``).
    """
    prof = get_profile(profile)
    n_frames = prof.n_frames if n_frames is None else n_frames
    image_size = prof.image_size_px if image_size is None else image_size
    if not isinstance(question, str):
        raise TypeError(f"question must be a str, got {type(question).__name__}")
    if int(image_size) < 64:
        raise ValueError(f"image_size must be >= 64 px, got {image_size}")
    if int(n_frames) < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    t0 = time.perf_counter()
    task = Task(task)
    if task == Task.AUTO:
        task = infer_task(question)
    cands = list(candidate_ids) if candidate_ids is not None else None
    if task == Task.CAPTION:
        if snapshot.instance(int(object_id)) is None:
            known = [i.instance_id for i in snapshot.instances]
            raise ValueError(
                f"captioning needs object_id of an instance in the snapshot; got {object_id}, have {known}"
            )
        cands = [int(object_id)] + (cands or [])
    text = format_question(task, question, object_id=object_id, situation=situation, profile=prof)

    samples = prepare_instance_samples(snapshot)
    vis_cache: dict = {}
    frame_ids = (
        select_frames(snapshot, n=n_frames, candidate_ids=cands, samples=samples, visibility_cache=vis_cache)
        if n_frames > 0
        else []
    )
    t1 = time.perf_counter()
    bev = render_bev(snapshot, size_px=int(image_size))
    t2 = time.perf_counter()
    bev_image, bev_placements = draw_bev_markers(bev, snapshot)
    marked, frame_placements = [], {}
    for kid in frame_ids:
        kf = snapshot.keyframe(kid)
        if kf is None:  # select_frames only returns ids of the snapshot; guard against misuse anyway
            raise ValueError(f"keyframe {kid} not in the snapshot")
        img, placements = mark_frame(
            kf, snapshot, samples=samples, image_size=int(image_size), visibility=vis_cache.get(kid)
        )
        marked.append(img)
        frame_placements[kid] = placements
    t3 = time.perf_counter()
    system_text = prof.system_template.format(n_frames=len(marked)) if prof.system_template else ""
    messages = build_messages(system_text, [*marked, bev_image], text)
    t4 = time.perf_counter()
    return PromptBundle(
        messages=messages,
        bev=bev,
        bev_image=bev_image,
        frame_ids=list(frame_ids),
        marked_frames=marked,
        task=task,
        text=text,
        system_text=system_text,
        bev_placements=bev_placements,
        frame_placements=frame_placements,
        profile=prof.name,
        timings_ms={
            "select": (t1 - t0) * 1e3,
            "bev": (t2 - t1) * 1e3,
            "markers": (t3 - t2) * 1e3,
            "total": (t4 - t0) * 1e3,
        },
    )
