"""The ``~/query`` action (``scene_vlm_interfaces/action/SceneQuery``): feedback while the model works,
and cancel. The ``/scene_query`` service stays for simple clients.

The glue is small on purpose: :class:`QueryActionServer` turns a goal into a :class:`QueryJob` (what
the node's query worker runs), publishes ``stage`` + ``elapsed_s`` feedback every
``feedback_period_s`` until the job is done, and on a cancel request cancels the job and returns at
once with ``error_code = CANCELLED``. :class:`WorkerQueryJob` adapts the core's
:class:`~scene_vlm_ros.vlm.engine.QueryWorker` to that interface.

Threading: ``execute`` waits on the job in an executor thread, so the node must spin with a
``MultiThreadedExecutor`` and the server uses a ``ReentrantCallbackGroup`` (cancel requests and other
goals are served while a goal runs). The wait is an ``Event.wait`` on the job, not a spin.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Optional, Protocol

__all__ = ["FinishedJob", "QueryActionServer", "QueryJob", "WorkerQueryJob"]

ACTION_NAME = "~/query"


class QueryJob(Protocol):
    """One goal's work. ``stage`` names where it is (``accepted``, ``answering``, ``done``, ``cancelled``)."""

    stage: str

    def wait(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s``; True once :meth:`result` is available."""

    def result(self) -> Any:
        """The ``SceneQuery.Result`` (only after :meth:`wait` returned True)."""

    def cancel(self) -> None:
        """Stop the work if possible; the job's result is no longer needed."""


class FinishedJob:
    """A goal answered at once (INVALID_REQUEST, NO_MAP_YET, ...): no worker involved."""

    stage = "done"

    def __init__(self, result: Any) -> None:
        self._result = result

    def wait(self, timeout_s: float) -> bool:
        return True

    def result(self) -> Any:
        return self._result

    def cancel(self) -> None:
        pass


class WorkerQueryJob:
    """A goal submitted to the node's :class:`~scene_vlm_ros.vlm.engine.QueryWorker`.

    Args:
        worker: the query worker (bounded queue, deadline, its own threads).
        request: the core ``QueryRequest`` built from the goal.
        snapshot: the scene snapshot taken when the goal was accepted.
        to_result: core ``QueryResult`` -> ``SceneQuery.Result`` (the node's conversion).
        busy_result: the ``SceneQuery.Result`` to return when the worker's queue is full.
    """

    def __init__(self, worker: Any, request: Any, snapshot: Any, to_result: Callable[[Any], Any],
                 busy_result: Callable[[], Any]) -> None:
        self.stage = "accepted"
        self._done = threading.Event()
        self._result: Any = None
        self._to_result = to_result
        self._cancelled = False
        #: handed to the worker as the request's cancel event: cancel() stops the model's generation
        self.cancel_event = threading.Event()
        if worker.submit(request, snapshot, self._on_done, cancel=self.cancel_event):
            if not self._done.is_set():
                self.stage = "answering"
        else:
            self._finish(busy_result())

    def _on_done(self, core_result: Any) -> None:
        if not self._cancelled:
            self._finish(self._to_result(core_result))

    def _finish(self, result: Any) -> None:
        self._result = result
        self.stage = "done"
        self._done.set()

    def wait(self, timeout_s: float) -> bool:
        return self._done.wait(timeout_s)

    def result(self) -> Any:
        return self._result

    def cancel(self) -> None:
        # The backend sees the event and stops generating; whatever result still comes is dropped.
        self._cancelled = True
        self.stage = "cancelled"
        self.cancel_event.set()


class QueryActionServer:
    """``~/query`` action server on ``node``.

    Args:
        node: the rclpy node.
        start: goal (``SceneQuery.Goal``) -> :class:`QueryJob`; must not block (take the snapshot, submit).
        feedback_period_s: how often feedback is published while a goal runs (s).
        action_name: defaults to ``~/query``.
    """

    def __init__(self, node: Any, start: Callable[[Any], QueryJob], feedback_period_s: float = 0.25,
                 action_name: str = ACTION_NAME) -> None:
        from rclpy.action import ActionServer, CancelResponse, GoalResponse
        from rclpy.callback_groups import ReentrantCallbackGroup

        from scene_vlm_interfaces.action import SceneQuery

        if feedback_period_s <= 0:
            raise ValueError(f"feedback_period_s must be > 0, got {feedback_period_s}")
        self._action = SceneQuery
        self._start = start
        self._period = feedback_period_s
        self._log = node.get_logger()
        self.server = ActionServer(
            node, SceneQuery, action_name, execute_callback=self._execute,
            goal_callback=lambda _goal: GoalResponse.ACCEPT,
            cancel_callback=lambda _handle: CancelResponse.ACCEPT,
            callback_group=ReentrantCallbackGroup())

    def _execute(self, goal_handle: Any) -> Any:
        t0 = time.monotonic()
        job: Optional[QueryJob] = None
        try:
            job = self._start(goal_handle.request)
            while not job.wait(self._period):
                if goal_handle.is_cancel_requested:
                    return self._cancelled(goal_handle, job, t0)
                feedback = self._action.Feedback(stage=job.stage, elapsed_s=time.monotonic() - t0)
                goal_handle.publish_feedback(feedback)
            if goal_handle.is_cancel_requested:
                return self._cancelled(goal_handle, job, t0)
            result = job.result()
        except Exception as exc:  # a failing job must still end the goal with a reason
            self._log.error(f"~/query goal failed: {type(exc).__name__}: {exc}")
            result = self._action.Result(error_code=self._action.Result.MODEL_ERROR,
                                         error_msg=f"{type(exc).__name__}: {exc}")
        result.latency_s = time.monotonic() - t0
        if result.error_code == self._action.Result.SUCCESS:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return result

    def _cancelled(self, goal_handle: Any, job: QueryJob, t0: float) -> Any:
        job.cancel()
        goal_handle.canceled()
        elapsed = time.monotonic() - t0
        return self._action.Result(error_code=self._action.Result.CANCELLED,
                                   error_msg=f"cancelled by the client after {elapsed:.2f} s", latency_s=elapsed)

    def destroy(self) -> None:
        self.server.destroy()
