"""rosbag2 I/O: write synthetic-like frames, read them back with rosbags and with the mcap reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from scene_vlm_ros.bag import messages as m
from scene_vlm_ros.bag.reader import BagReadError, iter_raw_messages, read_bag, read_bag_info
from scene_vlm_ros.bag.topics import (
    FRAME_BASE,
    FRAME_CAMERA_LINK,
    FRAME_CAMERA_OPTICAL,
    FRAME_ODOM,
    TOPIC_CAMERA_INFO,
    TOPIC_COLOR,
    TOPIC_DEPTH,
    TOPIC_INSTANCE_LABELS,
    TOPIC_INSTANCES,
    TOPIC_ODOM,
    TOPIC_TF,
    TOPIC_TF_STATIC,
)
from scene_vlm_ros.bag.writer import BagWriteError, BagWriter, split_camera_extrinsic, write_bag
from scene_vlm_ros.core.geometry import R_LINK_OPTICAL, make_transform, rot_z
from scene_vlm_ros.core.types import CameraIntrinsics, RGBDFrame

W, H, N = 160, 120, 10
T0_NS = 1_700_000_000_000_000_000  # a realistic epoch stamp (stamp 0 means "latest" to tf2)
STEP_NS = 33_333_333
ALL_TOPICS = {
    TOPIC_COLOR, TOPIC_DEPTH, TOPIC_CAMERA_INFO, TOPIC_ODOM, TOPIC_TF, TOPIC_TF_STATIC, TOPIC_INSTANCES,
    TOPIC_INSTANCE_LABELS,
}
T_BASE_OPTICAL = make_transform(R_LINK_OPTICAL @ np.eye(3), [0.12, -0.03, 1.05]) @ make_transform(
    np.array([[1.0, 0.0, 0.0], [0.0, np.cos(0.2), -np.sin(0.2)], [0.0, np.sin(0.2), np.cos(0.2)]]), [0, 0, 0]
)
INTR = CameraIntrinsics(W, H, 120.5, 121.25, 79.5, 60.25)


def odom_pose(i: float) -> np.ndarray:
    """A robot driving an arc: yaw and position change with ``i`` (frame units)."""
    return make_transform(rot_z(0.05 * i), [0.1 * i, 0.02 * i * i, 0.0])


def make_frames(seed: int = 0) -> list[tuple[RGBDFrame, np.ndarray, int]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(N):
        depth = rng.uniform(0.2, 8.0, (H, W)).astype(np.float32)
        depth[0, :5] = 0.0
        depth[1, :5] = np.nan
        depth[2, :5] = 70.0  # beyond what 16UC1 millimetres can hold
        mask = np.zeros((H, W), np.uint16)
        mask[20:60, 30:90] = 3
        mask[70:110, 100:150] = 17 + i
        labels = {3: "chair", 17 + i: f"lamp {i}"}
        frame = RGBDFrame(
            stamp_s=(T0_NS + i * STEP_NS) / 1e9,
            color_rgb=rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
            depth_m=depth,
            intrinsics=INTR,
            T_world_camera=odom_pose(i) @ T_BASE_OPTICAL,
            instance_mask=mask,
            instance_labels=labels,
            frame_index=i,
        )
        out.append((frame, odom_pose(i), T0_NS + i * STEP_NS))
    return out


def write_test_bag(path: Path, storage: str, frames: list, with_instances: bool = True) -> dict:
    with BagWriter(path, T_BASE_OPTICAL, storage=storage, with_instances=with_instances) as writer:
        for frame, T_odom_base, stamp in frames:
            writer.write_odometry(stamp, T_odom_base)
            writer.write_frame(frame, stamp)
        return dict(writer.counts)


@pytest.fixture(scope="module")
def frames() -> list:
    return make_frames()


@pytest.fixture(scope="module", params=["mcap", "sqlite3"])
def bag(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, frames: list) -> Path:
    path = tmp_path_factory.mktemp(request.param) / "bag"
    write_test_bag(path, request.param, frames)
    return path


def test_round_trip_is_exact(bag: Path, frames: list) -> None:
    read = list(read_bag(bag))
    assert len(read) == N
    for (orig, T_odom_base, stamp), got in zip(frames, read):
        assert got.stamp_ns == stamp
        assert got.frame.stamp_s == stamp / 1e9
        np.testing.assert_array_equal(got.frame.color_rgb, orig.color_rgb)
        # Depth is exact after millimetre quantisation; invalid and out-of-range readings become 0.
        depth_mm = np.round(got.frame.depth_m * 1000.0).astype(np.uint16)
        np.testing.assert_array_equal(depth_mm, m.depth_m_to_mm(orig.depth_m))
        assert np.all(got.frame.depth_m[:3, :5] == 0.0)
        assert got.frame.depth_m.dtype == np.float32
        np.testing.assert_array_equal(got.frame.instance_mask, orig.instance_mask)
        assert got.frame.instance_labels == orig.instance_labels
        assert got.frame.intrinsics == INTR
        np.testing.assert_allclose(got.T_odom_base, T_odom_base, atol=1e-6)
        np.testing.assert_allclose(got.T_base_camera_optical, T_BASE_OPTICAL, atol=1e-6)
        np.testing.assert_allclose(got.frame.T_world_camera, orig.T_world_camera, atol=1e-6)
        assert got.color_frame_id == got.depth_frame_id == FRAME_CAMERA_OPTICAL
        assert (got.world_frame_id, got.base_frame_id) == (FRAME_ODOM, FRAME_BASE)
    assert [f.frame.frame_index for f in read] == list(range(N))


def test_bag_info_and_metadata(bag: Path) -> None:
    info = read_bag_info(bag)
    assert set(info.topics) == ALL_TOPICS
    assert info.topics[TOPIC_COLOR].count == N and info.topics[TOPIC_TF_STATIC].count == 1
    assert info.topics[TOPIC_INSTANCE_LABELS].msgtype == "scene_vlm_interfaces/msg/InstanceLabelArray"
    assert info.start_ns == T0_NS and info.end_ns == T0_NS + (N - 1) * STEP_NS
    assert info.duration_s == pytest.approx((N - 1) * STEP_NS / 1e9)
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 8
    assert meta["storage_identifier"] == info.storage
    qos = {t["topic_metadata"]["name"]: yaml.safe_load(t["topic_metadata"]["offered_qos_profiles"])
           for t in meta["topics_with_message_count"]}
    assert qos[TOPIC_TF_STATIC][0]["durability"] == 1  # TRANSIENT_LOCAL
    assert qos[TOPIC_COLOR][0]["durability"] == 2  # VOLATILE


def test_messages_have_right_headers_and_tf_tree(bag: Path) -> None:
    seen: dict[str, int] = {}
    last = -1
    for topic, msgtype, raw, stamp in iter_raw_messages(bag):
        assert stamp >= last
        last = stamp
        seen[topic] = seen.get(topic, 0) + 1
        msg = m.deserialize(raw, msgtype)
        if topic in (TOPIC_COLOR, TOPIC_DEPTH, TOPIC_CAMERA_INFO, TOPIC_INSTANCES, TOPIC_INSTANCE_LABELS):
            assert msg.header.frame_id == FRAME_CAMERA_OPTICAL
            assert m.time_to_ns(msg.header.stamp) == stamp
        if topic == TOPIC_COLOR:
            assert msg.encoding == "rgb8" and msg.step == W * 3
        if topic == TOPIC_DEPTH:
            assert msg.encoding == "16UC1" and msg.step == W * 2
        if topic == TOPIC_CAMERA_INFO:
            assert msg.distortion_model == "plumb_bob"
            np.testing.assert_allclose(np.asarray(msg.p).reshape(3, 4)[:, :3], INTR.K)
            np.testing.assert_allclose(np.asarray(msg.r), np.eye(3).ravel())
        if topic == TOPIC_ODOM:
            assert (msg.header.frame_id, msg.child_frame_id) == (FRAME_ODOM, FRAME_BASE)
        if topic == TOPIC_TF:
            assert [(t.header.frame_id, t.child_frame_id) for t in msg.transforms] == [(FRAME_ODOM, FRAME_BASE)]
        if topic == TOPIC_TF_STATIC:
            chain = {t.child_frame_id: (t.header.frame_id, m.msg_to_transform(t)[3]) for t in msg.transforms}
            assert chain[FRAME_CAMERA_LINK][0] == FRAME_BASE and chain[FRAME_CAMERA_OPTICAL][0] == FRAME_CAMERA_LINK
            np.testing.assert_allclose(chain[FRAME_CAMERA_OPTICAL][1][:3, :3], R_LINK_OPTICAL, atol=1e-9)
            composed = chain[FRAME_CAMERA_LINK][1] @ chain[FRAME_CAMERA_OPTICAL][1]
            np.testing.assert_allclose(composed, T_BASE_OPTICAL, atol=1e-9)
    assert seen[TOPIC_COLOR] == N and seen[TOPIC_TF_STATIC] == 1
    only = list(iter_raw_messages(bag, topics=[TOPIC_ODOM]))
    assert len(only) == N and {t for t, *_ in only} == {TOPIC_ODOM}


def test_mcap_reader_sees_all_topics_with_schemas(tmp_path: Path, frames: list) -> None:
    from mcap.reader import make_reader

    path = tmp_path / "bag"
    counts = write_test_bag(path, "mcap", frames)
    files = list(path.glob("*.mcap"))
    assert len(files) == 1
    with files[0].open("rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        channels = {c.topic: c for c in summary.channels.values()}
        assert set(channels) == ALL_TOPICS
        for topic, channel in channels.items():
            schema = summary.schemas[channel.schema_id]
            assert channel.message_encoding == "cdr" and schema.encoding == "ros2msg"
            assert summary.statistics.channel_message_counts[channel.id] == counts[topic]
        labels_schema = summary.schemas[channels[TOPIC_INSTANCE_LABELS].schema_id]
        assert labels_schema.name == "scene_vlm_interfaces/msg/InstanceLabelArray"
        assert b"MSG: scene_vlm_interfaces/InstanceLabel" in labels_schema.data
        n_color = 0
        for schema, channel, message in reader.iter_messages(topics=[TOPIC_COLOR, TOPIC_INSTANCE_LABELS]):
            i = (message.log_time - T0_NS) // STEP_NS
            decoded = m.deserialize(message.data, schema.name)
            if channel.topic == TOPIC_COLOR:
                n_color += 1
                np.testing.assert_array_equal(m.msg_to_rgb(decoded), frames[i][0].color_rgb)
            else:
                assert m.msg_to_labels(decoded) == frames[i][0].instance_labels
        assert n_color == N


def test_odometry_is_interpolated_at_image_stamps(tmp_path: Path, frames: list) -> None:
    """Odometry at half-frame offsets: each image pose must be the slerp/lerp between its neighbours."""
    path = tmp_path / "bag"
    with BagWriter(path, T_BASE_OPTICAL, storage="mcap") as writer:
        for i, (frame, _, stamp) in enumerate(frames):
            writer.write_odometry(stamp - STEP_NS // 2, odom_pose(i - 0.5))
            writer.write_frame(frame, stamp)
        writer.write_odometry(frames[-1][2] + STEP_NS // 2, odom_pose(N - 0.5))
    read = list(read_bag(path))
    assert len(read) == N
    for i, got in enumerate(read):
        expected = make_transform(rot_z(0.05 * i), [0.1 * i, 0.0, 0.0])
        # Rotation: slerp of yaw is exact. Translation: the midpoint of the quadratic y term.
        expected[1, 3] = 0.02 * ((i - 0.5) ** 2 + (i + 0.5) ** 2) / 2
        np.testing.assert_allclose(got.T_odom_base, expected, atol=1e-6)
        assert got.frame.instance_mask is None and got.frame.instance_labels is None


def test_frames_without_odometry_are_skipped(tmp_path: Path, frames: list) -> None:
    path = tmp_path / "bag"
    with BagWriter(path, T_BASE_OPTICAL) as writer:
        for i, (frame, T, stamp) in enumerate(frames):
            if i >= 3:
                writer.write_odometry(stamp, T)
            writer.write_frame(frame, stamp)
    read = list(read_bag(path, max_extrapolation_s=0.0))
    assert [f.stamp_ns for f in read] == [s for _, _, s in frames[3:]]


def test_write_bag_helper_and_sqlite(tmp_path: Path, frames: list) -> None:
    pairs = [(f, T) for f, T, _ in frames[:3]]
    counts = write_bag(tmp_path / "b", pairs, T_BASE_OPTICAL, storage="sqlite3", with_instances=False,
                       start_stamp_ns=5_000_000_000)
    assert counts[TOPIC_COLOR] == 3 and TOPIC_INSTANCES not in counts
    assert list((tmp_path / "b").glob("*.db3"))
    read = list(read_bag(tmp_path / "b"))
    np.testing.assert_allclose(read[2].frame.T_world_camera, frames[2][0].T_world_camera, atol=1e-6)
    assert read[2].stamp_ns == 5_000_000_000 + m.seconds_to_ns(frames[2][0].stamp_s)


def test_split_camera_extrinsic_composes() -> None:
    T_link, T_opt = split_camera_extrinsic(T_BASE_OPTICAL)
    np.testing.assert_allclose(T_link @ T_opt, T_BASE_OPTICAL, atol=1e-12)
    np.testing.assert_allclose(T_opt[:3, :3], R_LINK_OPTICAL)


# ------------------------------------------------------------------------------------------------
# Message conversions
# ------------------------------------------------------------------------------------------------


def test_image_encodings_round_trip() -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    bgr = m.image_to_msg(rgb[:, :, ::-1].copy(), "bgr8", 5, "f")
    bgr_msg = m.deserialize(m.serialize(bgr), "sensor_msgs/msg/Image")
    np.testing.assert_array_equal(m.msg_to_rgb(bgr_msg), rgb)
    depth = rng.uniform(0.1, 3.0, (5, 7)).astype(np.float32)
    depth[0, 0] = np.nan
    msg32 = m.depth_to_msg(depth, 1, "f", encoding="32FC1")
    out = m.msg_to_depth_m(m.deserialize(m.serialize(msg32), "sensor_msgs/msg/Image"))
    assert out[0, 0] == 0.0
    np.testing.assert_array_equal(out[1:], depth[1:])


def test_image_with_row_padding_and_big_endian() -> None:
    depth_mm = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    padded = np.zeros((3, 12), np.uint8)  # 8 bytes of data + 4 bytes of padding per row
    padded[:, :8] = depth_mm.astype(">u2").view(np.uint8).reshape(3, 8)
    msg = m.msg_class("sensor_msgs/msg/Image")(
        header=m.make_header(0, "f"), height=3, width=4, encoding="16UC1", is_bigendian=1, step=12,
        data=padded.ravel(),
    )
    np.testing.assert_array_equal(m.msg_to_depth_m(msg), depth_mm.astype(np.float32) / 1000.0)


def test_camera_info_and_odometry_round_trip() -> None:
    msg = m.deserialize(m.serialize(m.camera_info_to_msg(INTR, 7, "cam")), "sensor_msgs/msg/CameraInfo")
    assert m.msg_to_camera_info(msg) == INTR
    T = odom_pose(3.7)
    stamp, parent, child, T_back = m.msg_to_odometry(
        m.deserialize(m.serialize(m.odometry_to_msg(T, 123456789012, "odom", "base_link")), "nav_msgs/msg/Odometry")
    )
    assert (stamp, parent, child) == (123456789012, "odom", "base_link")
    np.testing.assert_allclose(T_back, T, atol=1e-12)


def test_conversion_errors_are_specific() -> None:
    with pytest.raises(m.MessageConversionError, match="unsupported image encoding"):
        m.image_to_msg(np.zeros((2, 2), np.uint8), "yuv422", 0, "f")
    with pytest.raises(m.MessageConversionError, match="needs dtype"):
        m.image_to_msg(np.zeros((2, 2), np.float64), "16UC1", 0, "f")
    with pytest.raises(m.MessageConversionError, match="does not fit"):
        m.labels_to_msg({0: "background"}, 0, "f")
    with pytest.raises(m.MessageConversionError, match="negative stamp"):
        m.ns_to_time(-1)
    bad = m.image_to_msg(np.zeros((4, 4), np.uint16), "16UC1", 0, "f")
    bad.data = bad.data[:10]
    with pytest.raises(m.MessageConversionError, match="too small"):
        m.msg_to_image(bad)
    info = m.camera_info_to_msg(INTR, 0, "f")
    info.k = np.zeros(9)
    with pytest.raises(m.MessageConversionError, match="no valid K"):
        m.msg_to_camera_info(info)


def test_writer_and_reader_errors(tmp_path: Path, frames: list) -> None:
    with pytest.raises(BagReadError, match="not found"):
        list(read_bag(tmp_path / "nope"))
    (tmp_path / "plain").mkdir()
    with pytest.raises(BagReadError, match="metadata.yaml"):
        read_bag_info(tmp_path / "plain")
    with pytest.raises(BagWriteError, match="not a rosbag2 directory"):
        BagWriter(tmp_path / "plain", T_BASE_OPTICAL, overwrite=True).open()
    with pytest.raises(BagWriteError, match="unknown storage"):
        BagWriter(tmp_path / "x", T_BASE_OPTICAL, storage="rosbag1")
    path = tmp_path / "b"
    with BagWriter(path, T_BASE_OPTICAL) as writer:
        frame, _, stamp = frames[0]
        writer.write_frame(frame, stamp)  # images but no odometry at all
    with pytest.raises(BagWriteError, match="already exists"):
        BagWriter(path, T_BASE_OPTICAL).open()
    with pytest.raises(BagReadError, match="neither"):
        list(read_bag(path))
    with BagWriter(path, T_BASE_OPTICAL, with_instances=True, overwrite=True) as writer:
        no_mask = RGBDFrame(frame.stamp_s, frame.color_rgb, frame.depth_m, INTR, np.eye(4))
        with pytest.raises(BagWriteError, match="no instance_mask"):
            writer.write_frame(no_mask, stamp)
        wrong = RGBDFrame(frame.stamp_s, frame.color_rgb[:, :80], frame.depth_m, INTR, np.eye(4))
        with pytest.raises(BagWriteError, match="differ in size"):
            writer.write_frame(wrong, stamp)


# ------------------------------------------------------------------------------------------------
# make-bag on the synthetic world
# ------------------------------------------------------------------------------------------------


def test_make_bag_synthetic(tmp_path: Path) -> None:
    from scene_vlm_ros.commands.make_bag import START_STAMP_NS, MakeBagError, make_bag
    from scene_vlm_ros.datasets.questions import read_questions
    from scene_vlm_ros.datasets.render import generate_sequence
    from scene_vlm_ros.datasets.synthetic import generate_layout, read_ground_truth

    out = tmp_path / "room"
    # loop=True: 8 frames spread over one loop of the room, so objects are in view.
    result = make_bag(source="synthetic", seed=1, frames=8, width=160, height=120, out=out, loop=True, progress=False)
    assert result["frames"] == 8 and result["bag"] == str(out)
    assert Path(result["gt"]) == tmp_path / "room.gt.json"
    assert Path(result["queries"]) == tmp_path / "room.queries.json"
    layout = generate_layout(1)
    objects, size = read_ground_truth(result["gt"])
    assert [o.to_json() for o in objects] == [o.to_json() for o in layout.objects]
    questions = read_questions(result["queries"])
    assert len(questions) == result["n_queries"] > 0
    assert all(0 <= f < 8 for q in questions for f in q["frame_ids"])
    info = read_bag_info(out)
    assert set(info.topics) == ALL_TOPICS and info.custom_data["scene_vlm.seed"] == "1"
    expected = list(generate_sequence(layout, 8, 160, 120, seed=1, speed_mps=None))
    read = list(read_bag(out))
    assert len(read) == 8
    labels_seen: set[str] = set()
    for got, sf in zip(read, expected):
        assert got.stamp_ns == START_STAMP_NS + m.seconds_to_ns(sf.frame.stamp_s)
        np.testing.assert_array_equal(got.frame.color_rgb, sf.frame.color_rgb)
        np.testing.assert_array_equal(got.frame.instance_mask, sf.frame.instance_mask)
        assert got.frame.instance_labels == {int(k): v for k, v in (sf.frame.instance_labels or {}).items()}
        np.testing.assert_allclose(got.frame.depth_m, m.depth_m_to_mm(sf.frame.depth_m) / 1000.0, atol=1e-6)
        np.testing.assert_allclose(got.T_base_camera_optical, sf.T_base_camera_optical, atol=1e-6)
        # No drift: the bag's odometry-derived camera pose is the true one.
        np.testing.assert_allclose(got.frame.T_world_camera, sf.frame.T_world_camera, atol=1e-6)
        labels_seen |= set((got.frame.instance_labels or {}).values())
    assert labels_seen and labels_seen <= {o.label for o in layout.objects}
    with pytest.raises(BagWriteError, match="already exists"):
        make_bag(source="synthetic", seed=1, frames=2, width=160, height=120, out=out, progress=False)
    with pytest.raises(MakeBagError, match="unknown storage"):
        make_bag(storage="rosbag1", out=tmp_path / "x", progress=False)
    with pytest.raises(MakeBagError, match="layout file not found"):
        make_bag(layout=tmp_path / "missing.json", out=tmp_path / "x", progress=False)


def test_make_bag_synthetic_drift_writes_odometry_not_truth(tmp_path: Path) -> None:
    from scene_vlm_ros.commands.make_bag import make_bag
    from scene_vlm_ros.datasets.render import generate_sequence
    from scene_vlm_ros.datasets.synthetic import generate_layout

    out = tmp_path / "drift"
    make_bag(seed=2, frames=30, width=32, height=24, out=out, drift=True, storage="sqlite3", progress=False)
    # make-bag fits one loop of the room into the frames by default (speed_mps=None)
    expected = list(generate_sequence(generate_layout(2), 30, 32, 24, seed=2, drift=True, speed_mps=None))
    read = list(read_bag(out))
    assert len(read) == 30
    for got, sf in zip(read, expected):
        np.testing.assert_allclose(got.T_odom_base, sf.T_odom_base, atol=1e-6)
    # The drifting odometry must differ from the true pose by the end (otherwise drift was not written).
    err = np.linalg.norm(read[-1].frame.T_world_camera[:3, 3] - expected[-1].frame.T_world_camera[:3, 3])
    assert err > 1e-4


def test_interfaces_dir_override_and_raw_topic_filter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bag: Path
) -> None:
    src = m.find_interfaces_msg_dir()
    assert (src / "InstanceLabelArray.msg").is_file()
    copy = tmp_path / "msg"
    copy.mkdir()
    for f in src.glob("*.msg"):
        (copy / f.name).write_text(f.read_text())
    monkeypatch.setenv(m.INTERFACES_DIR_ENV, str(copy))
    assert m.find_interfaces_msg_dir() == copy
    with pytest.raises(BagReadError, match="none of the topics"):
        list(iter_raw_messages(bag, topics=["/no/such/topic"]))


def test_sync_tolerance_pairs_separately_stamped_streams(tmp_path: Path, frames: list) -> None:
    """A driver that stamps depth 2 ms after colour: exact pairing finds nothing, a 5 ms tolerance pairs all."""
    path = tmp_path / "bag"
    with BagWriter(path, T_BASE_OPTICAL) as writer:
        for frame, T, stamp in frames:
            writer.write_odometry(stamp, T)
            writer._write(TOPIC_COLOR, m.image_to_msg(frame.color_rgb, "rgb8", stamp, FRAME_CAMERA_OPTICAL), stamp)
            writer._write(TOPIC_CAMERA_INFO, m.camera_info_to_msg(INTR, stamp, FRAME_CAMERA_OPTICAL), stamp)
            depth_stamp = stamp + 2_000_000
            writer._write(TOPIC_DEPTH, m.depth_to_msg(frame.depth_m, depth_stamp, FRAME_CAMERA_OPTICAL), depth_stamp)
    assert list(read_bag(path, sync_tolerance_s=0.001)) == []
    read = list(read_bag(path, sync_tolerance_s=0.005))
    # Frames are anchored (and stamped) on depth, as in the node.
    assert [f.stamp_ns for f in read] == [s + 2_000_000 for _, _, s in frames]
    np.testing.assert_array_equal(np.round(read[4].frame.depth_m * 1000), m.depth_m_to_mm(frames[4][0].depth_m))
    # A bare .mcap file (no metadata.yaml) reads too.
    mcap_file = next(path.glob("*.mcap"))
    assert len(list(read_bag(mcap_file, sync_tolerance_s=0.005))) == N
    assert read_bag_info(mcap_file).topics[TOPIC_COLOR].count == N


def test_pipeline_checks_registration_of_bag_messages(frames: list) -> None:
    """Messages of one frame through the node's pipeline: a frame with its mask and labels; a camera
    info or depth of another size drops the frame as size_mismatch (counted), never raises."""
    from scene_vlm_ros.core.pipeline import FramePipeline

    frame, T, stamp = frames[0]
    color = m.image_to_msg(frame.color_rgb, "rgb8", stamp, FRAME_CAMERA_OPTICAL)
    depth = m.depth_to_msg(frame.depth_m, stamp, FRAME_CAMERA_OPTICAL)
    info = m.camera_info_to_msg(INTR, stamp, FRAME_CAMERA_OPTICAL)
    mask = m.image_to_msg(frame.instance_mask, "16UC1", stamp, FRAME_CAMERA_OPTICAL)
    labels = m.labels_to_msg(frame.instance_labels, stamp, FRAME_CAMERA_OPTICAL)
    odom = m.odometry_to_msg(T, stamp)

    def run(*msgs: tuple[str, object]) -> tuple[list, dict]:
        p = FramePipeline(T_BASE_OPTICAL)
        out = []
        for stream, msg in msgs:
            out += p.on_message(stream, msg)
        return out, p.stats()["dropped"]

    out, dropped = run(("odom", odom), ("camera_info", info), ("labels", labels), ("color", color),
                       ("mask", mask), ("depth", depth))
    assert len(out) == 1 and not dropped
    assert out[0].stamp_s == stamp / 1e9 and out[0].instance_labels == frame.instance_labels
    np.testing.assert_array_equal(out[0].instance_mask, frame.instance_mask)
    np.testing.assert_allclose(out[0].T_world_camera, T @ T_BASE_OPTICAL, atol=1e-9)
    small_info = m.camera_info_to_msg(INTR.scaled(0.5), stamp, FRAME_CAMERA_OPTICAL)
    out, dropped = run(("odom", odom), ("camera_info", small_info), ("color", color), ("depth", depth))
    assert out == [] and dropped == {"size_mismatch": 1}
    small_depth = m.depth_to_msg(frame.depth_m[::2, ::2], stamp, FRAME_CAMERA_OPTICAL)
    out, dropped = run(("odom", odom), ("camera_info", info), ("color", color), ("depth", small_depth))
    assert out == [] and dropped == {"size_mismatch": 1}


@pytest.mark.ros
def test_cdr_bytes_decode_with_rclpy(bag: Path, frames: list) -> None:
    """The bytes rosbags wrote are what ROS 2's own typesupport reads (what a live replay publishes)."""
    serialization = pytest.importorskip("rclpy.serialization", reason="rclpy not installed")
    sensor_msgs = pytest.importorskip("sensor_msgs.msg", reason="sensor_msgs not installed")
    nav_msgs = pytest.importorskip("nav_msgs.msg", reason="nav_msgs not installed")
    types = {"sensor_msgs/msg/Image": sensor_msgs.Image, "sensor_msgs/msg/CameraInfo": sensor_msgs.CameraInfo,
             "nav_msgs/msg/Odometry": nav_msgs.Odometry}
    n = 0
    for topic, msgtype, raw, stamp in iter_raw_messages(bag, topics=[TOPIC_COLOR, TOPIC_CAMERA_INFO, TOPIC_ODOM]):
        msg = serialization.deserialize_message(raw, types[msgtype])
        i = (stamp - T0_NS) // STEP_NS
        assert msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec == stamp
        if topic == TOPIC_COLOR:
            assert (msg.encoding, msg.width, msg.height, msg.header.frame_id) == ("rgb8", W, H, FRAME_CAMERA_OPTICAL)
            np.testing.assert_array_equal(np.frombuffer(bytes(msg.data), np.uint8).reshape(H, W, 3),
                                          frames[i][0].color_rgb)
        elif topic == TOPIC_CAMERA_INFO:
            np.testing.assert_allclose(np.asarray(msg.k).reshape(3, 3), INTR.K)
        else:
            p = msg.pose.pose.position
            np.testing.assert_allclose([p.x, p.y, p.z], frames[i][1][:3, 3], atol=1e-12)
            assert msg.child_frame_id == FRAME_BASE
        n += 1
    assert n == 3 * N
