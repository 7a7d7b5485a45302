"""ros.query_action: the ~/query action gives feedback, finishes with the job's result, and a cancelled
goal returns promptly with CANCELLED (in-process DDS, a real rclpy ActionClient)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from scene_vlm_ros.vlm.engine import ErrorCode, QueryRequest, QueryResult, QueryWorker
from tests.rosutil import fresh_domain, wait_until

pytestmark = pytest.mark.ros
SLOW_ANSWER_S = 30.0


class SlowEngine:
    """Stands in for QueryEngine: answers after ``delay_s`` unless the worker's cancel event fires."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.started = threading.Event()
        self.cancelled = threading.Event()

    def answer(self, req: QueryRequest, snapshot: Any, deadline_s: float, cancel: threading.Event) -> QueryResult:
        self.started.set()
        if cancel.wait(self.delay_s):
            self.cancelled.set()
            return QueryResult(ErrorCode.TIMEOUT, "cancelled")
        return QueryResult(ErrorCode.SUCCESS, answer=f"answer to {req.question}", frame_id="map")


class _Snapshot:
    stamp_s = 0.0
    frame_id = "map"


@pytest.fixture()
def graph():
    rclpy = pytest.importorskip("rclpy")
    from rclpy.executors import MultiThreadedExecutor

    context = rclpy.context.Context()
    rclpy.init(context=context, domain_id=fresh_domain())
    executor = MultiThreadedExecutor(num_threads=4, context=context)
    server = rclpy.create_node("scene_vlm", context=context)
    client = rclpy.create_node("query_client", context=context)
    executor.add_node(server)
    executor.add_node(client)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        yield server, client
    finally:
        executor.shutdown()
        rclpy.shutdown(context=context)


def _server(node: Any, engine: SlowEngine, worker_timeout_s: float = 60.0):
    from scene_vlm_interfaces.action import SceneQuery
    from scene_vlm_ros.ros.query_action import QueryActionServer, WorkerQueryJob

    worker = QueryWorker(engine, queue_size=2, default_timeout_s=worker_timeout_s)

    def to_result(core: QueryResult) -> Any:
        return SceneQuery.Result(error_code=int(core.error_code), error_msg=core.error_msg, answer=core.answer)

    def start(goal: Any) -> WorkerQueryJob:
        req = QueryRequest(question=goal.question, timeout_s=goal.timeout_s)
        return WorkerQueryJob(worker, req, _Snapshot(), to_result,
                              lambda: SceneQuery.Result(error_code=SceneQuery.Result.BUSY, error_msg="queue full"))

    return QueryActionServer(node, start, feedback_period_s=0.1), worker


def _wait(future: Any, timeout_s: float = 20.0) -> Any:
    assert wait_until(future.done, timeout_s=timeout_s, period_s=0.01), "no answer from the action server"
    return future.result()


def test_goal_succeeds_with_feedback(graph) -> None:
    from action_msgs.msg import GoalStatus
    from rclpy.action import ActionClient

    from scene_vlm_interfaces.action import SceneQuery

    server_node, client_node = graph
    action_server, worker = _server(server_node, SlowEngine(delay_s=0.6))
    client = ActionClient(client_node, SceneQuery, "/scene_vlm/query")
    assert client.wait_for_server(timeout_sec=10)
    feedback: list[Any] = []
    handle = _wait(client.send_goal_async(SceneQuery.Goal(question="where is the chair?"),
                                          feedback_callback=lambda m: feedback.append(m.feedback)))
    assert handle.accepted
    response = _wait(handle.get_result_async())
    assert response.status == GoalStatus.STATUS_SUCCEEDED
    assert response.result.error_code == SceneQuery.Result.SUCCESS
    assert response.result.answer == "answer to where is the chair?"
    assert response.result.latency_s >= 0.5
    assert feedback, "no feedback while the model was answering"
    assert {f.stage for f in feedback} <= {"accepted", "answering", "done"} and feedback[-1].stage == "answering"
    assert all(b.elapsed_s >= a.elapsed_s for a, b in zip(feedback, feedback[1:]))
    worker.shutdown()
    action_server.destroy()


def test_cancelled_goal_returns_promptly(graph) -> None:
    from action_msgs.msg import GoalStatus
    from rclpy.action import ActionClient

    from scene_vlm_interfaces.action import SceneQuery

    server_node, client_node = graph
    engine = SlowEngine(delay_s=SLOW_ANSWER_S)
    action_server, worker = _server(server_node, engine, worker_timeout_s=SLOW_ANSWER_S)
    client = ActionClient(client_node, SceneQuery, "/scene_vlm/query")
    assert client.wait_for_server(timeout_sec=10)
    feedback: list[Any] = []
    handle = _wait(client.send_goal_async(SceneQuery.Goal(question="how many chairs?"),
                                          feedback_callback=lambda m: feedback.append(m.feedback)))
    assert engine.started.wait(10) and wait_until(lambda: bool(feedback), timeout_s=10)
    t_cancel = time.monotonic()
    cancel = _wait(handle.cancel_goal_async())
    assert len(cancel.goals_canceling) == 1
    response = _wait(handle.get_result_async())
    waited = time.monotonic() - t_cancel
    assert response.status == GoalStatus.STATUS_CANCELED
    assert response.result.error_code == SceneQuery.Result.CANCELLED
    assert "cancelled by the client" in response.result.error_msg
    # Promptly: the model would have answered only after SLOW_ANSWER_S.
    assert waited < SLOW_ANSWER_S / 3, waited
    # ... and the cancel reached the engine (its cancel event), which stopped waiting at once
    assert wait_until(lambda: engine.cancelled.is_set(), timeout_s=5)
    worker.shutdown(timeout_s=0.1)
    action_server.destroy()


