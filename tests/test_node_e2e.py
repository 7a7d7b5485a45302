"""End to end with real rclpy: a synthetic bag replayed onto the node's topics, then /scene_query.

The bag is written by our own writer (rosbags, MCAP), published as raw CDR by the replayer node,
synchronised, fused, segmented, and queried through a real service client. Faults (missing and
corrupt models, backends that raise or hang, request floods) are exercised on the same graph.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")
SceneQuery = pytest.importorskip("scene_vlm_interfaces.srv").SceneQuery
ListObjects = pytest.importorskip("scene_vlm_interfaces.srv").ListObjects

from scene_vlm_ros.core.geometry import box_iou, matrix_to_quat_xyzw  # noqa: E402
from scene_vlm_ros.core.types import OrientedBox3D  # noqa: E402
from scene_vlm_ros.ros.bringup import Bringup  # noqa: E402
from scene_vlm_ros.ros.conversions import box_to_oriented_box  # noqa: E402
from scene_vlm_ros.ros.scene_vlm_node import SERVICE_QOS  # noqa: E402
from scene_vlm_ros.vlm.types import GenerationTimeout, ModelError, VLMBackend  # noqa: E402

from .rosutil import call, fresh_domain, make_client_node, replay_in_own_process, wait_until  # noqa: E402

pytestmark = pytest.mark.ros

QUIET = {"publish.bev_period_s": 0.0, "publish.cloud_period_s": 0.0, "publish.diagnostics_period_s": 0.0,
         "topics.qos_depth": 200,
         "publish.objects_period_s": 0.0}
N_FRAMES = 120


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A synthetic room rendered at 320x240 along one loop, written as an MCAP bag with ground truth."""
    from scene_vlm_ros.bag.writer import write_bag
    from scene_vlm_ros.datasets.render import generate_sequence
    from scene_vlm_ros.datasets.synthetic import generate_layout

    out = tmp_path_factory.mktemp("e2e")
    layout = generate_layout(0)
    # One loop of the room in 12 s of bag time (10 Hz stamps: a walking pace of ~1.3 m/s), replayed
    # at 1.0x by a player in another process.
    seq = list(generate_sequence(layout, n_frames=N_FRAMES, width=320, height=240, speed_mps=None, seed=0,
                                 fps=10.0))
    T = seq[0].T_base_camera_optical
    write_bag(out / "scene.mcap", [(f.frame, f.T_odom_base) for f in seq], T, with_instances=True)
    # The same walk again, later in time: the robot goes round the room a second time.
    write_bag(out / "scene_again.mcap", [(f.frame, f.T_odom_base) for f in seq], T, with_instances=True,
              start_stamp_ns=60_000_000_000)
    extrinsic = [float(v) for v in [*T[:3, 3], *matrix_to_quat_xyzw(T[:3, :3])]]
    return {"bag": out / "scene.mcap", "bag_again": out / "scene_again.mcap", "layout": layout,
            "extrinsic": extrinsic}


def _replay(graph: Bringup, bag: Path) -> dict:
    """The player runs in its own process at 1.0x, as a camera driver does on a robot."""
    return replay_in_own_process(bag, graph.domain_id, rate=1.0,
                                 wait_for=("/camera/color/image_raw", "/camera/depth/image_raw", "/odom"))


def _integrated(graph: Bringup) -> int:
    return graph.node.memory.snapshot(allow_stale=True).n_frames_integrated if graph.node.memory else 0


def _settle(graph: Bringup) -> int:
    """Wait until the node stops integrating new frames and has refreshed the map over them."""
    return graph.node.mapper.wait_settled(timeout_s=30.0, quiet_s=1.0)


def _gt_box(obj) -> OrientedBox3D:
    return OrientedBox3D(tuple(obj.center), tuple(obj.size), float(obj.yaw))


def _unique_label_objects(layout) -> list:
    labels = [o.label for o in layout.objects]
    return [o for o in layout.objects if labels.count(o.label) == 1]


class OracleBackend(VLMBackend):
    """Test backend standing in for a perfect VLM: it answers with the ID of the instance that best
    matches a ground-truth object, after checking that it was really shown the BEV and frames.

    ``mode`` switches it into the failure behaviours the node must survive."""

    name = "oracle-test"
    needs_images = True

    def __init__(self, gt_objects):
        self.gt = {o.label: o for o in gt_objects}
        self.mode = "ok"
        self.release = threading.Event()
        self.seen_images: list[int] = []
        self.delay_s = 0.0

    def load(self) -> None:
        pass

    def generate(self, request, *, timeout_s, cancel=None) -> str:
        if self.mode == "raise":
            raise ModelError("CUDA error: an illegal memory access was encountered (simulated)")
        if self.mode == "hang":  # ignores its timeout on purpose: the worker must not
            self.release.wait(30.0)
            raise GenerationTimeout("released")
        if self.delay_s:
            time.sleep(self.delay_s)
        images = [c for m in request.messages for c in m["content"] if c.get("type") == "image"]
        self.seen_images.append(len(images))
        target = next((o for label, o in self.gt.items() if label in request.question), None)
        if target is None or request.snapshot is None:
            return "No matching object."
        best = max(request.snapshot.instances, key=lambda i: box_iou(i.box, _gt_box(target)))
        return f"<OBJ{best.instance_id:03d}>."


