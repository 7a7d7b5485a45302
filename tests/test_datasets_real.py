"""Real-dataset loaders: 7-Scenes (the shared redkitchen slice), SUN3D slice, a ScanNet-layout scan."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from scene_vlm_ros.bag.reader import read_bag, read_bag_info
from scene_vlm_ros.core.geometry import backproject_depth, is_rigid_transform, transform_points
from scene_vlm_ros.datasets.scannet import ScanNetScan
from scene_vlm_ros.datasets.seven_scenes import DatasetFormatError, load_seven_scenes, rotation_between

# ------------------------------------------------------------------------------------------------
# 7-Scenes
# ------------------------------------------------------------------------------------------------


def test_seven_scenes_reads_the_real_slice(kitchen_dir: Path) -> None:
    seq = load_seven_scenes(kitchen_dir)
    assert len(seq) == 50
    assert seq.frame_numbers[:3] == [0, 20, 40]
    intr = seq.intrinsics
    assert (intr.fx, intr.fy, intr.cx, intr.cy, intr.width, intr.height) == (585.0, 585.0, 320.0, 240.0, 640, 480)
    frames = list(seq.frames())
    assert len(frames) == 50
    f = frames[1]
    assert f.stamp_s == pytest.approx(20 / 30.0)
    assert f.color_rgb.shape == (480, 640, 3) and f.color_rgb.dtype == np.uint8
    assert f.depth_m.dtype == np.float32 and f.depth_m.shape == (480, 640)
    raw_mm = cv2.imread(str(kitchen_dir / "frame-000020.depth.png"), cv2.IMREAD_UNCHANGED)
    valid = (raw_mm > 0) & (raw_mm < 65535)
    np.testing.assert_allclose(f.depth_m[valid], raw_mm[valid] / 1000.0, rtol=1e-6)
    assert np.all(f.depth_m[~valid] == 0.0)
    # Kitchen depth: a room-sized range.
    assert 0.3 < float(np.median(f.depth_m[valid])) < 5.0
    bgr = cv2.imread(str(kitchen_dir / "frame-000020.color.jpg"))
    np.testing.assert_array_equal(f.color_rgb, bgr[:, :, ::-1])
    # Poses are the files' up to the projection onto the nearest rotation (the files are orthonormal to ~1e-4).
    np.testing.assert_allclose(f.T_world_camera, np.loadtxt(kitchen_dir / "frame-000020.pose.txt"), atol=1e-3)
    assert all(is_rigid_transform(fr.T_world_camera, tol=1e-9) for fr in frames)
    np.testing.assert_array_equal(seq.T_align, np.eye(4))


def test_seven_scenes_gravity_alignment(kitchen_dir: Path) -> None:
    seq = load_seven_scenes(kitchen_dir, gravity_align=True)
    g = np.loadtxt(kitchen_dir / "gravity-direction.txt")
    np.testing.assert_allclose(seq.T_align[:3, :3] @ (g / np.linalg.norm(g)), [0.0, 0.0, -1.0], atol=1e-9)
    assert is_rigid_transform(seq.T_align, tol=1e-9)
    raw = load_seven_scenes(kitchen_dir)
    zs, cams = [], []
    for i in range(0, len(seq), 5):
        frame = seq.load_frame(i)
        np.testing.assert_allclose(frame.T_world_camera, seq.T_align @ raw.pose(i), atol=1e-12)
        pts, _ = backproject_depth(frame.depth_m, seq.intrinsics, stride=8)
        zs.append(transform_points(frame.T_world_camera, pts.astype(np.float64))[:, 2])
        cams.append(frame.T_world_camera[:3, 3])
    z = np.concatenate(zs)
    # The lowest observed surfaces (the floor) sit at z ~ 0, and the hand-held camera is at head height.
    assert abs(np.percentile(z, 2.0)) < 0.1
    heights = np.array(cams)[:, 2]
    assert np.all((heights > 0.8) & (heights < 2.2)), heights
    # Optical +y (image down) points roughly down in a gravity-aligned world for an upright camera.
    downs = [seq.pose(i)[:3, 1] @ np.array([0.0, 0.0, -1.0]) for i in range(0, len(seq), 5)]
    assert np.mean(downs) > 0.7


def test_sun3d_slice_without_gravity_file(shared_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = shared_data / "sun3d-lounge"
    if not root.is_dir():
        pytest.skip(f"SUN3D slice not found at {root}")
    with caplog.at_level(logging.WARNING):
        seq = load_seven_scenes(root, gravity_align=True)
    assert "no gravity-direction.txt" in caplog.text
    assert seq.frame_numbers == [0, 1, 2, 116, 422]
    assert seq.intrinsics.fx == pytest.approx(570.342)
    frames = list(seq.frames())
    assert len(frames) == 5 and frames[-1].stamp_s == pytest.approx(422 / 30.0)
    np.testing.assert_allclose(seq.T_align[:3, :3] @ seq.gravity_world, [0, 0, -1], atol=1e-9)


def test_rotation_between_handles_opposite_vectors() -> None:
    for a, b in [([0, 0, 1], [0, 0, -1]), ([1, 0, 0], [-1, 0, 0]), ([0.3, -0.9, 0.1], [0, 0, -1])]:
        R = rotation_between(np.array(a, float), np.array(b, float))
        np.testing.assert_allclose(R @ (np.array(a) / np.linalg.norm(a)), b, atol=1e-12)
        assert abs(np.linalg.det(R) - 1.0) < 1e-12


def _link_slice(src: Path, dst: Path, numbers: list[int]) -> Path:
    """A small 7-Scenes directory of symlinks to the shared data (nothing is copied)."""
    dst.mkdir()
    (dst / "camera-intrinsics.txt").symlink_to(src / "camera-intrinsics.txt")
    for n in numbers:
        for suffix in ("color.jpg", "depth.png", "pose.txt"):
            (dst / f"frame-{n:06d}.{suffix}").symlink_to(src / f"frame-{n:06d}.{suffix}")
    return dst


def test_seven_scenes_bad_input(kitchen_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_seven_scenes(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="camera-intrinsics.txt"):
        load_seven_scenes(empty)
    (empty / "camera-intrinsics.txt").write_text("1 0 0\n0 1 0\n0 0 1\n")
    with pytest.raises(DatasetFormatError, match="no frame-XXXXXX.pose.txt"):
        load_seven_scenes(empty)
    # An invalid (inf) pose is skipped with a log line; a missing colour image is a clear error.
    root = _link_slice(kitchen_dir, tmp_path / "slice", [0, 20, 40])
    (root / "frame-000020.pose.txt").unlink()
    (root / "frame-000020.pose.txt").write_text("inf inf inf inf\n" * 4)
    with caplog.at_level(logging.WARNING):
        frames = list(load_seven_scenes(root).frames())
    assert [round(f.stamp_s * 30) for f in frames] == [0, 40]
    assert "skipped 1 of 3" in caplog.text
    (root / "frame-000040.pose.txt").unlink()
    (root / "frame-000040.pose.txt").write_text("1 2 3\n")
    with pytest.raises(DatasetFormatError, match="expected 4x4"):
        list(load_seven_scenes(root).frames())
    (root / "frame-000040.pose.txt").unlink()
    (root / "frame-000040.pose.txt").symlink_to(kitchen_dir / "frame-000040.pose.txt")
    (root / "frame-000040.color.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="frame-000040.color.jpg"):
        list(load_seven_scenes(root).frames())
    (root / "frame-000000.depth.png").unlink()
    (root / "frame-000000.depth.png").write_bytes(b"not a png")
    with pytest.raises(DatasetFormatError, match="cannot decode depth"):
        load_seven_scenes(root)


def test_make_bag_from_seven_scenes(kitchen_dir: Path, tmp_path: Path) -> None:
    from scene_vlm_ros.commands.make_bag import MakeBagError, make_bag

    out = tmp_path / "kitchen"
    result = make_bag(source="7scenes", dataset_dir=kitchen_dir, frames=6, out=out, progress=False,
                      storage="sqlite3")
    assert result["frames"] == 6 and result["gt"] is None and result["queries"] is None
    info = read_bag_info(out)
    assert info.storage == "sqlite3" and info.topics["/camera/color/image_raw"].count == 6
    assert info.custom_data["scene_vlm.source"] == "7scenes"
    seq = load_seven_scenes(kitchen_dir, gravity_align=True, max_frames=6)
    read = list(read_bag(out))
    assert len(read) == 6
    for bag_frame, frame in zip(read, seq.frames()):
        # The bag's odometry + static TF reproduce the (gravity-aligned) dataset camera poses.
        np.testing.assert_allclose(bag_frame.frame.T_world_camera, frame.T_world_camera, atol=1e-6)
        np.testing.assert_array_equal(bag_frame.frame.color_rgb, frame.color_rgb)
        np.testing.assert_allclose(bag_frame.frame.depth_m, frame.depth_m, atol=1e-6)
        assert bag_frame.stamp_ns - result["start_stamp_ns"] == round(frame.stamp_s * 1e9)
    with pytest.raises(MakeBagError, match="needs --dataset-dir"):
        make_bag(source="7scenes", out=tmp_path / "x", progress=False)
    with pytest.raises(MakeBagError, match="unknown source"):
        make_bag(source="kinect", progress=False)


# ------------------------------------------------------------------------------------------------
# ScanNet layout (a tiny fake scan written in the exact exported format)
# ------------------------------------------------------------------------------------------------

SCENE = "scene0042_00"
DEPTH_K = np.array([[57.7, 0, 31.5, 0], [0, 57.8, 23.8, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
COLOR_K = np.array([[116.0, 0, 63.2, 0], [0, 116.4, 47.7, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
AXIS_ALIGN = np.array([[0.0, -1.0, 0.0, 2.0], [1.0, 0.0, 0.0, -1.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


def _write_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray, faces: np.ndarray) -> None:
    """Binary PLY with ScanNet's vh_clean_2 vertex layout (x y z float, r g b alpha uchar)."""
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment VCGLIB generated\n"
        f"element vertex {len(xyz)}\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nproperty uchar alpha\n"
        f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    vdtype = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1"), ("a", "u1")])
    verts = np.zeros(len(xyz), vdtype)
    verts["x"], verts["y"], verts["z"] = xyz.T
    verts["r"], verts["g"], verts["b"] = rgb.T
    verts["a"] = 255
    fdtype = np.dtype([("n", "u1"), ("i", "<i4", (3,))])
    fs = np.zeros(len(faces), fdtype)
    fs["n"] = 3
    fs["i"] = faces
    path.write_bytes(header.encode() + verts.tobytes() + fs.tobytes())


