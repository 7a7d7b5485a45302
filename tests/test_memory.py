"""SceneMemory end to end on rendered frames of a known room: instances, snapshot, save/load, threads."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from scene_vlm_ros.core.memory import FORMAT_VERSION, MemoryConfig, MemoryConfigError, MemoryFormatError, SceneMemory
from scene_vlm_ros.eval.mapping_metrics import id_switches, instance_recall, match_instances, oracle_ceiling
from tests.test_fusion import OBJECTS, RoomRenderer, gt_objects, orbit_frames


def _config(**kw) -> MemoryConfig:
    base = dict(voxel_size_m=0.04, refresh_every_n_frames=10, seg_support_min_extent_m=1.5)
    base.update(kw)
    return MemoryConfig(**base)


@pytest.fixture(scope="module")
def renderer() -> RoomRenderer:
    return RoomRenderer()


@pytest.fixture(scope="module")
def mask_run(renderer):
    """A memory fed 40 masked frames; snapshots every 10 frames with their GT matchings."""
    mem = SceneMemory(_config())
    history = []
    results = []
    for i, f in enumerate(orbit_frames(renderer, 40)):
        results.append(mem.integrate(f))
        if i % 10 == 9:
            history.append(match_instances(mem.snapshot().instances, gt_objects(), 0.25))
    return mem, history, results


def test_mask_source_recovers_every_object_with_labels_and_stable_ids(mask_run):
    mem, history, results = mask_run
    assert all(r.accepted for r in results)
    snap = mem.snapshot(refresh=True)
    gt = gt_objects()
    recall = instance_recall(snap.instances, gt, (0.25, 0.5))
    assert recall[0.25] == 1.0 and recall[0.5] == 1.0
    assert oracle_ceiling(snap.instances, gt)[0.5] == 1.0
    assert id_switches(history) == 0
    labels = {inst.label for inst in snap.instances if inst.source == "mask"}
    assert labels == {lbl for _i, lbl, *_ in OBJECTS}
    assert snap.metadata["instance_source"] == "mask"
    table = next(i for i in snap.instances if i.label == "table")
    assert table.n_observations >= 10
    assert table.first_seen_s == 0.0 and table.last_seen_s > 3.0
    assert 0.9 <= table.score <= 1.0
    # Points are the object's: inside its GT box grown by a couple of voxels.
    inside = gt[0].box.contains(table.points, margin_m=0.08)
    assert inside.mean() > 0.98
    # Best keyframes exist and really see the table centre in their image.
    assert table.best_keyframe_ids
    kf = snap.keyframe(table.best_keyframe_ids[0])
    assert kf is not None
    from scene_vlm_ros.core.geometry import project_points

    uv, z = project_points(table.center[None], kf.intrinsics, kf.T_world_camera)
    assert z[0] > 0 and 0 <= uv[0, 0] < kf.intrinsics.width and 0 <= uv[0, 1] < kf.intrinsics.height


def test_keyframes_are_bounded_and_posed_at_their_own_stamp(renderer):
    frames = orbit_frames(renderer, 40)
    mem = SceneMemory(_config(max_keyframes=5, use_geometry=False))
    by_stamp = {f.stamp_s: f for f in frames}
    n_kf = sum(mem.integrate(f).is_keyframe for f in frames)
    snap = mem.snapshot()
    assert n_kf > 5 and len(snap.keyframes) == 5
    for kf in snap.keyframes:
        src = by_stamp[kf.stamp_s]
        np.testing.assert_array_equal(kf.T_world_camera, src.T_world_camera)
        np.testing.assert_array_equal(kf.depth_m, src.depth_m)
    # A still camera adds no keyframes after the first.
    still = SceneMemory(_config(use_geometry=False))
    flags = [still.integrate(frames[0].__class__(**{**frames[0].__dict__, "stamp_s": 0.1 * k})).is_keyframe
             for k in range(5)]
    assert flags == [True, False, False, False, False]


def test_geometry_only_memory_works_and_says_so(renderer, caplog):
    mem = SceneMemory(_config())
    with caplog.at_level("WARNING"):
        for f in orbit_frames(renderer, 24, with_mask=False):
            assert mem.integrate(f).accepted
    assert sum("geometry only" in r.message for r in caplog.records) == 1  # logged once
    snap = mem.snapshot(refresh=True)
    assert snap.metadata["instance_source"] == "geometry-only"
    assert mem.stats()["instance_source"] == "geometry-only"
    assert instance_recall(snap.instances, gt_objects(), (0.25,))[0.25] == 1.0
    assert all(i.label == "" and i.source == "geometry" for i in snap.instances)


def test_snapshot_is_cached_between_refreshes(renderer):
    frames = orbit_frames(renderer, 12)
    mem = SceneMemory(_config(refresh_every_n_frames=5, use_geometry=False))
    for f in frames[:3]:
        mem.integrate(f)
    s1 = mem.snapshot()
    assert s1.n_frames_integrated == 3 and len(s1.points) > 0
    mem.integrate(frames[3])
    s2 = mem.snapshot()
    assert s2.points is s1.points  # same extraction reused: no re-extraction within N frames
    assert s2.n_frames_integrated == 4
    s3 = mem.snapshot(refresh=True)
    assert s3.points is not s1.points
    for f in frames[4:9]:
        mem.integrate(f)
    assert mem.snapshot().points is not s3.points  # refreshed after N frames
    with pytest.raises(ValueError):
        s3.points[0, 0] = 1.0  # immutable


def test_save_load_round_trip(mask_run, tmp_path: Path):
    mem = mask_run[0]
    snap = mem.snapshot(refresh=True)
    mem.save(tmp_path / "mem")
    manifest = json.loads((tmp_path / "mem" / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    back = SceneMemory.load(tmp_path / "mem")
    snap2 = back.snapshot()
    assert snap2.n_frames_integrated == snap.n_frames_integrated
    assert [i.instance_id for i in snap2.instances] == [i.instance_id for i in snap.instances]
    for a, b in zip(snap.instances, snap2.instances):
        assert a.label == b.label and a.n_observations == b.n_observations
        np.testing.assert_allclose(a.box.center, b.box.center, atol=1e-6)
        assert a.best_keyframe_ids == b.best_keyframe_ids
    assert [k.keyframe_id for k in snap2.keyframes] == [k.keyframe_id for k in snap.keyframes]
    np.testing.assert_array_equal(snap2.keyframes[0].color_rgb, snap.keyframes[0].color_rgb)
    assert back.stats()["blocks"] == mem.stats()["blocks"]
    assert back.events == mem.events
    # The loaded memory keeps integrating and keeps the IDs.
    f = orbit_frames(RoomRenderer(), 40, t0=10.0)[0]
    assert back.integrate(f).accepted
    assert {i.instance_id for i in back.snapshot(refresh=True).instances} >= {1, 2, 3}


def test_load_refuses_unknown_versions_and_incomplete_dirs(mask_run, tmp_path: Path):
    mem = mask_run[0]
    mem.save(tmp_path / "m")
    man = json.loads((tmp_path / "m" / "manifest.json").read_text())
    man["format_version"] = 999
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(MemoryFormatError, match="format_version 999"):
        SceneMemory.load(tmp_path / "m")
    with pytest.raises(MemoryFormatError, match="manifest.json"):
        SceneMemory.load(tmp_path / "empty")


def test_integrate_and_snapshot_from_two_threads(renderer):
    frames = orbit_frames(renderer, 30)
    mem = SceneMemory(_config(refresh_every_n_frames=3))
    errors: list[BaseException] = []
    snaps = []
    done = threading.Event()

    def reader() -> None:
        try:
            while not done.is_set():
                s = mem.snapshot()
                # Each snapshot is internally consistent.
                assert len(s.points) == len(s.colors)
                snaps.append(s.n_frames_integrated)
        except BaseException as exc:  # noqa: BLE001 (re-raised in the main thread)
            errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for f in frames:
            assert mem.integrate(f).accepted
    finally:
        done.set()
        t.join(timeout=30)
    assert not errors
    assert snaps == sorted(snaps) and len(snaps) > 1
    assert mem.snapshot(refresh=True).n_frames_integrated == 30
    assert mem.stats()["frames_integrated"] == 30


def test_config_validation_names_the_bad_value():
    with pytest.raises(MemoryConfigError, match="voxel_size_m"):
        MemoryConfig(voxel_size_m=0.0).validate()
    with pytest.raises(MemoryConfigError, match="depth_min_m"):
        MemoryConfig(depth_min_m=3.0, depth_max_m=2.0).validate()
    with pytest.raises(MemoryConfigError, match="detector_model_dir"):
        MemoryConfig(use_detector=True).validate()
    with pytest.raises(MemoryConfigError, match="device"):
        MemoryConfig(device="TPU").validate()
    assert MemoryConfig().validate() is not None


def test_missing_detector_files_degrade_to_geometry(renderer, tmp_path: Path):
    mem = SceneMemory(_config(use_detector=True, detector_model_dir=str(tmp_path)))
    st = mem.stats()
    assert st["detector_error"] and "not found" in st["detector_error"]
    for f in orbit_frames(renderer, 24, with_mask=False)[:3]:
        assert mem.integrate(f).accepted
    assert mem.stats()["instance_source"] == "geometry-only"


def test_stats_report_timings_and_memory(mask_run):
    st = mask_run[0].stats()
    assert st["frames_integrated"] == 40
    for stage in ("total", "fusion", "instances"):
        assert st["timings"][stage]["p95_ms"] >= st["timings"][stage]["p50_ms"] > 0
    assert st["blocks"] > 0 and st["tsdf_bytes_est"] == st["blocks"] * (8**3 * 20 + 12)
    assert st["instances"] == 3


def test_map_command_on_a_rosbag(renderer, tmp_path: Path):
    """A bag written from the rendered room (with the instance topic) maps to the right objects."""
    from scene_vlm_ros.bag.writer import write_bag
    from scene_vlm_ros.commands.map import map_command
    from scene_vlm_ros.core.geometry import R_LINK_OPTICAL, make_transform

    T_base_opt = make_transform(R_LINK_OPTICAL, [0.1, 0.0, 1.2])
    frames = orbit_frames(renderer, 30)
    pairs = [(f, f.T_world_camera @ np.linalg.inv(T_base_opt)) for f in frames]
    write_bag(tmp_path / "bag", pairs, T_base_opt, storage="mcap", with_instances=True, start_stamp_ns=10**18)
    stats = map_command(tmp_path / "bag", tmp_path / "out", _config(), progress=False)
    assert stats["frames_integrated"] == 30 and stats["frames_rejected"] == {}
    objects = json.loads((tmp_path / "out" / "objects.json").read_text())
    assert {o["label"] for o in objects} >= {"table", "cabinet", "box"}
    back = SceneMemory.load(tmp_path / "out" / "memory")
    assert instance_recall(back.snapshot().instances, gt_objects(), (0.5,))[0.5] == 1.0
