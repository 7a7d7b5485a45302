"""Start the scene_vlm graph in one process (what ``scene-vlm run`` and the tests use).

``ros2 launch`` has no PyPI wheel, so this is the in-process equivalent of
``launch/scene_vlm.launch.py`` (+ ``launch/replay.launch.py`` when a bag is given): the same
parameter file, the same nodes, one MultiThreadedExecutor, and an isolated rclpy context so
tests can run several graphs side by side.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Optional

import rclpy
import yaml
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter

from ..vlm.types import VLMBackend
from .params import PARAMETERS
from .scene_vlm_node import NODE_NAME, SceneVlmNode

log = logging.getLogger(__name__)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def load_params_file(path: Path, node_name: str = NODE_NAME) -> dict[str, Any]:
    """Dotted parameter values for ``node_name`` from a ROS 2 YAML parameter file.

    Accepts the standard layout (``node_name: {ros__parameters: {...}}``, ``/**`` wildcard too).
    Unknown names raise ValueError so typos do not pass silently.
    """
    data = yaml.safe_load(Path(path).read_text()) or {}
    values: dict[str, Any] = {}
    for key in ("/**", node_name, f"/{node_name}"):
        section = data.get(key, {})
        if isinstance(section, dict):
            values.update(flatten(section.get("ros__parameters", {})))
    unknown = sorted(set(values) - set(PARAMETERS))
    if unknown:
        raise ValueError(f"{path}: unknown parameters for {node_name}: {unknown}")
    return values


def to_parameters(values: dict[str, Any]) -> list[Parameter]:
    params = []
    for name, value in values.items():
        default = PARAMETERS[name][0] if name in PARAMETERS else None
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # YAML "5" for a double parameter
        if isinstance(default, list):
            value = [float(v) for v in value]
        params.append(Parameter(name, value=value))
    return params


class Bringup:
    """The running graph: node(s), executor thread and context. Use as a context manager."""

    def __init__(
        self,
        params: Optional[dict[str, Any]] = None,
        config_file: Optional[Path] = None,
        *,
        backend: Optional[VLMBackend] = None,
        domain_id: Optional[int] = None,
        num_threads: int = 4,
    ):
        values: dict[str, Any] = {}
        if config_file is not None:
            values.update(load_params_file(config_file))
        values.update(params or {})
        self.context = rclpy.context.Context()
        init_kwargs: dict[str, Any] = {"context": self.context}
        if domain_id is not None:
            init_kwargs["domain_id"] = domain_id
        #: the ROS domain of this graph (a player in another process must use the same)
        self.domain_id = domain_id if domain_id is not None else int(os.environ.get("ROS_DOMAIN_ID", "0"))
        rclpy.init(**init_kwargs)
        self.node = SceneVlmNode(context=self.context, parameter_overrides=to_parameters(values), backend=backend)
        self.executor = MultiThreadedExecutor(num_threads=num_threads, context=self.context)
        self.executor.add_node(self.node)
        self._extra_nodes: list[Any] = []
        self._thread: Optional[threading.Thread] = None

    def add_node(self, node: Any) -> None:
        self._extra_nodes.append(node)
        self.executor.add_node(node)

    def start(self) -> Bringup:
        from rclpy.lifecycle import TransitionCallbackReturn

        if self.node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            self.shutdown()
            raise RuntimeError("scene_vlm node failed to configure (see its log)")
        self.node.trigger_activate()
        self._thread = threading.Thread(target=self.executor.spin, name="scene-vlm-executor", daemon=True)
        self._thread.start()
        return self

    def spin_forever(self) -> None:
        try:
            while rclpy.ok(context=self.context):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass

    def shutdown(self) -> None:
        try:
            self.executor.shutdown(timeout_sec=2.0)
        except Exception:  # shutting down twice is harmless
            pass
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        # Lifecycle shutdown stops the mapping thread, the query worker and the model before the
        # context goes away (a thread still running at interpreter exit made the process exit 1).
        try:
            self.node.trigger_shutdown()
        except Exception:  # already finalized, or never configured
            self.node._release()
        for n in [*self._extra_nodes, self.node]:
            try:
                n.destroy_node()
            except Exception:
                pass
        if self.context.ok():
            rclpy.shutdown(context=self.context)

    def __enter__(self) -> Bringup:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
