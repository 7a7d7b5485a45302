"""Build a VLM backend from a kind name and parameters (what the node's ``configure`` calls).

Construction is cheap and never touches the model: a missing checkpoint or an unreachable server
surfaces as ModelUnavailableError from ``backend.load()``, where the node turns it into a failed
lifecycle transition with that message. Backend modules are imported lazily so that a node
configured for ``fallback`` or ``openai`` never imports torch or transformers.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from typing import Any

from ..types import VLMBackend

logger = logging.getLogger(__name__)

#: kind -> (module under scene_vlm_ros.vlm.backends, class name)
BACKEND_KINDS: dict[str, tuple[str, str]] = {
    "fallback": ("fallback", "FallbackBackend"),
    "transformers": ("transformers_backend", "TransformersBackend"),
    "openai": ("openai_backend", "OpenAIBackend"),
}


def backend_class(kind: str) -> type[VLMBackend]:
    """The class for ``kind`` (imports its module); ValueError listing the kinds when unknown."""
    key = str(kind).strip().lower()
    if key not in BACKEND_KINDS:
        raise ValueError(f"unknown VLM backend kind {kind!r}; choose one of: {', '.join(BACKEND_KINDS)}")
    module_name, class_name = BACKEND_KINDS[key]
    module = importlib.import_module(f"{__package__}.{module_name}")
    return getattr(module, class_name)


def make_backend(kind: str, **params: Any) -> VLMBackend:
    """Construct (not load) the backend of ``kind`` with ``params`` as constructor keyword arguments.

    Args:
        kind: ``"fallback"``, ``"transformers"`` or ``"openai"`` (case-insensitive).
        **params: constructor arguments, e.g. ``model_path=...`` for transformers or
            ``base_url=..., model=...`` for openai. Parameters the class does not take raise
            ValueError naming the accepted ones (a typo in a YAML file should not pass silently).

    Returns:
        The backend, not yet loaded: call ``load()`` and handle ModelUnavailableError.

    Raises:
        ValueError: unknown kind, unknown or missing parameters, or a value the constructor rejects.
    """
    cls = backend_class(kind)
    signature = inspect.signature(cls)  # the constructor's parameters, without self
    accepted = list(signature.parameters)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    unknown = sorted(set(params) - set(accepted)) if not takes_any else []
    if unknown:
        raise ValueError(
            f"backend {kind!r} does not take parameter(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(accepted) or 'none'}"
        )
    missing = [
        name
        for name, p in signature.parameters.items()
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and name not in params
    ]
    if missing:
        raise ValueError(f"backend {kind!r} needs parameter(s) {', '.join(missing)}")
    backend = cls(**params)
    logger.info("created VLM backend %s (%s)", kind, cls.__name__)
    return backend
