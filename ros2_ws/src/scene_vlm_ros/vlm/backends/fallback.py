"""The no-weights backend: answers from the snapshot's labels and geometry, in the VLM reply format.

Replies (exactly what the answer parser sees):

- GROUNDING: ``"<OBJ012>."`` (instance_id, three digits) for the best match of the description;
  ``"No matching object."`` (:data:`NO_MATCH_REPLY`) when nothing fits. The description is
  resolved strictly first; when that finds nothing it is retried without its colour word, since
  colours named from reconstructed points are the least reliable attribute.
- MULTI_GROUNDING: ``"No."`` | ``"Yes. <OBJ001>."`` | ``"Yes. <OBJ001> and <OBJ002>."`` |
  ``"Yes. <OBJ001>, <OBJ002>, and <OBJ003>."`` (all strict matches, by instance_id).
- SPATIAL: the :class:`~scene_vlm_ros.core.spatial.SpatialEngine` answer text, which starts with
  the bare answer and names the objects involved, e.g. ``"1.23 m (between <OBJ001> and <OBJ004>,
  centre to centre)."``; when the engine cannot answer: ``"Cannot answer: <reason>."``.
- AUTO: metric wording ("how far", "how many", "distance", "left or right", ...) -> SPATIAL;
  plural nouns, "any", "all", "are there" -> MULTI_GROUNDING; anything else -> GROUNDING.
- QA and CAPTION raise ModelUnavailableError: they need a vision-language model.

The fallback knows objects only by their labels, so it says so when the map holds objects the
detector could not name: a grounding miss reads ``"No matching object; 4 objects in the map are
unlabelled."`` and a count ``"0 (none in the map; 4 unlabelled objects not counted)."``. The
unlabelled ones still appear in the BEV with their IDs, for a VLM to name.

The question may be the plain description or a Chat-Scene prompt with the description in double
quotes (``Share the ID of the object that best fits the description "<desc>".``). The viewer for
"me"/"the camera" is ``request.metadata["viewer_frame_id"]``'s keyframe pose when given, else the
snapshot's latest camera pose.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Optional

from ...core.referring import ReferringError, candidates_from_instances, parse_expression, resolve
from ...core.spatial import (
    NO_MATCH_REPLY,
    SpatialEngine,
    SpatialQueryError,
    grounding_reply,
    multi_grounding_reply,
)
from ..routing import extract_description, infer_task
from ..types import GenerationRequest, GenerationTimeout, ModelError, ModelUnavailableError, Task, VLMBackend

logger = logging.getLogger(__name__)

__all__ = ["FallbackBackend", "NO_MATCH_REPLY", "route_task", "extract_description"]

def route_task(question: str) -> Task:
    """AUTO routing for the fallback: the shared router, with QA read as grounding (the fallback
    answers questions about objects by finding them; free-text QA needs a model)."""
    task = infer_task(question)
    return Task.GROUNDING if task == Task.QA else task


def _objects(n: int, adjective: str = "") -> str:
    return f"{n} {adjective}object" + ("" if n == 1 else "s")


class FallbackBackend(VLMBackend):
    """Answers grounding, multi-grounding and metric questions without model weights."""

    name = "fallback"
    needs_images = False

    def load(self) -> None:
        """Nothing to load."""

    def generate(
        self, request: GenerationRequest, *, timeout_s: float, cancel: Optional[threading.Event] = None
    ) -> str:
        """Reply text in the VLM format (see module docstring); GenerationTimeout on cancel/deadline."""
        t0 = time.monotonic()
        if cancel is not None and cancel.is_set():
            raise GenerationTimeout("the fallback request was cancelled before it started")
        task = request.task
        if task == Task.AUTO:
            task = route_task(request.question)
        if task in (Task.QA, Task.CAPTION):
            raise ModelUnavailableError(
                f"task '{task.value}' needs a vision-language model; configure model.backend "
                "(transformers with a local checkpoint, or an OpenAI-compatible server) instead of 'fallback'"
            )
        snap = request.snapshot
        if snap is None:
            raise ModelError("the fallback backend answers from the scene snapshot, but the request carries none")
        viewer_T = snap.T_world_camera_latest
        frame = request.metadata.get("viewer_frame_id") if request.metadata else None
        if frame is not None:
            kf = snap.keyframe(int(frame))
            if kf is None:
                raise ModelError(f"viewer_frame_id {frame} is not a keyframe of the snapshot")
            viewer_T = kf.T_world_camera
        n_unlabelled = sum(1 for inst in snap.instances if not inst.label)
        if task == Task.SPATIAL:
            try:
                answer = SpatialEngine(snap, T_world_viewer=viewer_T).answer(request.question)
                reply = answer.text
                if answer.kind == "count" and n_unlabelled and reply.endswith(")."):
                    reply = f"{reply[:-2]}; {_objects(n_unlabelled, 'unlabelled ')} not counted)."
            except SpatialQueryError as exc:
                reply = f"Cannot answer: {str(exc).rstrip('.')}."
        else:
            reply = self._ground(request.question, snap, viewer_T, task == Task.MULTI_GROUNDING)
            if reply == NO_MATCH_REPLY and n_unlabelled:
                verb = "is" if n_unlabelled == 1 else "are"
                reply = f"{NO_MATCH_REPLY[:-1]}; {_objects(n_unlabelled)} in the map {verb} unlabelled."
        if time.monotonic() - t0 > timeout_s or (cancel is not None and cancel.is_set()):
            raise GenerationTimeout(f"the fallback did not answer within {timeout_s:.1f} s (or was cancelled)")
        return reply

    @staticmethod
    def _ground(question: str, snap, viewer_T, multi: bool) -> str:  # noqa: N803
        desc = extract_description(question)
        cands = candidates_from_instances(snap.instances)
        viewer = None if viewer_T is None else viewer_T[:3, 3]
        try:
            expr = parse_expression(desc)
            matches = resolve(expr, cands, viewer)
            if not matches and not multi and expr.color is not None:
                relaxed = dataclasses.replace(expr, color=None)
                matches = resolve(relaxed, cands, viewer)
                if matches:
                    logger.info("no %s object fits %r; answering without the colour", expr.color, desc)
        except ReferringError as exc:
            logger.info("fallback could not resolve %r: %s", desc, exc)
            matches = []
        if multi:
            return multi_grounding_reply(sorted(m.cid for m in matches))
        return grounding_reply(matches[0].cid if matches else None)
