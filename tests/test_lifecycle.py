"""The managed lifecycle: autostart:=false waits unconfigured for a lifecycle client; run-time parameter
changes are applied to the next query, or refused with the transitions they need."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from typing import Any

import pytest

rclpy = pytest.importorskip("rclpy")
from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from scene_vlm_interfaces.srv import SceneQuery  # noqa: E402
from scene_vlm_ros.ros.bringup import Bringup  # noqa: E402
from scene_vlm_ros.vlm.types import GenerationTimeout, VLMBackend  # noqa: E402

from .rosutil import call, fresh_domain, make_client_node, wait_until  # noqa: E402

pytestmark = pytest.mark.ros
QUIET = {"publish.bev_period_s": 0.0, "publish.cloud_period_s": 0.0, "publish.diagnostics_period_s": 0.0,
         "publish.objects_period_s": 0.0}


# ---- autostart:=false under a lifecycle client (the node as its own process) ------------------------------

@pytest.fixture()
def node_process():
    exe = shutil.which("scene_vlm_node")
    if exe is None:
        pytest.skip("scene_vlm_node console script not on PATH (run through scripts/with_env.sh)")
    domain = fresh_domain()
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain)}
    proc = subprocess.Popen([exe, "--ros-args", "-p", "autostart:=false", "-p", "model.backend:=none",
                             "-p", "publish.diagnostics_period_s:=0.0"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    context = rclpy.context.Context()
    rclpy.init(context=context, domain_id=domain)
    client = rclpy.create_node("lifecycle_test_client", context=context)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(client)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        yield client, proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        executor.shutdown()
        rclpy.shutdown(context=context)
        print(out[-3000:])


def _state(client: Any) -> int:
    get_state = client.create_client(GetState, "/scene_vlm/get_state")
    return call(get_state, GetState.Request(), timeout_s=30).current_state.id


def _transition(client: Any, transition_id: int) -> bool:
    change = client.create_client(ChangeState, "/scene_vlm/change_state")
    req = ChangeState.Request()
    req.transition.id = transition_id
    return call(change, req, timeout_s=60).success


def test_autostart_false_stays_unconfigured_until_a_client_drives_it(node_process) -> None:
    client, proc = node_process
    get_state = client.create_client(GetState, "/scene_vlm/get_state")
    assert get_state.wait_for_service(timeout_sec=60), "the node process never offered its lifecycle services"
    assert _state(client) == State.PRIMARY_STATE_UNCONFIGURED
    time.sleep(2.0)  # nothing configures it by itself
    assert proc.poll() is None and _state(client) == State.PRIMARY_STATE_UNCONFIGURED
    # Not configured: the query service answers, with the reason.
    query = client.create_client(SceneQuery, "/scene_query")
    resp = call(query, SceneQuery.Request(question="where is the chair?"))
    assert resp.error_code == SceneQuery.Response.NO_MAP_YET and "not configured" in resp.error_msg
    assert _transition(client, Transition.TRANSITION_CONFIGURE)
    assert _state(client) == State.PRIMARY_STATE_INACTIVE
    assert _transition(client, Transition.TRANSITION_ACTIVATE)
    assert _state(client) == State.PRIMARY_STATE_ACTIVE


# ---- run-time parameter changes (in-process graph) ----------------------------------------------------------

class SlowBackend(VLMBackend):
    """Answers "No matching object." after ``delay_s`` (honouring timeout and cancel)."""

    name = "slow-test"
    needs_images = False

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    def load(self) -> None:
        pass

    def generate(self, request: Any, *, timeout_s: float, cancel: Any = None) -> str:
        if cancel is not None and cancel.wait(min(self.delay_s, timeout_s)):
            raise GenerationTimeout("cancelled")
        if self.delay_s > timeout_s:
            raise GenerationTimeout(f"no answer within {timeout_s} s")
        return "No matching object."


@pytest.fixture(scope="module")
def mapped_graph():
    from scene_vlm_ros.datasets.render import generate_sequence
    from scene_vlm_ros.datasets.synthetic import generate_layout

    with Bringup({**QUIET, "model.backend": "fallback"}, backend=SlowBackend(0.5), domain_id=fresh_domain()) as g:
        for f in generate_sequence(generate_layout(0), n_frames=3, width=160, height=120, seed=0):
            g.node.memory.integrate(f.frame)
        g.client = make_client_node(g, "param_client")
        g.query = g.client.create_client(SceneQuery, "/scene_query")
        g.set_params = g.client.create_client(SetParameters, "/scene_vlm/set_parameters")
        yield g


def _set(graph: Bringup, name: str, value: Any) -> Any:
    req = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
    return call(graph.set_params, req).results[0]


def test_query_timeout_change_takes_effect_in_the_next_query(mapped_graph) -> None:
    question = SceneQuery.Request(question="is there a piano?", task=SceneQuery.Request.QA)
    first = call(mapped_graph.query, question)
    assert first.error_code in (SceneQuery.Response.NO_MATCH, SceneQuery.Response.SUCCESS), first.error_msg
    assert _set(mapped_graph, "query.timeout_s", 0.1).successful
    second = call(mapped_graph.query, question)
    assert second.error_code == SceneQuery.Response.TIMEOUT, second.error_msg
    assert mapped_graph.node.get_parameter("query.timeout_s").value == 0.1
    assert _set(mapped_graph, "query.timeout_s", 30.0).successful
    third = call(mapped_graph.query, question)
    assert third.error_code != SceneQuery.Response.TIMEOUT, third.error_msg


def test_prompt_size_change_reaches_the_engine(mapped_graph) -> None:
    assert _set(mapped_graph, "query.n_frames", 3).successful
    assert _set(mapped_graph, "query.image_size_px", 256).successful
    engine = mapped_graph.node.worker.engine
    assert (engine.n_frames, engine.image_size_px) == (3, 256)


def test_publish_rate_change_starts_the_output(mapped_graph) -> None:
    from visualization_msgs.msg import MarkerArray

    got: list[MarkerArray] = []
    mapped_graph.client.create_subscription(MarkerArray, "/scene_vlm/objects", got.append, 10)
    time.sleep(0.5)
    assert got == []  # QUIET: objects_period_s = 0 (off)
    assert _set(mapped_graph, "publish.objects_period_s", 0.2).successful
    assert wait_until(lambda: len(got) >= 2, timeout_s=10)
    assert _set(mapped_graph, "publish.objects_period_s", 0.0).successful


def test_configure_time_parameter_is_refused_with_the_transition_named(mapped_graph) -> None:
    result = _set(mapped_graph, "mapping.voxel_size_m", 0.02)
    assert not result.successful
    assert "deactivate" in result.reason and "cleanup" in result.reason and "configure" in result.reason
    assert mapped_graph.node.get_parameter("mapping.voxel_size_m").value == 0.05
    bad = _set(mapped_graph, "query.timeout_s", -1.0)
    assert not bad.successful and "out of range" in bad.reason  # the descriptor range, checked by rclpy
