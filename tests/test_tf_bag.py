"""TF end to end: a bag whose camera pose comes only through /tf and /tf_static (no /odom), with a
localiser's map -> odom offset, is replayed into the node running pose_source tf; the map, its boxes
and ~/list_objects are in `map` and match the ground truth moved by that offset."""

from __future__ import annotations

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from scene_vlm_ros.ros import tf_poses  # noqa: E402

pytestmark = [
    pytest.mark.ros,
    pytest.mark.skipif(not tf_poses.tf2_available(),
                       reason="tf2_ros is not importable (built from ../shared/vendor by setup.d/10-ros-vendor.sh)"),
]

N_FRAMES = 90
YAW_MAP_ODOM = 0.6
T_MAP_ODOM_XYZ = (3.0, -2.0, 0.0)


@pytest.fixture(scope="module")
def tf_scene(tmp_path_factory):
    from scene_vlm_ros.bag.writer import write_bag
    from scene_vlm_ros.commands.make_bag import START_STAMP_NS
    from scene_vlm_ros.core.geometry import make_transform, rot_z
    from scene_vlm_ros.datasets.render import generate_sequence
    from scene_vlm_ros.datasets.synthetic import generate_layout

    out = tmp_path_factory.mktemp("tf_bag")
    layout = generate_layout(0)
    seq = list(generate_sequence(layout, n_frames=N_FRAMES, width=320, height=240, speed_mps=None, seed=0, fps=10.0))
    T_map_odom = make_transform(rot_z(YAW_MAP_ODOM), np.array(T_MAP_ODOM_XYZ))  # noqa: N806
    counts = write_bag(out / "tf.mcap", [(f.frame, f.T_odom_base) for f in seq], seq[0].T_base_camera_optical,
                       with_instances=True, start_stamp_ns=START_STAMP_NS, odometry=False, T_map_odom=T_map_odom)
    assert counts["/odom"] == 0 and counts["/tf"] == N_FRAMES and counts["/tf_static"] == 1
    return {"bag": out / "tf.mcap", "layout": layout, "T_map_odom": T_map_odom}


@pytest.fixture(scope="module")
def tf_graph(tf_scene):
    from scene_vlm_ros.ros.bringup import Bringup

    from .rosutil import fresh_domain, replay_in_own_process

    params = {"publish.bev_period_s": 0.0, "publish.cloud_period_s": 0.0, "publish.diagnostics_period_s": 0.0,
              "publish.objects_period_s": 0.0, "topics.qos_depth": 200, "model.backend": "fallback",
              "pose_source": "tf", "map_frame": "map", "topics.odom": "",
              # a wrong extrinsic: TF mode must not use it (the URDF's chain on /tf_static does)
              "camera_extrinsic": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]}
    with Bringup(params, domain_id=fresh_domain()) as g:
        replay_in_own_process(tf_scene["bag"], g.domain_id, rate=1.0,
                              wait_for=("/camera/color/image_raw", "/camera/depth/image_raw", "/tf"))
        g.node.mapper.wait_settled(timeout_s=30.0, quiet_s=2.0)  # until no new frame for 2 s, refreshed
        yield g


def _gt_box_in(T, obj):  # noqa: N803
    from scene_vlm_ros.core.types import OrientedBox3D

    center = T[:3, :3] @ np.asarray(obj.center, dtype=np.float64) + T[:3, 3]
    yaw = float(obj.yaw) + float(np.arctan2(T[1, 0], T[0, 0]))
    return OrientedBox3D(tuple(center), tuple(obj.size), yaw)


def test_tf_bag_maps_into_map_frame(tf_graph, tf_scene) -> None:
    snap = tf_graph.node.memory.snapshot(refresh=True)
    stats = tf_graph.node.pipeline.stats()
    assert snap.n_frames_integrated >= 0.7 * N_FRAMES, {k: stats[k] for k in ("received", "dropped", "frames_out")}
    assert snap.frame_id == "map"
    assert tf_graph.node.pipeline.stats()["dropped"].get("no_extrinsic", 0) == 0


def test_boxes_in_map_match_ground_truth_moved_by_map_odom(tf_graph, tf_scene) -> None:
    from scene_vlm_interfaces.srv import ListObjects
    from scene_vlm_ros.core.geometry import box_iou
    from scene_vlm_ros.ros.conversions import box_to_oriented_box

    from .rosutil import call, make_client_node

    client = make_client_node(tf_graph, "tf_list_client").create_client(ListObjects, "/scene_vlm/list_objects")
    resp = call(client, ListObjects.Request(label_filter="table"))
    assert resp.header.frame_id == "map"
    assert resp.objects, "no table in the map"
    table = next(o for o in tf_scene["layout"].objects if o.label == "table")
    gt_map = _gt_box_in(tf_scene["T_map_odom"], table)
    gt_odom = _gt_box_in(np.eye(4), table)
    best = max(resp.objects, key=lambda b: box_iou(box_to_oriented_box(b), gt_map))
    assert box_iou(box_to_oriented_box(best), gt_map) >= 0.5
    # the map -> odom offset was applied: in odometry coordinates the box is somewhere else
    assert box_iou(box_to_oriented_box(best), gt_odom) < 0.05
    # every uniquely labelled object lies where the ground truth, moved into map, says
    labels = [o.label for o in tf_scene["layout"].objects]
    snap = tf_graph.node.memory.snapshot()
    for obj in tf_scene["layout"].objects:
        if labels.count(obj.label) != 1:
            continue
        inst = [i for i in snap.instances if i.label == obj.label]
        if inst:
            gt = _gt_box_in(tf_scene["T_map_odom"], obj)
            dist = min(np.linalg.norm(np.asarray(i.box.center[:2]) - np.asarray(gt.center[:2])) for i in inst)
            assert dist < 0.5, (obj.label, dist)