@pytest.fixture(scope="module")
def fallback_graph(scene):
    params = {**QUIET, "camera_extrinsic": scene["extrinsic"], "model.backend": "fallback"}
    with Bringup(params, domain_id=fresh_domain()) as g:
        _replay(g, scene["bag"])
        _settle(g)
        g.client = make_client_node(g, "fallback_client").create_client(SceneQuery, "/scene_query")
        yield g


def test_bag_is_mapped_with_instances(fallback_graph, scene):
    snap = fallback_graph.node.memory.snapshot(refresh=True)
    diag = {kv.key: kv.value for kv in fallback_graph.node.diagnostics().values}
    assert snap.n_frames_integrated >= 0.7 * N_FRAMES, str({k: v for k, v in diag.items() if not k.startswith("rate")})
    labels = {i.label for i in snap.instances}
    assert {o.label for o in scene["layout"].objects} <= labels | {""}, labels


def test_fallback_grounding_box_overlaps_ground_truth(fallback_graph, scene):
    """Every uniquely labelled object is grounded to the instance that best matches it (the
    fallback picks the right instance), and the table (large, seen from every side) comes back
    with IoU >= 0.5 against ground truth."""
    targets = _unique_label_objects(scene["layout"])
    assert any(o.label == "table" for o in targets), "layout seed 0 is expected to have one table"
    snap = fallback_graph.node.memory.snapshot()
    for obj in targets:
        resp = call(fallback_graph.client, SceneQuery.Request(question=f"where is the {obj.label}?",
                                                              task=SceneQuery.Request.GROUNDING))
        assert resp.error_code == SceneQuery.Response.SUCCESS, resp.error_msg
        assert resp.header.frame_id == "odom"
        assert len(resp.boxes) == 1 and resp.boxes[0].label == obj.label
        best = max(snap.instances, key=lambda i: box_iou(i.box, _gt_box(obj)))
        assert resp.boxes[0].instance_id == best.instance_id, obj.label
        if obj.label == "table":
            iou = box_iou(box_to_oriented_box(resp.boxes[0]), _gt_box(obj))
            assert iou >= 0.5, f"table box IoU {iou:.2f}"
        # (how well thin objects such as a lamp are reconstructed is measured by `bench mapping`)


def test_fallback_counts_and_reports_missing_labels(fallback_graph, scene):
    n_chairs = sum(o.label == "chair" for o in scene["layout"].objects)
    resp = call(fallback_graph.client, SceneQuery.Request(question="how many chairs are in the room?"))
    assert resp.error_code == SceneQuery.Response.SUCCESS, resp.error_msg
    assert str(n_chairs) in resp.answer
    resp = call(fallback_graph.client, SceneQuery.Request(question="where is the piano?",
                                                          task=SceneQuery.Request.GROUNDING))
    assert resp.error_code == SceneQuery.Response.NO_MATCH
    assert resp.boxes == []


def test_fallback_needs_model_for_captions(fallback_graph):
    snap = fallback_graph.node.memory.snapshot()
    resp = call(fallback_graph.client, SceneQuery.Request(question="", task=SceneQuery.Request.CAPTION,
                                                          object_id=snap.instances[0].instance_id))
    assert resp.error_code == SceneQuery.Response.MODEL_UNAVAILABLE
    assert "model" in resp.error_msg


def test_list_objects_service(fallback_graph):
    cli = make_client_node(fallback_graph, "list_client").create_client(ListObjects, "/scene_vlm/list_objects")
    resp = call(cli, ListObjects.Request(label_filter="chair"))
    assert resp.objects and all("chair" in o.label for o in resp.objects)
    assert resp.n_frames_integrated > 0


@pytest.fixture(scope="module")
def oracle_graph(scene):
    backend = OracleBackend(scene["layout"].objects)
    params = {**QUIET, "camera_extrinsic": scene["extrinsic"], "query.queue_size": 4, "query.n_frames": 4}
    with Bringup(params, domain_id=fresh_domain(), backend=backend) as g:
        g.backend = backend
        _replay(g, scene["bag"])
        _settle(g)
        g.client = make_client_node(g, "oracle_client").create_client(SceneQuery, "/scene_query",
                                                                       qos_profile=SERVICE_QOS)
        yield g


