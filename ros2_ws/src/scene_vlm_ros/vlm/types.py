"""Contract between prompting, the model backends and the query engine (no rclpy, no torch).

Chat messages are plain lists of dicts, the shape every backend accepts::

    [{"role": "system", "content": [{"type": "text", "text": "..."}]},
     {"role": "user", "content": [{"type": "image", "image": <np.ndarray (H, W, 3) uint8 RGB>},
                                  ...,
                                  {"type": "text", "text": "..."}]}]

Backends convert images themselves (PIL for transformers, data URLs for HTTP).
"""

from __future__ import annotations

import abc
import enum
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

from ..core.types import SceneSnapshot


class Task(str, enum.Enum):  # noqa: UP042 (str mixin keeps Task("grounding") == "grounding")
    """What kind of answer a query wants (mirrors SceneQuery.srv's task constants)."""

    AUTO = "auto"
    GROUNDING = "grounding"
    MULTI_GROUNDING = "multi_grounding"
    QA = "qa"
    CAPTION = "caption"
    SPATIAL = "spatial"

    @classmethod
    def from_srv(cls, code: int) -> Task:
        """Map the uint8 constant of SceneQuery.srv to a Task (ValueError when unknown)."""
        order = [cls.AUTO, cls.GROUNDING, cls.MULTI_GROUNDING, cls.QA, cls.CAPTION, cls.SPATIAL]
        if not 0 <= int(code) < len(order):
            raise ValueError(f"unknown task code {code}; expected 0..{len(order) - 1}")
        return order[int(code)]


class ModelUnavailableError(RuntimeError):
    """No model is configured, it failed to load, or the backend cannot do this task."""


class ModelError(RuntimeError):
    """The model raised, or returned something unusable."""


class GenerationTimeout(TimeoutError):
    """The backend did not answer within the request's deadline (or was cancelled)."""


@dataclass
class GenerationRequest:
    """Everything a backend may use to answer one query.

    Model backends read ``messages``; the no-weights fallback reads ``question``/``task`` and
    ``snapshot`` directly. Either way the reply is text in the same format (``<OBJ###>`` IDs for
    grounding), so one parser turns every backend's reply into boxes.
    """

    messages: list[dict[str, Any]]
    task: Task
    question: str
    snapshot: Optional[SceneSnapshot] = None
    object_id: int = -1
    max_new_tokens: int = 64
    metadata: dict[str, Any] = field(default_factory=dict)


class VLMBackend(abc.ABC):
    """A vision-language model behind one small interface.

    ``load()`` does the heavy work (weights, connections) and raises ModelUnavailableError with an
    actionable message; ``generate()`` must honour ``timeout_s`` and ``cancel`` (raising
    GenerationTimeout) and raise ModelError for anything else that goes wrong.
    """

    name: str = "backend"
    #: False for backends that answer from the snapshot and do not need rendered images.
    needs_images: bool = True

    @abc.abstractmethod
    def load(self) -> None: ...

    def unload(self) -> None:  # noqa: B027 (optional hook, deliberately not abstract)
        """Free weights / connections (called on node cleanup); backends without any keep this no-op."""

    @property
    def loaded(self) -> bool:
        return True

    @abc.abstractmethod
    def generate(
        self, request: GenerationRequest, *, timeout_s: float, cancel: Optional[threading.Event] = None
    ) -> str: ...