def _box_vertices(lo: list[float], hi: list[float]) -> np.ndarray:
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


def make_fake_scan(root: Path, with_depth_intrinsics: bool = True, with_meta: bool = True) -> Path:
    """4 frames (colour 128x96, depth 64x48; frame 2 has ScanNet's -inf invalid pose) + mesh/annotation."""
    rng = np.random.default_rng(3)
    for sub in ("color", "depth", "pose", "intrinsic"):
        (root / sub).mkdir(parents=True)
    for i in range(4):
        color = np.zeros((96, 128, 3), np.uint8)
        color[:, :64] = (200, 30, 30)  # left half red (RGB), right half blue
        color[:, 64:] = (30, 30, 200)
        cv2.imwrite(str(root / "color" / f"{i}.jpg"), color[:, :, ::-1])
        depth = rng.integers(500, 4000, (48, 64)).astype(np.uint16)
        depth[0, 0] = 0
        cv2.imwrite(str(root / "depth" / f"{i}.png"), depth)
        pose = np.eye(4)
        pose[:3, 3] = [0.5 * i, 0.2, 1.5]
        if i == 2:
            pose[:] = -np.inf
        np.savetxt(root / "pose" / f"{i}.txt", pose)
    np.savetxt(root / "intrinsic" / "intrinsic_color.txt", COLOR_K)
    if with_depth_intrinsics:
        np.savetxt(root / "intrinsic" / "intrinsic_depth.txt", DEPTH_K)
    if with_meta:
        (root / f"{SCENE}.txt").write_text(
            "colorHeight = 96\ncolorWidth = 128\naxisAlignment = " + " ".join(f"{v:g}" for v in AXIS_ALIGN.ravel())
            + "\nnumColorFrames = 4\n"
        )
    # Mesh: a red chair box (segments 0, 1), a blue table box (segment 2), a floor quad (segment 3).
    chair = _box_vertices([0.0, 0.0, 0.0], [0.5, 0.6, 0.9])
    table = _box_vertices([1.0, 1.0, 0.0], [2.2, 1.8, 0.75])
    floor = np.array([[-1.0, -1.0, 0.0], [3.0, -1.0, 0.0], [3.0, 3.0, 0.0], [-1.0, 3.0, 0.0]])
    xyz = np.vstack([chair, table, floor])
    rgb = np.vstack([np.tile([200, 20, 20], (8, 1)), np.tile([40, 80, 200], (8, 1)), np.tile([128, 128, 128], (4, 1))])
    seg = [0] * 4 + [1] * 4 + [2] * 8 + [3] * 4
    faces = np.array([[0, 1, 2], [8, 9, 10], [16, 17, 18]])
    _write_ply(root / f"{SCENE}_vh_clean_2.ply", xyz, rgb, faces)
    (root / f"{SCENE}_vh_clean_2.0.010000.segs.json").write_text(
        json.dumps({"params": {"kThresh": "0.0001"}, "sceneId": SCENE, "segIndices": seg})
    )
    (root / f"{SCENE}.aggregation.json").write_text(json.dumps({
        "sceneId": f"scannet.{SCENE}", "appId": "Aggregator.v2",
        "segGroups": [
            {"id": 0, "objectId": 0, "segments": [0, 1], "label": "chair"},
            {"id": 1, "objectId": 1, "segments": [2], "label": "table"},
            {"id": 2, "objectId": 2, "segments": [3], "label": "floor"},
        ],
        "segmentsFile": f"scannet.{SCENE}_vh_clean_2.0.010000.segs.json",
    }))
    return root