def test_model_path_through_prompt_parse_and_boxes(oracle_graph, scene):
    g = oracle_graph
    obj = _unique_label_objects(scene["layout"])[0]
    resp = call(g.client, SceneQuery.Request(question=f"Where is the {obj.label}?", task=SceneQuery.Request.GROUNDING))
    assert resp.error_code == SceneQuery.Response.SUCCESS, resp.error_msg
    assert box_iou(box_to_oriented_box(resp.boxes[0]), _gt_box(obj)) >= 0.5
    # the backend was shown marked frames plus the BEV
    assert g.backend.seen_images and g.backend.seen_images[-1] >= 2


def test_raising_backend_gives_model_error_and_mapping_continues(oracle_graph, scene):
    g = oracle_graph
    g.backend.mode = "raise"
    try:
        resp = call(g.client, SceneQuery.Request(question="where is the table?"))
        assert resp.error_code == SceneQuery.Response.MODEL_ERROR
        assert "illegal memory access" in resp.error_msg
    finally:
        g.backend.mode = "ok"
    resp = call(g.client, SceneQuery.Request(question="where is the table?", task=SceneQuery.Request.GROUNDING))
    assert resp.error_code == SceneQuery.Response.SUCCESS


def test_hanging_backend_times_out_while_mapping_continues(oracle_graph, scene):
    g = oracle_graph
    g.backend.mode = "hang"
    before = _integrated(g)
    try:
        future = g.client.call_async(SceneQuery.Request(question="where is the table?", timeout_s=1.0))
        t0 = time.monotonic()
        # mapping goes on while the model is stuck: a second round of the room (later stamps; the
        # memory refuses time going backwards)
        replay_thread = threading.Thread(target=_replay, args=(g, scene["bag_again"]))
        replay_thread.start()
        assert wait_until(future.done, timeout_s=10.0)
        assert time.monotonic() - t0 < 5.0
        resp = future.result()
        assert resp.error_code == SceneQuery.Response.TIMEOUT, resp.error_msg
        replay_thread.join(timeout=30)
    finally:
        g.backend.mode = "ok"
        g.backend.release.set()
    assert _settle(g) > before
    resp = call(g.client, SceneQuery.Request(question="where is the table?", task=SceneQuery.Request.GROUNDING))
    assert resp.error_code == SceneQuery.Response.SUCCESS, resp.error_msg


def test_fifty_concurrent_requests_all_answered(oracle_graph):
    g = oracle_graph
    g.backend.delay_s = 0.05
    try:
        futures = [g.client.call_async(SceneQuery.Request(question="where is the table?",
                                                          task=SceneQuery.Request.GROUNDING, timeout_s=60.0))
                   for _ in range(50)]
        assert wait_until(lambda: all(f.done() for f in futures), timeout_s=90.0)
    finally:
        g.backend.delay_s = 0.0
    codes = [f.result().error_code for f in futures]
    assert set(codes) <= {SceneQuery.Response.SUCCESS, SceneQuery.Response.BUSY}, codes
    assert codes.count(SceneQuery.Response.BUSY) >= 1  # queue of 4 overflowed
    assert codes.count(SceneQuery.Response.SUCCESS) >= 4
    busy = next(f.result() for f in futures if f.result().error_code == SceneQuery.Response.BUSY)
    assert "try again" in busy.error_msg


@pytest.mark.parametrize("model_dir_kind", ["missing", "corrupt"])
def test_missing_or_corrupt_model_gives_model_unavailable(scene, tmp_path, model_dir_kind):
    model_dir = tmp_path / "model"
    if model_dir_kind == "corrupt":
        model_dir.mkdir()
        (model_dir / "config.json").write_text("{ this is not json")
        (model_dir / "model.safetensors").write_bytes(b"\x00" * 64)
    params = {**QUIET, "camera_extrinsic": scene["extrinsic"], "model.backend": "transformers",
              "model.path": str(model_dir)}
    with Bringup(params, domain_id=fresh_domain()) as g:
        assert g.node.backend is None and g.node.backend_error
        _replay(g, scene["bag"])
        assert _settle(g) > 0  # the node maps without a model
        cli = make_client_node(g, "nomodel_client").create_client(SceneQuery, "/scene_query")
        resp = call(cli, SceneQuery.Request(question="where is the table?"))
        assert resp.error_code == SceneQuery.Response.MODEL_UNAVAILABLE
        assert str(model_dir) in resp.error_msg or "model" in resp.error_msg
