"""Scan -> SceneSnapshot (datasets.snapshot_builder) and the benchmark path of build-data over a
ScanNet-layout scan (a synthetic room written in ScanNet's exported layout; ScanNet itself cannot
be shared)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from scene_vlm_ros.datasets.render import generate_sequence
from scene_vlm_ros.datasets.scannet import ScanNetScan
from scene_vlm_ros.datasets.seven_scenes import DatasetFormatError
from scene_vlm_ros.datasets.snapshot_builder import (
    SnapshotBuildError,
    build_snapshot,
    build_snapshot_from_scannet,
    match_objects_to_instances,
)
from scene_vlm_ros.datasets.synthetic import generate_layout
from scene_vlm_ros.vlm.prompts import obj_token

pytest.importorskip("scene_vlm_training", reason="install the training package: pip install -e training/")

from scene_vlm_training.config import BuildDataConfig, from_dict  # noqa: E402
from scene_vlm_training.data import store  # noqa: E402
from scene_vlm_training.data.build import AnnotationError, run_build  # noqa: E402
from scene_vlm_training.data.scannet_export import write_scannet_scan  # noqa: E402


@pytest.fixture(scope="module")
def room() -> tuple:
    layout = generate_layout(0)
    frames = [sf.frame for sf in generate_sequence(layout, 40, 160, 120, speed_mps=None, seed=0)]
    return layout, frames


@pytest.fixture(scope="module")
def scans(room: tuple, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scans")
    write_scannet_scan(*room, out, "scene0000_00")
    return out


def test_ground_truth_snapshot_numbers_instances_in_order_of_first_sight(room: tuple) -> None:
    layout, frames = room
    built = build_snapshot(frames, layout.objects)
    snap = built.snapshot
    ids = [i.instance_id for i in snap.instances]
    assert ids == list(range(1, len(ids) + 1))
    first_seen = [i.first_seen_s for i in snap.instances]
    assert first_seen == sorted(first_seen)
    assert set(built.instance_of_object.values()) == set(ids)
    for oid, iid in built.instance_of_object.items():
        inst = snap.instance(iid)
        assert inst.label == layout.object(oid).label and built.match_iou[oid] == pytest.approx(1.0)
        assert len(inst.points) > 0 and inst.best_keyframe_ids
    # Keyframes are real frames (the robot's keyframe policy) keyed by their sequence index.
    for kf in snap.keyframes:
        assert np.array_equal(kf.color_rgb, frames[kf.keyframe_id].color_rgb)
    assert 1 < len(snap.keyframes) < len(frames)
    # Objects the camera never sees get no instance (the robot could not show them).
    assert len(snap.instances) <= len(layout.objects)


def test_matching_is_one_to_one_at_the_threshold(room: tuple) -> None:
    layout, frames = room
    snap = build_snapshot(frames, layout.objects).snapshot
    shifted = [o.__class__(o.object_id, o.label, o.color, (o.center[0] + 0.5 * o.size[0], *o.center[1:]), o.size,
                           o.yaw) for o in layout.objects]
    mapping, best = match_objects_to_instances(shifted, snap.instances, 0.75)
    assert not mapping and all(v < 0.75 for v in best.values())  # half a box off: IoU 1/3
    mapping, _ = match_objects_to_instances(shifted, snap.instances, 0.3)
    assert len(set(mapping.values())) == len(mapping) > 0


def test_reconstruction_mode_uses_the_robots_memory(room: tuple) -> None:
    layout, frames = room
    built = build_snapshot(frames[::2], layout.objects, mode="reconstruction")
    assert built.mode == "reconstruction" and len(built.snapshot.instances) > 0
    assert all(built.match_iou[o] >= 0.75 for o in built.instance_of_object)
    assert set(built.keyframe_of_frame.values()) <= {k.keyframe_id for k in built.snapshot.keyframes}


def test_bad_scans_get_clear_errors(room: tuple, scans: Path, tmp_path: Path) -> None:
    layout, frames = room
    with pytest.raises(SnapshotBuildError, match="no frame with a valid camera pose"):
        build_snapshot([], layout.objects)
    with pytest.raises(SnapshotBuildError, match="needs the scan's annotated objects"):
        build_snapshot(frames[:3], [])
    broken = tmp_path / "broken" / "scene0000_00"
    shutil.copytree(scans / "scene0000_00", broken)
    for p in (broken / "pose").glob("*.txt"):
        p.unlink()
    with pytest.raises(DatasetFormatError, match="no <index>.txt pose files"):
        build_snapshot_from_scannet(broken)
    for i in range(3):
        (broken / "pose" / f"{i}.txt").write_text("inf " * 16)
    with pytest.raises(SnapshotBuildError, match="no frame with a valid camera pose"):
        build_snapshot_from_scannet(broken, frame_step=1)


def _scanrefer(path: Path, records: list[dict]) -> Path:
    path.write_text(json.dumps([{"ann_id": str(i), "token": r["description"].split(), **r}
                                for i, r in enumerate(records)]))
    return path


def _cfg(out: Path, annotations: Path, scans: Path) -> BuildDataConfig:
    return from_dict(BuildDataConfig, {
        "output_dir": str(out), "n_frames": 4, "image_size_px": 96, "view_target_px": 32, "bev_target_px": 32,
        "benchmarks": [{"kind": "scanrefer", "annotations": str(annotations), "scans_dir": str(scans),
                        "frame_step": 1}],
    })


def test_scanrefer_annotations_become_grounding_samples_with_robot_ids(scans: Path, tmp_path: Path) -> None:
    built = build_snapshot_from_scannet(scans / "scene0000_00", frame_step=1)
    seen = sorted(built.instance_of_object)[:2]
    objects = {o.object_id: o for o in ScanNetScan(scans / "scene0000_00").ground_truth_objects()}
    ann = _scanrefer(tmp_path / "scanrefer.json", [
        {"scene_id": "scene0000_00", "object_id": str(oid), "object_name": objects[oid].label,
         "description": f"the {objects[oid].label} in the room."} for oid in seen])
    manifest = run_build(_cfg(tmp_path / "out", ann, scans), progress=False)
    assert manifest["per_source"] == {"scanrefer": 2} and manifest["per_task"] == {"grounding": 2}
    samples = store.read_samples(tmp_path / "out")
    assert [s["answer"] for s in samples] == [f"{obj_token(built.instance_of_object[o])}." for o in seen]


def test_annotations_naming_unknown_scenes_or_objects_are_refused(scans: Path, tmp_path: Path) -> None:
    ann = _scanrefer(tmp_path / "a.json", [{"scene_id": "scene0999_00", "object_id": "1", "object_name": "chair",
                                           "description": "the chair."}])
    with pytest.raises(AnnotationError, match="scene 'scene0999_00'.*does not exist"):
        run_build(_cfg(tmp_path / "o1", ann, scans), progress=False)
    ann = _scanrefer(tmp_path / "b.json", [{"scene_id": "scene0000_00", "object_id": "77", "object_name": "chair",
                                           "description": "the chair."}])
    with pytest.raises(AnnotationError, match=r"names object\(s\) \[77\]"):
        run_build(_cfg(tmp_path / "o2", ann, scans), progress=False)


def _bench_cfg(out: Path, kind: str, annotations: Path, scans: Path) -> BuildDataConfig:
    return from_dict(BuildDataConfig, {
        "output_dir": str(out), "n_frames": 4, "image_size_px": 96, "view_target_px": 32, "bev_target_px": 32,
        "benchmarks": [{"kind": kind, "annotations": str(annotations), "scans_dir": str(scans), "frame_step": 1}],
    })


def test_scan2cap_scanqa_and_multi3drefer_samples(scans: Path, tmp_path: Path) -> None:
    built = build_snapshot_from_scannet(scans / "scene0000_00", frame_step=1)
    seen = sorted(built.instance_of_object)
    unseen = sorted(set(o.object_id for o in ScanNetScan(scans / "scene0000_00").ground_truth_objects()) - set(seen))
    assert unseen, "the camera of seed 0 never sees some objects"
    refer = _scanrefer(tmp_path / "refer.json", [
        {"scene_id": "scene0000_00", "object_id": str(seen[0]), "object_name": "x", "description": d}
        for d in ("a brown object near the wall.", "the object by the door.")])
    manifest = run_build(_bench_cfg(tmp_path / "cap", "scan2cap", refer, scans), progress=False)
    assert manifest["per_task"] == {"caption": 2}
    caps = store.read_samples(tmp_path / "cap")
    token = obj_token(built.instance_of_object[seen[0]])
    assert all(token in s["messages"][-1]["content"][-1]["text"] for s in caps)
    assert sorted(s["answer"] for s in caps) == ["a brown object near the wall.", "the object by the door."]

    qa = tmp_path / "scanqa.json"
    qa.write_text(json.dumps([
        {"question_id": "q1", "scene_id": "scene0000_00", "question": "What color is the table?",
         "answers": ["brown", "dark brown"], "object_ids": [seen[0]], "object_names": ["table"]},
        {"question_id": "q2", "scene_id": "scene0000_00", "question": "What is on the wall?", "answers": [],
         "object_ids": [], "object_names": []}]))
    manifest = run_build(_bench_cfg(tmp_path / "qa", "scanqa", qa, scans), progress=False)
    assert manifest["per_task"] == {"qa": 1} and manifest["drops"]["no_answer"] == 1
    (sample,) = store.read_samples(tmp_path / "qa")
    assert sample["answer"] == "brown" and sample["recon"]
    assert sample["messages"][-1]["content"][-1]["text"].startswith("What color is the table?")

    multi = tmp_path / "m3dr.json"
    multi.write_text(json.dumps([
        {"scene_id": "scene0000_00", "object_ids": seen[:2], "object_name": "x", "ann_id": "0",
         "description": "the two things.", "eval_type": "mt"},
        {"scene_id": "scene0000_00", "object_ids": [], "object_name": "x", "ann_id": "1",
         "description": "the piano.", "eval_type": "zt_wo_d"},
        {"scene_id": "scene0000_00", "object_ids": [seen[0], unseen[0]],
         "object_name": "x", "ann_id": "2", "description": "both.", "eval_type": "mt"}]))
    manifest = run_build(_bench_cfg(tmp_path / "m3dr", "multi3drefer", multi, scans), progress=False)
    assert manifest["per_task"] == {"multi_grounding": 2} and manifest["drops"]["no_instance_iou"] == 1
    answers = sorted(s["answer"] for s in store.read_samples(tmp_path / "m3dr"))
    ids = [obj_token(built.instance_of_object[o]) for o in seen[:2]]
    assert answers == sorted(["No.", f"Yes. {ids[0]} and {ids[1]}."])


def test_vision_only_scans_give_reconstruction_only_samples(scans: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain" / "scene0000_00"
    shutil.copytree(scans / "scene0000_00", plain)
    (plain / "scene0000_00.aggregation.json").unlink()  # no annotation: only the robot's reconstruction
    cfg = from_dict(BuildDataConfig, {
        "output_dir": str(tmp_path / "out"), "n_frames": 3, "image_size_px": 96, "view_target_px": 32,
        "bev_target_px": 32, "vision_only": {"scan_dirs": [str(plain)], "frame_step": 2, "samples_per_scan": 1}})
    manifest = run_build(cfg, progress=False)
    assert manifest["per_task"] == {"reconstruction": 1} and manifest["per_source"] == {"vision_only": 1}
    (sample,) = store.read_samples(tmp_path / "out")
    assert sample["answer"] is None and sample["recon"] and len(sample["view_targets"]) == len(sample["frame_ids"])