def test_scannet_frames(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    scan = ScanNetScan(make_fake_scan(tmp_path / SCENE))
    assert scan.scene_id == SCENE and len(scan) == 4
    intr = scan.intrinsics
    assert (intr.width, intr.height) == (64, 48)
    assert (intr.fx, intr.fy, intr.cx, intr.cy) == (57.7, 57.8, 31.5, 23.8)
    with caplog.at_level(logging.WARNING):
        frames = list(scan.frames())
    assert "skipped 1 of 4" in caplog.text
    assert [f.frame_index for f in frames] == [0, 1, 2]
    assert [f.stamp_s for f in frames] == pytest.approx([0.0, 1 / 30, 3 / 30])
    f = frames[1]
    assert f.color_rgb.shape == (48, 64, 3) and f.depth_m.shape == (48, 64)
    # Colour resized to depth size keeps the red-left / blue-right layout (RGB order).
    assert f.color_rgb[24, 10, 0] > 150 and f.color_rgb[24, 10, 2] < 80
    assert f.color_rgb[24, 54, 2] > 150 and f.color_rgb[24, 54, 0] < 80
    raw = cv2.imread(str(tmp_path / SCENE / "depth" / "1.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_allclose(f.depth_m, raw / 1000.0, rtol=1e-6)
    expected = np.eye(4)
    expected[:3, 3] = [0.5, 0.2, 1.5]
    np.testing.assert_allclose(f.T_world_camera, AXIS_ALIGN @ expected)
    unaligned = ScanNetScan(tmp_path / SCENE, axis_align=False)
    np.testing.assert_allclose(unaligned.load_frame(1).T_world_camera, expected)


def test_scannet_ground_truth_objects(tmp_path: Path) -> None:
    scan = ScanNetScan(make_fake_scan(tmp_path / SCENE), axis_align=False)
    assert scan.has_ground_truth
    objects = {o.object_id: o for o in scan.ground_truth_objects()}
    assert sorted(objects) == [0, 1, 2]
    chair, table = objects[0], objects[1]
    assert (chair.label, table.label, objects[2].label) == ("chair", "table", "floor")
    np.testing.assert_allclose(chair.center, [0.25, 0.3, 0.45], atol=1e-6)
    np.testing.assert_allclose(chair.size, [0.5, 0.6, 0.9], atol=1e-6)
    np.testing.assert_allclose(table.center, [1.6, 1.4, 0.375], atol=1e-6)
    np.testing.assert_allclose(table.size, [1.2, 0.8, 0.75], atol=1e-6)
    assert chair.color == "red" and table.color == "blue"
    assert chair.yaw == 0.0
    assert [o.label for o in scan.ground_truth_objects(exclude_labels=("floor",))] == ["chair", "table"]
    # With the axis alignment, boxes move with the scene: x' = -y + 2, y' = x - 1.
    aligned = {o.object_id: o for o in ScanNetScan(tmp_path / SCENE).ground_truth_objects()}
    np.testing.assert_allclose(aligned[0].center, [2.0 - 0.3, 0.25 - 1.0, 0.45], atol=1e-6)
    np.testing.assert_allclose(aligned[0].size, [0.6, 0.5, 0.9], atol=1e-6)


def test_scannet_without_depth_intrinsics_scales_colour_k(tmp_path: Path) -> None:
    scan = ScanNetScan(make_fake_scan(tmp_path / SCENE, with_depth_intrinsics=False, with_meta=False))
    intr = scan.intrinsics
    assert (intr.width, intr.height) == (64, 48)
    np.testing.assert_allclose([intr.fx, intr.fy, intr.cx, intr.cy], [58.0, 58.2, 31.6, 23.85])
    np.testing.assert_array_equal(scan.T_align, np.eye(4))


def test_scannet_bad_input(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        ScanNetScan(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "color").mkdir()
    with pytest.raises(DatasetFormatError, match="missing 'depth/'"):
        ScanNetScan(tmp_path / "half")
    root = make_fake_scan(tmp_path / SCENE)
    segs = root / f"{SCENE}_vh_clean_2.0.010000.segs.json"
    segs.write_text(json.dumps({"segIndices": [0, 1, 2]}))
    with pytest.raises(DatasetFormatError, match="3 segment ids but .* 20 vertices"):
        ScanNetScan(root).ground_truth_objects()
    segs.unlink()
    with pytest.raises(FileNotFoundError, match="segs.json"):
        ScanNetScan(root).ground_truth_objects()
    (root / f"{SCENE}.aggregation.json").write_text("{broken")
    with pytest.raises(DatasetFormatError, match="invalid JSON"):
        ScanNetScan(root).ground_truth_objects()
    (root / f"{SCENE}.aggregation.json").unlink()
    assert not ScanNetScan(root).has_ground_truth
    with pytest.raises(FileNotFoundError, match="aggregation.json"):
        ScanNetScan(root).ground_truth_objects()
    (root / f"{SCENE}.txt").write_text("axisAlignment = 1 0 0\n")
    with pytest.raises(DatasetFormatError, match="16 numbers"):
        ScanNetScan(root)


def test_make_bag_from_scannet_layout(tmp_path: Path) -> None:
    from scene_vlm_ros.commands.make_bag import make_bag

    root = make_fake_scan(tmp_path / SCENE)
    result = make_bag(source="scannet", dataset_dir=root, out=tmp_path / "bag", progress=False)
    assert result["frames"] == 3 and result["n_objects"] == 3
    gt = json.loads(Path(result["gt"]).read_text())
    assert gt["frame_id"] == "map" and [o["label"] for o in gt["objects"]] == ["chair", "table", "floor"]
    read = list(read_bag(tmp_path / "bag"))
    scan = ScanNetScan(root)
    np.testing.assert_allclose(read[2].frame.T_world_camera, scan.pose(3), atol=1e-6)
    assert read[0].frame.intrinsics == scan.intrinsics
