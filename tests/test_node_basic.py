"""In-process node tests with real rclpy (Fast DDS) and real service calls: well-formed errors."""

from __future__ import annotations

import pytest

rclpy = pytest.importorskip("rclpy")
SceneQuery = pytest.importorskip("scene_vlm_interfaces.srv").SceneQuery

from scene_vlm_ros.ros.bringup import Bringup  # noqa: E402

from .rosutil import call, fresh_domain, make_client_node  # noqa: E402

pytestmark = pytest.mark.ros

QUIET = {"publish.bev_period_s": 0.0, "publish.cloud_period_s": 0.0, "publish.diagnostics_period_s": 0.0}


@pytest.fixture(scope="module")
def graph():
    with Bringup(QUIET, domain_id=fresh_domain()) as g:
        client_node = make_client_node(g)
        g.client = client_node.create_client(SceneQuery, "/scene_query")
        yield g


def ask(graph, question: str, task: int = SceneQuery.Request.AUTO, **kw) -> SceneQuery.Response:
    req = SceneQuery.Request(question=question, task=task, **kw)
    return call(graph.client, req)


def test_rmw_is_fast_dds(graph):
    assert rclpy.utilities.get_rmw_implementation_identifier() == "rmw_fastrtps_cpp"


def test_empty_question_is_invalid_request(graph):
    resp = ask(graph, "   ")
    assert resp.error_code == SceneQuery.Response.INVALID_REQUEST
    assert "empty" in resp.error_msg


def test_overlong_question_is_invalid_request(graph):
    resp = ask(graph, "where is the chair? " * 600)  # ~12 kB
    assert resp.error_code == SceneQuery.Response.INVALID_REQUEST
    assert "limit" in resp.error_msg


def test_unknown_task_is_invalid_request(graph):
    resp = ask(graph, "where is the chair?", task=42)
    assert resp.error_code == SceneQuery.Response.INVALID_REQUEST
    assert "task" in resp.error_msg


def test_caption_without_object_id_is_invalid_request(graph):
    resp = ask(graph, "", task=SceneQuery.Request.CAPTION)
    assert resp.error_code == SceneQuery.Response.INVALID_REQUEST
    assert "object_id" in resp.error_msg


def test_no_map_yet_before_any_frame(graph):
    resp = ask(graph, "where is the brown chair next to the table?")
    assert resp.error_code == SceneQuery.Response.NO_MAP_YET
    assert "no frame has been integrated" in resp.error_msg
    assert resp.header.frame_id == "odom"
    assert resp.boxes == []


def test_node_keeps_serving_after_bad_requests(graph):
    for _ in range(3):
        assert ask(graph, "").error_code == SceneQuery.Response.INVALID_REQUEST
    assert ask(graph, "how many chairs are there?").error_code == SceneQuery.Response.NO_MAP_YET