def test_busy_worker_ends_goal_aborted_with_busy(graph) -> None:
    from action_msgs.msg import GoalStatus
    from rclpy.action import ActionClient

    from scene_vlm_interfaces.action import SceneQuery
    from scene_vlm_ros.ros.query_action import QueryActionServer, WorkerQueryJob

    class FullWorker:
        def submit(self, *_args: Any, **_kwargs: Any) -> bool:
            return False

    server_node, client_node = graph
    busy = SceneQuery.Result(error_code=SceneQuery.Result.BUSY, error_msg="queue full")
    action_server = QueryActionServer(
        server_node, lambda goal: WorkerQueryJob(FullWorker(), goal, None, lambda r: r, lambda: busy))
    client = ActionClient(client_node, SceneQuery, "/scene_vlm/query")
    assert client.wait_for_server(timeout_sec=10)
    handle = _wait(client.send_goal_async(SceneQuery.Goal(question="q")))
    response = _wait(handle.get_result_async())
    assert response.status == GoalStatus.STATUS_ABORTED
    assert response.result.error_code == SceneQuery.Result.BUSY and response.result.error_msg == "queue full"
    action_server.destroy()


# ---- the node's own ~/query action ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def node_graph():
    pytest.importorskip("rclpy")
    from scene_vlm_ros.ros.bringup import Bringup
    from scene_vlm_ros.vlm.types import GenerationTimeout, VLMBackend
    from tests.rosutil import make_client_node

    class CancellableSlowBackend(VLMBackend):
        name = "slow-test"
        needs_images = False

        def load(self) -> None:
            pass

        def generate(self, request: Any, *, timeout_s: float, cancel: Any = None) -> str:
            if cancel is not None and cancel.wait(min(SLOW_ANSWER_S, timeout_s)):
                raise GenerationTimeout("cancelled")
            return "No matching object."

    quiet = {"publish.bev_period_s": 0.0, "publish.cloud_period_s": 0.0, "publish.diagnostics_period_s": 0.0,
             "publish.objects_period_s": 0.0, "query.timeout_s": 60.0}
    with Bringup(quiet, backend=CancellableSlowBackend(), domain_id=fresh_domain()) as g:
        g.client_node = make_client_node(g, "action_client")
        yield g


def test_node_action_answers_no_map_yet_then_cancels_promptly(node_graph) -> None:
    from action_msgs.msg import GoalStatus
    from rclpy.action import ActionClient

    from scene_vlm_interfaces.action import SceneQuery
    from scene_vlm_ros.datasets.render import generate_sequence
    from scene_vlm_ros.datasets.synthetic import generate_layout

    client = ActionClient(node_graph.client_node, SceneQuery, "/scene_vlm/query")
    assert client.wait_for_server(timeout_sec=10)
    handle = _wait(client.send_goal_async(SceneQuery.Goal(question="where is the chair?")))
    early = _wait(handle.get_result_async())
    assert early.status == GoalStatus.STATUS_ABORTED
    assert early.result.error_code == SceneQuery.Result.NO_MAP_YET

    for f in generate_sequence(generate_layout(0), n_frames=2, width=160, height=120, seed=0):
        node_graph.node.memory.integrate(f.frame)
    feedback: list[Any] = []
    handle = _wait(client.send_goal_async(SceneQuery.Goal(question="is there a piano?", task=SceneQuery.Goal.QA),
                                          feedback_callback=lambda m: feedback.append(m.feedback)))
    assert wait_until(lambda: any(f.stage == "answering" for f in feedback), timeout_s=10)
    t_cancel = time.monotonic()
    _wait(handle.cancel_goal_async())
    response = _wait(handle.get_result_async())
    assert response.status == GoalStatus.STATUS_CANCELED
    assert response.result.error_code == SceneQuery.Result.CANCELLED
    assert time.monotonic() - t_cancel < SLOW_ANSWER_S / 3
    # the cancel reached the model: its generation stopped long before SLOW_ANSWER_S
    assert wait_until(lambda: node_graph.node.worker.stats.failed + node_graph.node.worker.stats.succeeded >= 1,
                      timeout_s=SLOW_ANSWER_S / 3)
