"""Reading a model's reply back into instances of the snapshot.

The canonical format is the one :func:`scene_vlm_ros.vlm.prompts.format_target` writes
(``<OBJ012>.``, ``Yes. <OBJ001> and <OBJ002>.``, ``No.``), but models drift, so the parser also
accepts ``<OBJ12>``, ``OBJ 12``, ``OBJ_012``, ``object 12``, ``object id 12``, ``obj#12``, ``#12`` and
``ID 12``. Bare numbers are never ids (QA answers such as "2" are counts). An id the snapshot does
not have is reported in ``unknown_ids`` and never becomes a box.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from ..core.types import Instance, SceneSnapshot
from .types import Task

logger = logging.getLogger(__name__)

# One alternation so matches come out in reading order; the bracketed form is tried first so the
# "OBJ" inside "<OBJ012>" is not matched twice.
_ID_RE = re.compile(
    r"<\s*obj(?:ect)?\s*[#_:\-]?\s*(\d+)\s*>"  # <OBJ012>, <OBJ12>, <obj 12>
    r"|\bobj(?:ect)?\s*(?:id\s*)?[#_:\-]?\s*(\d+)"  # OBJ 12, OBJ012, OBJ_012, object 12, object id 12, obj#12
    r"|\bid\s*[#:]?\s*(\d+)"  # ID 12, id: 12, ID#12
    r"|#\s*(\d+)",  # #12
    re.IGNORECASE,
)
_YES_NO_RE = re.compile(r"^\W*(yes|no|none|nothing)\b", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedAnswer:
    """A model reply, interpreted.

    ``instance_ids``: ids of existing instances in the order first mentioned, deduplicated (for
    grounding the first is the answer). ``unknown_ids``: mentioned ids the snapshot lacks.
    ``yes_no``: True/False when the reply starts with yes/no (multi-grounding: also True when it
    lists ids without saying yes), else None. ``answer``: the reply stripped, trailing period
    removed (the free-text answer for QA).
    """

    task: Task
    text: str
    instance_ids: tuple[int, ...]
    unknown_ids: tuple[int, ...]
    yes_no: bool | None
    answer: str = ""


def extract_ids(text: str) -> list[int]:
    """All object ids mentioned in ``text``, in reading order (duplicates kept)."""
    return [int(next(g for g in m.groups() if g is not None)) for m in _ID_RE.finditer(text)]


def parse_answer(text: str, task: Task, snapshot: SceneSnapshot | None) -> ParsedAnswer:
    """Parse a model reply for ``task`` against the snapshot's instances.

    With ``snapshot=None`` every mentioned id is accepted (no existence check). A multi-grounding
    "No." yields no ids even when ids follow it (the model said nothing fits).
    """
    if not isinstance(text, str):
        raise TypeError(f"model reply must be a str, got {type(text).__name__}")
    task = Task(task)
    known = None if snapshot is None else {inst.instance_id for inst in snapshot.instances}
    ids: list[int] = []
    unknown: list[int] = []
    for i in extract_ids(text):
        bucket = ids if known is None or i in known else unknown
        if i not in bucket:
            bucket.append(i)
    m = _YES_NO_RE.match(text)
    yes_no: bool | None = None if m is None else m.group(1).lower() == "yes"
    if task == Task.MULTI_GROUNDING:
        if yes_no is False and ids:
            logger.warning("multi-grounding reply says no but lists %s; treating it as no match", ids)
            ids = []
        elif yes_no is None and (ids or unknown):
            yes_no = True
    elif task == Task.GROUNDING:
        yes_no = None
    answer = text.strip()
    if answer.endswith(".") and task in (Task.QA, Task.SPATIAL, Task.AUTO):
        answer = answer[:-1].rstrip()
    if unknown:
        logger.info("reply mentions ids not in the snapshot: %s", unknown)
    return ParsedAnswer(task, text, tuple(ids), tuple(unknown), yes_no, answer)


def instances_for(parsed: ParsedAnswer, snapshot: SceneSnapshot) -> list[Instance]:
    """The snapshot's instances of ``parsed.instance_ids``, in the same order (unknown ids skipped)."""
    out = []
    for i in parsed.instance_ids:
        inst = snapshot.instance(i)
        if inst is not None:
            out.append(inst)
    return out
