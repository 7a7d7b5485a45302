"""The scene memory on real data: the 7-Scenes kitchen (fusion, segmentation, detector, map command).

Also the slow soak (memory stays flat over a long replay of the same room) and the slow 300-frame
synthetic evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from scene_vlm_ros.core.detector import DetectorUnavailableError, YoloFastestDetector, lift_detection
from scene_vlm_ros.core.geometry import transform_points
from scene_vlm_ros.core.memory import MemoryConfig, SceneMemory


@pytest.fixture(scope="module")
def kitchen_frames(kitchen_dir: Path):
    from scene_vlm_ros.datasets.seven_scenes import load_seven_scenes

    return list(load_seven_scenes(kitchen_dir, gravity_align=True).frames())


@pytest.fixture(scope="module")
def kitchen_memory(kitchen_frames):
    mem = SceneMemory(MemoryConfig())
    for f in kitchen_frames:
        assert mem.integrate(f).accepted
    return mem


def _footprint_gap(a, b) -> float:
    """Gap (m) between two instances' xy bounds (0 when they touch or overlap)."""
    d = np.maximum(0.0, np.maximum(a.aabb_min[:2] - b.aabb_max[:2], b.aabb_min[:2] - a.aabb_max[:2]))
    return float(np.linalg.norm(d))


def test_kitchen_fuses_into_a_consistent_gravity_aligned_map(kitchen_memory, kitchen_frames):
    snap = kitchen_memory.snapshot(refresh=True)
    assert snap.n_frames_integrated == 50 and len(snap.points) > 5000
    # Gravity aligned: the floor is the lowest large horizontal layer near z = 0.
    z = snap.points[:, 2]
    assert abs(np.percentile(z, 2)) < 0.1
    # Fused surfaces agree with each frame's own depth: project the cloud into a frame and compare.
    f = kitchen_frames[25]
    p_cam = transform_points(np.linalg.inv(f.T_world_camera), snap.points.astype(np.float64))
    ok = p_cam[:, 2] > 0.3
    u = np.round(p_cam[ok, 0] / p_cam[ok, 2] * f.intrinsics.fx + f.intrinsics.cx).astype(int)
    v = np.round(p_cam[ok, 1] / p_cam[ok, 2] * f.intrinsics.fy + f.intrinsics.cy).astype(int)
    inside = (u >= 0) & (u < 640) & (v >= 0) & (v < 480)
    d = f.depth_m[v[inside], u[inside]]
    zc = p_cam[ok][inside, 2]
    valid = d > 0
    # Visible points (not occluded: within 10 cm in front of / at the measured surface).
    visible = valid & (zc < d + 0.1)
    assert visible.sum() > 1000
    assert np.median(np.abs(zc[visible] - d[visible])) < 0.03
    assert kitchen_memory.stats()["frames_rejected"] == {}


def test_kitchen_table_and_chairs_are_separate_instances(kitchen_memory):
    snap = kitchen_memory.snapshot(refresh=True)
    assert snap.metadata["instance_source"] == "geometry-only"
    tables = [
        i for i in snap.instances
        if min(i.box.size[:2]) > 0.7 and max(i.box.size[:2]) > 1.2 and 0.6 < i.aabb_max[2] < 0.95
    ]
    assert len(tables) == 1, [(i.instance_id, i.box) for i in snap.instances]
    table = tables[0]
    # Chairs: separate instances next to the table, chair-sized, standing on the floor up to seat/back height.
    chairs = [
        i for i in snap.instances
        if i.instance_id != table.instance_id and _footprint_gap(i, table) < 0.5
        and max(i.box.size[:2]) < 1.3 and i.box.size[2] > 0.4 and i.aabb_min[2] < 0.25
    ]
    assert len(chairs) >= 1, [(i.instance_id, i.box) for i in snap.instances]
    assert len({table.instance_id, *(c.instance_id for c in chairs)}) == 1 + len(chairs)


