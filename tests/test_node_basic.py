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


def test_prompt_profile_parameter_sets_frames_and_size_and_applies_at_run_time():
    """query.prompt_profile picks the model input (gpt4scene: 32 frames, 512 px, as the public checkpoint
    was trained); 0 for n_frames / image_size_px means the profile's own; a change applies to the next query."""
    from rclpy.parameter import Parameter

    params = {**QUIET, "query.prompt_profile": "gpt4scene", "mapping.detector_dir": "none"}
    with Bringup(params, domain_id=fresh_domain()) as g:
        engine = g.node.worker.engine
        assert (engine.profile.name, engine.n_frames, engine.image_size_px) == ("gpt4scene", 32, 512)
        assert g.node.memory.detector_name is None  # "none": no detector thread
        result = g.node.set_parameters([Parameter("query.prompt_profile", value="default")])
        assert result[0].successful, result[0].reason
        assert (g.node.worker.engine.profile.name, g.node.worker.engine.n_frames) == ("default", 8)
        bad = g.node.set_parameters([Parameter("query.prompt_profile", value="llava")])
        assert not bad[0].successful and "gpt4scene" in bad[0].reason


def test_detector_auto_picks_the_best_present_or_none(tmp_path):
    from scene_vlm_ros.core.detector import find_best_detector
    from scene_vlm_ros.ros.scene_vlm_node import resolve_detector_dir

    best = find_best_detector()
    assert resolve_detector_dir("auto") == (None if best is None else best.model_dir)
    assert resolve_detector_dir("none") is None and resolve_detector_dir("") is None
    assert resolve_detector_dir(str(tmp_path)) == tmp_path
