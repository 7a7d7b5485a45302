"""Deciding what an AUTO request asks for: one router for the engine, the prompts and the fallback.

SPATIAL for metric wording ("how far", "how many", "left or right"), MULTI_GROUNDING for "are there
any / all / every" and plural descriptions ("the red chairs"), GROUNDING for "where is / find" and
plain descriptions, QA for other questions ("what colour is the sofa?").
"""

from __future__ import annotations

import re

from ..core.referring import ReferringError, parse_expression
from .types import Task

_METRIC = re.compile(
    r"\b(how (far|many|much|tall|high|long|wide|big|large)|distance|left or right|right or left|"
    r"which (one )?is (closer|nearer|farther|further)|floor area|area of|height of|length of|width of|"
    r"volume of|size of the room|degrees|meters|metres)\b"
)
_MULTI_START = re.compile(r"^(are there (any|some)|find all|all |every |each |which objects|list all|show all)")
_ANY = re.compile(r"\bany\b")
_GROUNDING_START = re.compile(r"^(where is|where's|find|locate|show me|point (to|at)|go to|take me to)\b")
_QUESTION_START = re.compile(
    r"^(what|how|is|are|does|do|can|could|which|who|why|when|should|would|will|was|were|has|have)\b"
)


def extract_description(question: str) -> str:
    """The description inside a Chat-Scene grounding prompt's double quotes, else the text itself."""
    m = re.search(r'"([^"]+)"', question) or re.search(r"“([^”]+)”", question)
    return (m.group(1) if m else question).strip()


def _wants_many(description: str) -> bool:
    try:
        return parse_expression(description).wants_many
    except ReferringError:
        return False


def infer_task(question: str) -> Task:
    """The task of a free-form request (used for ``Task.AUTO``)."""
    q = question.strip().lower()
    if _METRIC.search(q):
        return Task.SPATIAL
    desc = extract_description(question).lower()
    if _MULTI_START.match(q) or _ANY.search(desc):
        return Task.MULTI_GROUNDING
    if _GROUNDING_START.match(q):
        return Task.GROUNDING
    if _wants_many(desc):
        return Task.MULTI_GROUNDING
    if q.endswith("?") or _QUESTION_START.match(q):
        return Task.QA
    return Task.GROUNDING