def test_detector_finds_kitchen_objects_and_lifts_them(yolo_dir: Path, kitchen_frames):
    det = YoloFastestDetector(yolo_dir, score_threshold=0.3)
    labels: dict[str, int] = {}
    lifted = 0
    for f in kitchen_frames[::3]:
        for d in det.detect(f.color_rgb):
            labels[d.label] = labels.get(d.label, 0) + 1
            assert 0 <= d.box_xyxy[0] < d.box_xyxy[2] <= 640 and 0 <= d.box_xyxy[1] < d.box_xyxy[3] <= 480
            pts = lift_detection(d, f.depth_m, f.intrinsics, f.T_world_camera)
            if len(pts):
                lifted += 1
                # Lifted points lie in the room (gravity-aligned: between floor and ~2.5 m).
                assert np.percentile(pts[:, 2], 5) > -0.2 and np.percentile(pts[:, 2], 95) < 2.5
    assert lifted > 5
    # The kitchen's furniture and table-top things are COCO classes the model knows.
    assert set(labels) & {"chair", "cup", "diningtable", "sink", "tvmonitor", "book", "laptop"}
    with pytest.raises(DetectorUnavailableError, match="not found"):
        YoloFastestDetector(yolo_dir / "nope")


def test_kitchen_with_detector_labels_instances(yolo_dir: Path, kitchen_frames):
    mem = SceneMemory(MemoryConfig(use_detector=True, detector_model_dir=str(yolo_dir)))
    n_keyframes = sum(mem.integrate(f).is_keyframe for f in kitchen_frames)
    snap = mem.snapshot(refresh=True)
    assert snap.metadata["instance_source"] == "detector"
    labelled = [i for i in snap.instances if i.label]
    assert labelled and all(i.source == "detector" and 0 < i.score <= 1 for i in labelled)
    # The detector ran on keyframes only.
    assert mem.stats()["timings"]["detector"]["n"] == n_keyframes < len(kitchen_frames)


def test_map_command_on_the_kitchen_folder(kitchen_dir: Path, tmp_path: Path):
    from scene_vlm_ros.commands.map import map_command

    stats = map_command(kitchen_dir, tmp_path / "out", progress=False, max_frames=20)
    objects = json.loads((tmp_path / "out" / "objects.json").read_text())
    written = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["frames_integrated"] == 20 == written["frames_integrated"]
    assert written["per_frame_ms_p95"] >= written["per_frame_ms_p50"] > 0 and written["peak_rss_mb"] > 0
    assert objects and {"instance_id", "label", "score", "center", "size", "yaw"} <= set(objects[0])
    back = SceneMemory.load(tmp_path / "out" / "memory")
    assert [o["instance_id"] for o in objects] == [i.instance_id for i in back.snapshot().instances]


@pytest.mark.slow
def test_soak_memory_stays_flat_when_revisiting(kitchen_frames):
    """Replay the kitchen 8 times (400 frames, same room): blocks and RSS stay within 10%."""
    import resource

    mem = SceneMemory(MemoryConfig(refresh_every_n_frames=50))
    blocks, rss = [], []
    for rep in range(8):
        for i, f in enumerate(kitchen_frames):
            f2 = f.__class__(**{**f.__dict__, "stamp_s": rep * 100.0 + f.stamp_s, "frame_index": rep * 50 + i})
            assert mem.integrate(f2).accepted
        mem.snapshot()
        blocks.append(mem.stats()["blocks"])
        rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    assert max(blocks[1:]) <= 1.1 * blocks[1]
    assert rss[-1] <= 1.1 * rss[2]
    assert len(mem.snapshot().instances) < 40


@pytest.mark.slow
def test_synthetic_300_frames_recall():
    """The issue's acceptance numbers on the default synthetic scene (mask and geometry sources).

    Recall is asserted over the objects the camera actually sees (>= 200 mask pixels in >= 3
    frames; seed 0's walkthrough never looks at the lamp in the corner); the benchmark reports
    recall over all objects too.
    """
    from scene_vlm_ros.commands.bench_mapping import bench_mapping

    res = bench_mapping(seed=0, n_frames=300, sources=("mask", "geometry"))
    mask, geo = res["sources"]["mask"], res["sources"]["geometry"]
    assert mask["n_gt_observed"] >= mask["n_gt"] - 1
    assert mask["recall_observed@0.25"] >= 0.9 and mask["recall_observed@0.5"] >= 0.75
    assert mask["id_switches_per_100_frames"] < 1.0
    assert geo["recall_observed@0.25"] >= 0.7
