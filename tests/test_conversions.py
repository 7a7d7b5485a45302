"""Unit tests of :mod:`scene_vlm_ros.ros.conversions` (message types only; no ``rclpy.init()``)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg", reason="ROS message packages not on the path (run via scripts/with_env.sh)")
pytest.importorskip("scene_vlm_interfaces.msg", reason="interface package not built (run scripts/setup.sh)")

from builtin_interfaces.msg import Time  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from scene_vlm_interfaces.msg import InstanceLabel, InstanceLabelArray  # noqa: E402

# The node decodes rclpy messages with the package's one decoder (core.decode): tested here on
# rclpy's own message classes.
from scene_vlm_ros.core.decode import MessageConversionError as ConversionError  # noqa: E402
from scene_vlm_ros.core.decode import msg_to_camera_info as camera_info_to_intrinsics  # noqa: E402
from scene_vlm_ros.core.decode import msg_to_depth_m as depth_to_m  # noqa: E402
from scene_vlm_ros.core.decode import msg_to_image as image_to_numpy  # noqa: E402
from scene_vlm_ros.core.decode import msg_to_labels as labels_to_dict  # noqa: E402
from scene_vlm_ros.core.decode import msg_to_odometry  # noqa: E402
from scene_vlm_ros.core.decode import msg_to_rgb as color_to_rgb  # noqa: E402
from scene_vlm_ros.core.geometry import make_transform  # noqa: E402
from scene_vlm_ros.core.markers import marker_color  # noqa: E402
from scene_vlm_ros.core.types import Instance, OrientedBox3D  # noqa: E402
from scene_vlm_ros.ros.conversions import (  # noqa: E402
    cloud_to_points,
    instance_to_box,
    instances_to_markers,
    matrix_to_pose,
    numpy_to_image,
    points_to_cloud,
    pose_to_matrix,
    s_to_stamp,
    stamp_to_s,
)

RNG = np.random.default_rng(7)


def _raw_image(arr: np.ndarray, encoding: str, step: int | None = None, big_endian: bool = False) -> Image:
    """Build an Image by hand (independently of numpy_to_image), optionally with row padding."""
    h, w = arr.shape[:2]
    dt = arr.dtype.newbyteorder(">" if big_endian else "<")
    row = np.ascontiguousarray(arr.astype(dt)).reshape(h, -1).view(np.uint8).reshape(h, -1)
    step = step or row.shape[1]
    padded = np.full((h, step), 0xAB, np.uint8)  # padding bytes are garbage on purpose
    padded[:, : row.shape[1]] = row
    msg = Image()
    msg.height, msg.width, msg.encoding, msg.step = h, w, encoding, step
    msg.is_bigendian = 1 if big_endian else 0
    msg.data = padded.tobytes()
    return msg


# ----------------------------------------------------------------------------- stamps
@pytest.mark.parametrize("t", [0.0, 1.5, 1700000000.123456789, 12.999999999])
def test_stamp_round_trip(t):
    st = s_to_stamp(t)
    assert 0 <= st.nanosec < 1_000_000_000
    assert stamp_to_s(st) == pytest.approx(t, abs=2e-9)


# ----------------------------------------------------------------------------- images
@pytest.mark.parametrize(
    "encoding, arr",
    [
        ("rgb8", RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)),
        ("bgr8", RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)),
        ("mono8", RNG.integers(0, 256, (5, 7), dtype=np.uint8)),
        ("16UC1", RNG.integers(0, 65536, (4, 9), dtype=np.uint16)),
        ("32FC1", RNG.normal(size=(3, 6)).astype(np.float32)),
    ],
)
def test_image_round_trip(encoding, arr):
    msg = numpy_to_image(arr, encoding, stamp=Time(sec=3, nanosec=5), frame_id="cam")
    assert msg.encoding == encoding and (msg.height, msg.width) == arr.shape[:2]
    assert msg.header.frame_id == "cam" and msg.header.stamp.sec == 3
    back = image_to_numpy(msg)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_numpy_to_image_from_big_endian_or_strided_array():
    arr = np.arange(12, dtype=">u2").reshape(3, 4) * 1000
    msg = numpy_to_image(arr, "16UC1")
    assert msg.is_bigendian == 0
    np.testing.assert_array_equal(image_to_numpy(msg), arr.astype(np.uint16))
    rgb = RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8)[:, ::2]  # non-contiguous view
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(rgb, "rgb8")), rgb)


def test_numpy_to_image_rejects_wrong_shape_and_encoding():
    with pytest.raises(ConversionError, match="does not fit"):
        numpy_to_image(np.zeros((4, 4), np.uint8), "rgb8")
    with pytest.raises(ConversionError, match="does not fit"):
        numpy_to_image(np.zeros((4, 4, 3), np.uint8), "mono8")
    with pytest.raises(ConversionError, match="unsupported"):
        numpy_to_image(np.zeros((4, 4), np.uint8), "yuv422")


@pytest.mark.parametrize(
    "encoding, arr",
    [
        ("rgb8", RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8)),
        ("16UC1", RNG.integers(0, 65536, (4, 5), dtype=np.uint16)),
        ("32FC1", RNG.normal(size=(4, 5)).astype(np.float32)),
    ],
)
def test_image_step_padding_is_honoured(encoding, arr):
    row_bytes = arr.shape[1] * (arr.shape[2] if arr.ndim == 3 else 1) * arr.dtype.itemsize
    msg = _raw_image(arr, encoding, step=row_bytes + 13)
    np.testing.assert_array_equal(image_to_numpy(msg), arr)


def test_big_endian_16uc1_and_32fc1():
    arr = np.array([[1, 256, 1000], [65535, 0, 4660]], np.uint16)
    msg = _raw_image(arr, "16UC1", big_endian=True)
    assert bytes(msg.data)[:2] == b"\x00\x01"  # really big-endian on the wire
    out = image_to_numpy(msg)
    np.testing.assert_array_equal(out, arr)
    assert out.dtype == np.uint16 and out.dtype.byteorder in ("=", "<", "|")  # native for downstream code
    np.testing.assert_allclose(depth_to_m(msg), arr.astype(np.float32) / 1000.0, rtol=1e-6)
    f = np.array([[1.5, -2.25]], np.float32)
    np.testing.assert_array_equal(image_to_numpy(_raw_image(f, "32FC1", big_endian=True)), f)


def test_truncated_or_malformed_image_raises():
    arr = np.zeros((4, 5, 3), np.uint8)
    msg = numpy_to_image(arr, "rgb8")
    msg.data = bytes(msg.data)[:-1]
    with pytest.raises(ConversionError, match="too small"):
        image_to_numpy(msg)
    msg = numpy_to_image(arr, "rgb8")
    msg.step = 5 * 3 - 1  # a row cannot fit
    with pytest.raises(ConversionError, match="too small"):
        image_to_numpy(msg)
    msg = numpy_to_image(arr, "rgb8")
    msg.encoding = "yuv422"
    with pytest.raises(ConversionError, match="unsupported"):
        image_to_numpy(msg)
    empty = Image(encoding="mono8", height=0, width=0, step=0)
    with pytest.raises(ConversionError, match="zero"):
        image_to_numpy(empty)


def test_color_to_rgb_from_every_colour_encoding():
    rgb = RNG.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    np.testing.assert_array_equal(color_to_rgb(numpy_to_image(rgb, "rgb8")), rgb)
    np.testing.assert_array_equal(color_to_rgb(numpy_to_image(rgb[:, :, ::-1], "bgr8")), rgb)
    rgba = np.concatenate([rgb, np.full((3, 4, 1), 9, np.uint8)], axis=2)
    np.testing.assert_array_equal(color_to_rgb(numpy_to_image(rgba, "rgba8")), rgb)
    bgra = np.concatenate([rgb[:, :, ::-1], np.full((3, 4, 1), 9, np.uint8)], axis=2)
    np.testing.assert_array_equal(color_to_rgb(numpy_to_image(bgra, "bgra8")), rgb)
    gray = rgb[:, :, 0]
    out = color_to_rgb(numpy_to_image(gray, "mono8"))
    assert out.shape == (3, 4, 3)
    np.testing.assert_array_equal(out, np.repeat(gray[:, :, None], 3, axis=2))
    with pytest.raises(ConversionError):
        color_to_rgb(numpy_to_image(np.zeros((2, 2), np.float32), "32FC1"))


def test_depth_16uc1_mm_to_metres_and_32fc1_passthrough():
    mm = np.array([[0, 1, 1500], [65535, 250, 4000]], np.uint16)
    m = depth_to_m(numpy_to_image(mm, "16UC1"))
    assert m.dtype == np.float32
    np.testing.assert_allclose(m, [[0.0, 0.001, 1.5], [65.535, 0.25, 4.0]], rtol=1e-6)
    assert m[0, 0] == 0.0  # "no reading" stays 0
    f = np.array([[0.0, np.nan, 2.5]], np.float32)
    out = depth_to_m(numpy_to_image(f, "32FC1"))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0.0, 0.0, 2.5]])  # NaN is "no reading", written as 0
    with pytest.raises(ConversionError, match="depth"):
        depth_to_m(numpy_to_image(np.zeros((2, 2, 3), np.uint8), "rgb8"))


# ----------------------------------------------------------------------------- camera info
def test_camera_info_to_intrinsics():
    msg = CameraInfo(width=640, height=480)
    msg.k = [525.0, 0.0, 319.5, 0.0, 526.0, 239.5, 0.0, 0.0, 1.0]
    intr = camera_info_to_intrinsics(msg)
    assert (intr.width, intr.height) == (640, 480)
    assert (intr.fx, intr.fy, intr.cx, intr.cy) == (525.0, 526.0, 319.5, 239.5)


def test_camera_info_zero_k_or_size_raises():
    with pytest.raises(ConversionError, match="K"):
        camera_info_to_intrinsics(CameraInfo(width=640, height=480))  # K all zeros
    msg = CameraInfo(width=0, height=480)
    msg.k = [525.0, 0.0, 319.5, 0.0, 526.0, 239.5, 0.0, 0.0, 1.0]
    with pytest.raises(ConversionError):
        camera_info_to_intrinsics(msg)


# ----------------------------------------------------------------------------- poses
def _random_T(seed: int) -> np.ndarray:  # noqa: N802
    rng = np.random.default_rng(seed)
    return make_transform(Rotation.random(random_state=seed).as_matrix(), rng.normal(size=3) * 3)


@pytest.mark.parametrize("seed", range(6))
def test_pose_matrix_round_trip(seed):
    T = _random_T(seed)  # noqa: N806
    pose = matrix_to_pose(T)
    q = [pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w]
    np.testing.assert_allclose(np.linalg.norm(q), 1.0, atol=1e-12)
    # Independent check of the quaternion convention (x, y, z, w) against scipy.
    np.testing.assert_allclose(Rotation.from_quat(q).as_matrix(), T[:3, :3], atol=1e-9)
    np.testing.assert_allclose(pose_to_matrix(pose), T, atol=1e-9)


def test_pose_to_matrix_rejects_bad_quaternion():
    pose = matrix_to_pose(np.eye(4))
    pose.orientation.w = 0.0
    with pytest.raises(ConversionError, match="quaternion"):
        pose_to_matrix(pose)
    pose.orientation.w = float("nan")
    with pytest.raises(ConversionError):
        pose_to_matrix(pose)


def test_pose_to_matrix_normalises_quaternion():
    pose = matrix_to_pose(_random_T(3))
    pose.orientation.x *= 2.0
    pose.orientation.y *= 2.0
    pose.orientation.z *= 2.0
    pose.orientation.w *= 2.0
    np.testing.assert_allclose(pose_to_matrix(pose), _random_T(3), atol=1e-9)


def test_odometry_to_matrix():
    T = _random_T(11)  # noqa: N806
    msg = Odometry()
    msg.header.stamp = Time(sec=42, nanosec=500_000_000)
    msg.pose.pose = matrix_to_pose(T)
    msg.header.frame_id, msg.child_frame_id = "odom", "base_link"
    stamp, parent, child, got = msg_to_odometry(msg)
    assert stamp == 42_500_000_000 and (parent, child) == ("odom", "base_link")
    np.testing.assert_allclose(got, T, atol=1e-9)


# ----------------------------------------------------------------------------- instances
def _instance(iid: int, label: str, center, size, yaw: float) -> Instance:
    box = OrientedBox3D(tuple(center), tuple(size), yaw)
    pts = box.corners().astype(np.float32)
    return Instance(iid, label, 0.75, box, pts.min(0), pts.max(0), pts, np.zeros((8, 3), np.uint8))


@pytest.mark.parametrize("yaw", [0.0, 0.7, -2.5, np.pi - 1e-3])
def test_instance_to_box_preserves_yaw(yaw):
    inst = _instance(12, "chair", (1.0, -2.0, 0.4), (0.5, 0.6, 0.8), yaw)
    box = instance_to_box(inst)
    assert box.instance_id == 12 and box.label == "chair"
    assert box.score == pytest.approx(0.75)
    assert (box.center.position.x, box.center.position.y, box.center.position.z) == pytest.approx((1.0, -2.0, 0.4))
    assert (box.size.x, box.size.y, box.size.z) == pytest.approx((0.5, 0.6, 0.8))
    o = box.center.orientation
    roll, pitch, got_yaw = Rotation.from_quat([o.x, o.y, o.z, o.w]).as_euler("xyz")
    assert abs(roll) < 1e-9 and abs(pitch) < 1e-9
    assert np.cos(got_yaw - yaw) == pytest.approx(1.0, abs=1e-9)


def test_instances_to_markers():
    insts = [
        _instance(3, "chair", (1.0, 0.0, 0.4), (0.5, 0.5, 0.8), 0.3),
        _instance(4, "", (2.0, 1.0, 0.5), (1.0, 0.0, 1.0), 0.0),  # zero extent still gets a visible box
        _instance(10, "table", (0.0, 3.0, 0.4), (1.2, 0.8, 0.8), -1.0),
    ]
    stamp = Time(sec=7, nanosec=0)
    arr = instances_to_markers(insts, "map", stamp)
    ms = arr.markers
    assert ms[0].action == Marker.DELETEALL and ms[0].header.frame_id == "map"
    assert len(ms) == 1 + 2 * len(insts)
    ids = [(m.ns, m.id) for m in ms[1:]]
    assert len(set(ids)) == len(ids)
    cubes = [m for m in ms[1:] if m.type == Marker.CUBE]
    texts = [m for m in ms[1:] if m.type == Marker.TEXT_VIEW_FACING]
    assert len(cubes) == len(texts) == len(insts)
    for inst, cube, text in zip(insts, cubes, texts):
        assert cube.action == Marker.ADD and cube.header.frame_id == "map" and cube.header.stamp.sec == 7
        assert (cube.pose.position.x, cube.pose.position.y, cube.pose.position.z) == pytest.approx(inst.box.center)
        o = cube.pose.orientation
        yaw = Rotation.from_quat([o.x, o.y, o.z, o.w]).as_euler("xyz")[2]
        assert np.cos(yaw - inst.box.yaw) == pytest.approx(1.0, abs=1e-9)
        assert cube.scale.x > 0 and cube.scale.y > 0 and cube.scale.z > 0
        assert cube.scale.x == pytest.approx(max(inst.box.size[0], 1e-3))
        r, g, b = marker_color(inst.instance_id)
        assert (cube.color.r, cube.color.g, cube.color.b) == pytest.approx((r / 255, g / 255, b / 255))
        assert 0 < cube.color.a < 1
        assert str(inst.instance_id) in text.text
        if inst.label:
            assert inst.label in text.text
        assert text.pose.position.z > inst.box.center[2] + inst.box.size[2] / 2  # above the box
    # An empty map still clears stale markers.
    empty = instances_to_markers([], "map", stamp)
    assert [m.action for m in empty.markers] == [Marker.DELETEALL]


# ----------------------------------------------------------------------------- clouds and labels
def test_points_cloud_round_trip_with_colours():
    pts = RNG.normal(size=(257, 3)).astype(np.float32) * 4
    cols = RNG.integers(0, 256, (257, 3), dtype=np.uint8)
    cols[0] = (255, 0, 0)
    cols[1] = (0, 255, 0)
    cols[2] = (0, 0, 255)
    msg = points_to_cloud(pts, cols, "map", Time(sec=1))
    assert msg.header.frame_id == "map" and msg.height == 1 and msg.width == 257
    assert msg.point_step == 16 and msg.row_step == 16 * 257 and len(msg.data) == 16 * 257
    assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb"]
    assert [f.offset for f in msg.fields] == [0, 4, 8, 12]
    # RViz convention: rgb packed as 0x00RRGGBB in a little-endian 32-bit word.
    rec = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(-1, 16)
    assert list(rec[0, 12:16]) == [0, 0, 255, 0] and list(rec[2, 12:16]) == [255, 0, 0, 0]
    back_pts, back_cols = cloud_to_points(msg)
    np.testing.assert_array_equal(back_pts, pts)
    np.testing.assert_array_equal(back_cols, cols)
    assert back_cols.dtype == np.uint8


def test_points_cloud_empty_and_mismatch():
    msg = points_to_cloud(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), "map", Time())
    assert msg.width == 0
    pts, cols = cloud_to_points(msg)
    assert pts.shape == (0, 3) and cols.shape == (0, 3)
    with pytest.raises(ConversionError, match="colours"):
        points_to_cloud(np.zeros((3, 3), np.float32), np.zeros((2, 3), np.uint8), "map", Time())


def test_labels_to_dict():
    msg = InstanceLabelArray()
    msg.labels = [InstanceLabel(instance_id=3, label="chair"), InstanceLabel(instance_id=65535, label="wall")]
    assert labels_to_dict(msg) == {3: "chair", 65535: "wall"}
    assert labels_to_dict(InstanceLabelArray()) == {}


def test_box_msg_round_trips_to_oriented_box():
    from scene_vlm_ros.ros.conversions import box_to_oriented_box

    inst = Instance(
        instance_id=4, label="sofa", score=0.8, box=OrientedBox3D((1.0, 2.0, 0.4), (2.0, 0.9, 0.8), 2.5),
        aabb_min=np.zeros(3), aabb_max=np.ones(3), points=np.zeros((1, 3)), colors=np.zeros((1, 3)),
    )
    box = box_to_oriented_box(instance_to_box(inst))
    np.testing.assert_allclose(box.center, inst.box.center, atol=1e-9)
    np.testing.assert_allclose(box.size, inst.box.size, atol=1e-6)
    assert abs(box.yaw - 2.5) < 1e-9
