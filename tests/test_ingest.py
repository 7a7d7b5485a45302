"""The one ingest path without ROS: raw CDR and compressed decoding, registration and distortion
checks, tf_static extrinsics, feed health, the mapping worker's policies, and offline determinism."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from scene_vlm_ros.bag import messages as m
from scene_vlm_ros.bag.reader import read_bag
from scene_vlm_ros.bag.topics import FRAME_CAMERA_OPTICAL
from scene_vlm_ros.core import decode
from scene_vlm_ros.core.geometry import R_LINK_OPTICAL, make_transform, rot_z
from scene_vlm_ros.core.mapping_worker import MappingWorker, MappingWorkerConfig
from scene_vlm_ros.core.pipeline import DROP_REASONS, FramePipeline, PipelineConfig, feed_health
from scene_vlm_ros.core.sync import RateWindow
from scene_vlm_ros.core.types import CameraIntrinsics, RGBDFrame

H, W = 48, 64
INTR = CameraIntrinsics(W, H, 60.0, 60.0, 31.5, 23.5)
T_BASE_CAM = make_transform(R_LINK_OPTICAL, [0.1, 0.0, 1.0])
STAMP0 = 1_700_000_000_000_000_000
RNG = np.random.default_rng(3)


def _rgb() -> np.ndarray:
    return RNG.integers(0, 255, (H, W, 3), dtype=np.uint8)


def _depth() -> np.ndarray:
    return RNG.uniform(0.5, 4.0, (H, W)).astype(np.float32)


# ----------------------------------------------------------------------------- raw CDR views
@pytest.mark.parametrize("encoding", ["rgb8", "16UC1", "32FC1"])
def test_raw_cdr_image_view_decodes_like_the_full_message(encoding: str) -> None:
    arr = {"rgb8": _rgb(), "16UC1": (_depth() * 1000).astype(np.uint16), "32FC1": _depth()}[encoding]
    msg = m.image_to_msg(arr, encoding, STAMP0 + 123, "cam_frame")
    view = decode.parse_image_cdr(m.serialize(msg))
    assert decode.header_stamp_ns(view) == STAMP0 + 123 and view.header.frame_id == "cam_frame"
    assert (view.height, view.width, view.encoding, view.step) == (H, W, encoding, msg.step)
    np.testing.assert_array_equal(decode.msg_to_image(view), decode.msg_to_image(msg))


def test_raw_cdr_compressed_view_and_truncated_bytes() -> None:
    rgb = _rgb()
    msg = m.compressed_image_to_msg(rgb, STAMP0, "cam", fmt="png")
    view = decode.parse_compressed_image_cdr(m.serialize(msg))
    assert view.format == "rgb8; png compressed bgr8"
    np.testing.assert_array_equal(decode.msg_to_rgb(view), rgb)  # png is lossless
    raw = m.serialize(m.image_to_msg(rgb, "rgb8", STAMP0, "cam"))
    with pytest.raises(decode.MessageConversionError, match="truncated"):
        decode.parse_image_cdr(raw[: len(raw) // 2])
    with pytest.raises(decode.MessageConversionError, match="too short|encapsulation"):
        decode.parse_image_cdr(b"\x07\x07")


# ----------------------------------------------------------------------------- compressed images
def test_compressed_colour_and_depth_decode() -> None:
    yy, xx = np.mgrid[0:H, 0:W]
    rgb = np.stack([xx * 4, yy * 5, np.full_like(xx, 200)], axis=2).astype(np.uint8)  # smooth: jpeg-friendly
    depth = _depth()
    jpeg = m.compressed_image_to_msg(rgb, STAMP0, "cam", fmt="jpeg", quality=95)
    got = decode.msg_to_rgb(jpeg)
    # lossy, but channels in RGB order (image_transport stores bgr8)
    assert got.shape == rgb.shape and np.abs(got.astype(int) - rgb.astype(int)).mean() < 3
    cd = m.compressed_depth_to_msg(depth, STAMP0, "cam")
    assert cd.format == "16UC1; compressedDepth png"
    # compressedDepth png of millimetres: exact to the millimetre
    np.testing.assert_array_equal(np.round(decode.msg_to_depth_m(cd) * 1000), m.depth_m_to_mm(depth))
    # depth given a colour-compressed image, or corrupt data: a clear error, not a crash
    with pytest.raises(decode.MessageConversionError, match="compressedDepth"):
        decode.msg_to_depth_m(jpeg)
    broken = SimpleNamespace(format="16UC1; compressedDepth png", data=np.frombuffer(b"\x00" * 40, np.uint8))
    with pytest.raises(decode.MessageConversionError, match="no PNG"):
        decode.msg_to_depth_m(broken)
    garbage = SimpleNamespace(format="jpeg", data=np.frombuffer(b"\xff\xd8garbage", np.uint8))
    with pytest.raises(decode.MessageConversionError, match="could not be decoded"):
        decode.msg_to_rgb(garbage)


def test_compressed_bag_maps_through_the_pipeline(tmp_path: Path) -> None:
    """A bag recorded the way robots record (jpeg colour, compressedDepth) reads into posed frames."""
    from scene_vlm_ros.bag.topics import TOPIC_COLOR_COMPRESSED, TOPIC_DEPTH_COMPRESSED
    from scene_vlm_ros.bag.writer import BagWriter

    path = tmp_path / "compressed"
    depths = []
    with BagWriter(path, T_BASE_CAM, compressed=True) as writer:
        for i in range(6):
            stamp = STAMP0 + i * 33_333_333
            T = make_transform(rot_z(0.05 * i), [0.1 * i, 0, 0])  # noqa: N806
            writer.write_odometry(stamp, T)
            d = _depth()
            depths.append(d)
            writer.write_frame(RGBDFrame(stamp / 1e9, _rgb(), d, INTR, T @ T_BASE_CAM), stamp)
        writer.write_odometry(STAMP0 + 6 * 33_333_333, make_transform(rot_z(0.3), [0.6, 0, 0]))
    assert {TOPIC_COLOR_COMPRESSED, TOPIC_DEPTH_COMPRESSED} <= set(writer.counts)
    stats: dict = {}
    frames = list(read_bag(path, stats_out=stats))
    assert len(frames) == 6 and not stats["dropped"]
    for bf, d in zip(frames, depths):
        np.testing.assert_array_equal(np.round(bf.frame.depth_m * 1000), m.depth_m_to_mm(d))
        np.testing.assert_allclose(bf.frame.T_world_camera, bf.T_odom_base @ T_BASE_CAM, atol=1e-9)


# ----------------------------------------------------------------------------- pipeline checks
def _frame_msgs(stamp: int, color_id: str = FRAME_CAMERA_OPTICAL, depth_id: str = FRAME_CAMERA_OPTICAL,
                depth: np.ndarray | None = None) -> list[tuple[str, object]]:
    return [
        ("camera_info", m.camera_info_to_msg(INTR, stamp, color_id)),
        ("color", m.image_to_msg(_rgb(), "rgb8", stamp, color_id)),
        ("depth", m.depth_to_msg(_depth() if depth is None else depth, stamp, depth_id)),
    ]


def _run(p: FramePipeline, msgs: list[tuple[str, object]]) -> list:
    out = []
    for stream, msg in msgs:
        out += p.on_message(stream, msg)
    return out


def test_malformed_messages_are_counted_and_the_pipeline_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    p = FramePipeline(T_BASE_CAM)
    good = _frame_msgs(STAMP0)
    bad_enc = m.image_to_msg(_rgb(), "rgb8", STAMP0 + 1, "cam")
    bad_enc.encoding = "yuv422"
    nan_odom = m.odometry_to_msg(np.eye(4), STAMP0)
    nan_odom.pose.pose.position.x = float("nan")
    zero_q = m.odometry_to_msg(np.eye(4), STAMP0)
    zero_q.pose.pose.orientation.w = 0.0
    short = m.image_to_msg(_rgb(), "rgb8", STAMP0 + 2, "cam")
    short.data = short.data[:100]
    info_bad = m.camera_info_to_msg(INTR, STAMP0, "cam")
    info_bad.k = np.zeros(9)
    out = _run(p, [("color", bad_enc), ("odom", nan_odom), ("odom", zero_q), ("depth", short),
                   ("camera_info", info_bad)])
    assert out == []
    dropped = p.stats()["dropped"]
    assert dropped == {"invalid_color": 1, "invalid_odom": 2, "invalid_depth": 1, "invalid_camera_info": 1}
    assert set(dropped) <= set(DROP_REASONS)
    # The pipeline still makes frames afterwards.
    out = _run(p, [("odom", m.odometry_to_msg(np.eye(4), STAMP0)), *good,
                   ("odom", m.odometry_to_msg(np.eye(4), STAMP0 + 10_000_000))])
    assert len(out) == 1


def test_unregistered_sizes_drop_with_a_warning_naming_frames(caplog: pytest.LogCaptureFixture) -> None:
    p = FramePipeline(T_BASE_CAM)
    small = _depth()[::2, ::2]
    out = _run(p, [("odom", m.odometry_to_msg(np.eye(4), STAMP0)),
                   *_frame_msgs(STAMP0, "color_optical", "depth_optical", depth=small),
                   ("odom", m.odometry_to_msg(np.eye(4), STAMP0 + 10_000_000))])
    assert out == [] and p.stats()["dropped"] == {"size_mismatch": 1}
    assert any("depth_optical" in w and "color_optical" in w for w in p.stats()["warnings"])
    # Same size but different frame ids: accepted, with one warning (taken as registered).
    p2 = FramePipeline(T_BASE_CAM)
    for k in range(3):
        s = STAMP0 + k * 33_333_333
        _run(p2, [("odom", m.odometry_to_msg(np.eye(4), s)), *_frame_msgs(s, "color_optical", "depth_optical")])
    warnings = p2.stats()["warnings"]
    assert p2.stats()["frames_out"] >= 2 and sum("different frame ids" in w for w in warnings) == 1


def test_distorted_camera_is_undistorted_and_warned_once() -> None:
    p = FramePipeline(T_BASE_CAM)
    info = m.camera_info_to_msg(INTR, STAMP0, "cam")
    info.d = np.array([-0.3, 0.1, 0.0, 0.0, 0.0])
    yy, xx = np.mgrid[0:H, 0:W]
    rgb = np.stack([xx * 4, yy * 5, np.full_like(xx, 100)], axis=2).astype(np.uint8)
    color = m.image_to_msg(rgb, "rgb8", STAMP0, "cam")
    depth = m.depth_to_msg(np.full((H, W), 2.0, np.float32), STAMP0, "cam")
    out = _run(p, [("odom", m.odometry_to_msg(np.eye(4), STAMP0)), ("camera_info", info), ("color", color),
                   ("depth", depth), ("odom", m.odometry_to_msg(np.eye(4), STAMP0 + 10_000_000))])
    assert len(out) == 1
    f = out[0]
    assert not np.array_equal(f.color_rgb, rgb)  # remapped
    np.testing.assert_array_equal(f.color_rgb[H // 2, W // 2], rgb[H // 2, W // 2])  # the centre stays
    assert set(np.unique(f.depth_m)) <= {0.0, 2.0}  # nearest-neighbour: depths never blended
    assert sum("distortion" in w for w in p.stats()["warnings"]) == 1


def test_extrinsic_from_tf_static_chain_and_none_without_it() -> None:
    T_link = make_transform(np.eye(3), [0.2, 0.0, 1.1])  # noqa: N806
    T_opt = make_transform(R_LINK_OPTICAL, [0.0, 0.0, 0.0])  # noqa: N806
    tfs = m.tf_message([m.transform_to_msg(T_link, STAMP0, "base_link", "camera_link"),
                        m.transform_to_msg(T_opt, STAMP0, "camera_link", "cam_opt")])
    odom = m.odometry_to_msg(make_transform(rot_z(0.4), [1.0, 2.0, 0.0]), STAMP0)
    p = FramePipeline(None)  # no configured extrinsic: only tf_static can pose frames
    out = _run(p, [("tf_static", tfs), ("odom", odom), *_frame_msgs(STAMP0, "cam_opt", "cam_opt")])
    assert len(out) == 1
    np.testing.assert_allclose(out[0].T_world_camera, make_transform(rot_z(0.4), [1.0, 2.0, 0.0]) @ T_link @ T_opt,
                               atol=1e-9)
    p2 = FramePipeline(None)
    assert _run(p2, [("odom", odom), *_frame_msgs(STAMP0, "other", "other")]) == []
    assert p2.stats()["dropped"] == {"no_extrinsic": 1}


def test_poses_from_tf_when_there_is_no_odometry() -> None:
    p = FramePipeline(T_BASE_CAM)
    tf = [m.tf_message([m.transform_to_msg(make_transform(np.eye(3), [0.1 * k, 0, 0]), STAMP0 + k * 50_000_000,
                                           "odom", "base_link")]) for k in range(3)]
    out = _run(p, [("tf", tf[0]), *_frame_msgs(STAMP0 + 25_000_000), ("tf", tf[1]), ("tf", tf[2])])
    assert len(out) == 1
    expected = make_transform(np.eye(3), [0.05, 0, 0]) @ T_BASE_CAM  # odom -> base interpolated at the stamp
    np.testing.assert_allclose(out[0].T_world_camera, expected, atol=1e-9)


# ----------------------------------------------------------------------------- diagnostics
def test_rate_window_and_feed_health() -> None:
    w = RateWindow(window_s=5.0)
    for k in range(30):
        w.add(100.0 + k / 30.0)
    assert w.rate(101.0) == pytest.approx(30.0, rel=0.05)
    assert w.rate(110.0) == 0.0  # the feed stopped: the window empties, no since-start average
    ages = {"color": 0.1, "depth": 0.1, "odom": 0.1}
    assert feed_health(ages, ["color", "depth", "odom"], 1.0, 3.0, 60.0) == (0, "inputs OK")
    level, msg = feed_health({**ages, "depth": 1.5}, ["color", "depth", "odom"], 1.0, 3.0, 60.0)
    assert level == 1 and "depth silent for 1.5 s" in msg
    level, msg = feed_health({**ages, "odom": 4.0}, ["color", "depth", "odom"], 1.0, 3.0, 60.0)
    assert level == 2 and "odom" in msg
    level, msg = feed_health({"color": 0.1}, ["color", "depth"], 1.0, 3.0, 10.0)
    assert level == 2 and "depth never received" in msg


# ----------------------------------------------------------------------------- mapping worker
class _FakeMemory:
    """Records what the worker does with it (integration order, refresh points)."""

    def __init__(self, integrate_s: float = 0.0, reject_every: int = 0) -> None:
        self.integrated: list[float] = []
        self.refreshed_at: list[int] = []
        self.integrate_s = integrate_s
        self.reject_every = reject_every

    def integrate(self, frame: RGBDFrame) -> SimpleNamespace:
        if self.integrate_s:
            time.sleep(self.integrate_s)
        if frame.stamp_s < 0:
            raise RuntimeError("boom")
        self.integrated.append(frame.stamp_s)
        rejected = self.reject_every and len(self.integrated) % self.reject_every == 0
        return SimpleNamespace(accepted=not rejected, reason="too_few_valid_depth" if rejected else None, timings={})

    def refresh(self) -> None:
        self.refreshed_at.append(len(self.integrated))

    def snapshot(self, allow_stale: bool = False) -> SimpleNamespace:
        return SimpleNamespace(n_frames_integrated=len(self.integrated))


def _frames(stamps: list[float]) -> list[RGBDFrame]:
    return [RGBDFrame(t, np.zeros((1, 1, 3), np.uint8), np.zeros((1, 1), np.float32), INTR, np.eye(4))
            for t in stamps]


@pytest.mark.parametrize(("rate_hz", "kept"), [(0.0, 30), (15.0, 15), (20.0, 20), (10.0, 10)])
def test_rate_policy_keeps_the_asked_rate_and_counts_skips(rate_hz: float, kept: int) -> None:
    mem = _FakeMemory()
    w = MappingWorker(mem, MappingWorkerConfig(max_rate_hz=rate_hz, refresh_period_s=0, queue_size=100))
    w.submit(_frames([k / 30.0 for k in range(30)]))
    w.drain()
    assert len(mem.integrated) == kept
    assert w.stats()["skipped_by_rate_policy"] == 30 - kept and not w.stats()["dropped"]


def test_queue_bound_drops_oldest_and_refresh_follows_stamps() -> None:
    mem = _FakeMemory(reject_every=4)
    w = MappingWorker(mem, MappingWorkerConfig(queue_size=5, refresh_period_s=1.0))
    w.submit(_frames([k * 0.25 for k in range(8)]))  # 8 into a queue of 5
    assert w.stats()["dropped"] == {"mapping_queue_overflow": 3}
    w.drain()
    assert mem.integrated == [0.75, 1.0, 1.25, 1.5, 1.75]  # the newest were kept, in order
    # refreshed once the stamp passed 1 s after the first integrated frame: at 1.75
    assert mem.refreshed_at == [5]
    s = w.stats()
    assert s["integrated"] == 4 and s["rejected"] == {"too_few_valid_depth": 1}
    assert s["dropped"]["rejected_by_mapping"] == 1
    w.submit(_frames([-1.0]))  # a core error is counted, mapping goes on
    w.drain()
    assert w.stats()["dropped"]["integration_error"] == 1 and "boom" in w.stats()["errors"][0]


def test_worker_thread_integrates_and_refreshes_when_idle() -> None:
    mem = _FakeMemory(integrate_s=0.002)
    w = MappingWorker(mem, MappingWorkerConfig(refresh_period_s=10.0, idle_refresh_s=0.2, queue_size=100))
    w.start()
    try:
        t = threading.Thread(target=lambda: [w.submit(_frames([k * 0.1])) for k in range(20)])
        t.start()
        t.join()
        assert w.wait_settled(timeout_s=5.0, quiet_s=0.3) == 20
    finally:
        w.stop()
    assert mem.integrated == pytest.approx([k * 0.1 for k in range(20)])
    assert mem.refreshed_at == [20]  # the idle refresh covered every frame, once
    assert w.stats()["refreshed_frames"] == 20


# ----------------------------------------------------------------------------- determinism
@pytest.fixture(scope="module")
def small_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from scene_vlm_ros.commands.make_bag import make_bag

    out = tmp_path_factory.mktemp("ingest") / "room"
    make_bag(source="synthetic", seed=2, frames=40, out=out, width=320, height=240, progress=False)
    return out


def test_offline_map_is_identical_run_to_run(small_bag: Path) -> None:
    """Geometry-only segmentation (its RANSAC is seeded) and stamp-based refreshes: byte-identical."""
    from scene_vlm_ros.commands.map import map_source

    dumps = []
    for _ in range(2):
        memory, stats = map_source(small_bag, use_mask=False)
        dumps.append(json.dumps([i.to_json() for i in memory.snapshot(allow_stale=True).instances], sort_keys=True))
        assert stats["frames_integrated"] == 40 and stats["instances"] > 0
    assert dumps[0] == dumps[1]


def test_auto_pose_source_falls_back_to_odometry_when_tf_cannot_connect() -> None:
    """A TF hook that knows nothing of the camera frame (a robot with /odom but no TF tree): after a
    frame has waited pose_max_wait_s, poses come from odometry + extrinsic, said once; a hook that
    does connect is used as is and never replaced."""
    calls: list[str] = []

    def no_tf(frame_id: str, stamp_ns: int):
        calls.append(frame_id)
        return None, "unknown"

    p = FramePipeline(T_BASE_CAM, PipelineConfig(pose_max_wait_s=0.1), camera_pose=no_tf)
    out = []
    for k in range(6):
        s = STAMP0 + k * 50_000_000
        out += _run(p, [("odom", m.odometry_to_msg(make_transform(np.eye(3), [0.1 * k, 0, 0]), s)), *_frame_msgs(s)])
    assert p.pose_mode == "odometry" and len(out) >= 4
    last = out[-1]
    x = round((last.stamp_s - STAMP0 / 1e9) / 0.05) * 0.1
    np.testing.assert_allclose(last.T_world_camera, make_transform(np.eye(3), [x, 0, 0]) @ T_BASE_CAM, atol=1e-6)
    assert sum("odometry + extrinsic" in w for w in p.stats()["warnings"]) == 1
    n_calls = len(calls)
    _run(p, [("odom", m.odometry_to_msg(np.eye(4), STAMP0 + 10**9)), *_frame_msgs(STAMP0 + 10**9)])
    assert len(calls) == n_calls  # decided: TF is not asked again

    T_tf = make_transform(rot_z(0.3), [5.0, 0.0, 1.0])  # noqa: N806
    p2 = FramePipeline(T_BASE_CAM, camera_pose=lambda f, s: (T_tf, "ok"))
    got = _run(p2, _frame_msgs(STAMP0))
    assert p2.pose_mode == "tf" and len(got) == 1
    np.testing.assert_allclose(got[0].T_world_camera, T_tf)  # TF's pose ends at the camera: no extrinsic


def test_thousands_of_malformed_messages_never_escape_the_pipeline() -> None:
    """3,000 randomly broken messages (wrong encodings and sizes, truncated or garbage data, NaN and zero
    poses, corrupt compressed images, garbage CDR bytes): nothing raises, every one is counted under a
    named reason, and a good frame afterwards still comes out with the right pose."""
    rng = np.random.default_rng(11)
    p = FramePipeline(T_BASE_CAM)
    good_color = m.image_to_msg(_rgb(), "rgb8", STAMP0, "cam")
    good_depth = m.depth_to_msg(_depth(), STAMP0, "cam")
    raw_color = m.serialize(good_color)
    n_raw_bad = 0
    for k in range(3000):
        kind = k % 10
        stamp = STAMP0 + int(rng.integers(0, 10**9))
        if kind == 0:
            msg = m.image_to_msg(_rgb(), "rgb8", stamp, "cam")
            msg.encoding = str(rng.choice(["yuv422", "", "bayer_rggb8", "64FC1"]))
            p.on_message("color", msg)
        elif kind == 1:
            msg = m.depth_to_msg(_depth(), stamp, "cam")
            msg.data = msg.data[: int(rng.integers(0, len(msg.data)))]
            p.on_message("depth", msg)
        elif kind == 2:
            msg = m.depth_to_msg(_depth(), stamp, "cam")
            msg.step = int(rng.integers(0, msg.step))
            p.on_message("depth", msg)
        elif kind == 3:
            T = np.eye(4)  # noqa: N806
            msg = m.odometry_to_msg(T, stamp)
            setattr(msg.pose.pose.position, str(rng.choice(["x", "y", "z"])), float("nan"))
            p.on_message("odom", msg)
        elif kind == 4:
            msg = m.odometry_to_msg(np.eye(4), stamp)
            msg.pose.pose.orientation.w = 0.0
            p.on_message("odom", msg)
        elif kind == 5:
            info = m.camera_info_to_msg(INTR, stamp, "cam")
            info.k = np.where(rng.random(9) < 0.5, np.nan, 0.0)
            p.on_message("camera_info", info)
        elif kind == 6:
            msg = m.compressed_image_to_msg(_rgb(), stamp, "cam")
            msg.data = rng.integers(0, 255, int(rng.integers(0, 500)), dtype=np.uint8)
            p.on_message("color", msg)
        elif kind == 7:
            msg = m.compressed_depth_to_msg(_depth(), stamp, "cam")
            msg.data = msg.data[: int(rng.integers(0, 40))]
            p.on_message("depth", msg)
        elif kind == 8:  # the node's raw path: garbage bytes that fail to parse are counted too
            cut = raw_color[: int(rng.integers(0, len(raw_color) // 2))]
            try:
                view = decode.parse_image_cdr(cut)
            except decode.MessageConversionError as exc:
                p.record_invalid("color", exc)
                n_raw_bad += 1
            else:
                p.on_message("color", view)
        else:
            msg = m.image_to_msg(np.zeros((4, 4), np.uint16), "16UC1", stamp, "cam")
            msg.height, msg.width = 0, 0
            p.on_message("mask", msg)
    stats = p.stats()
    assert sum(stats["received"].values()) == 3000
    assert set(stats["dropped"]) <= set(DROP_REASONS), stats["dropped"]
    invalid = sum(v for k, v in stats["dropped"].items() if k.startswith("invalid_"))
    assert invalid == 3000 and n_raw_bad > 0, stats["dropped"]
    assert stats["frames_out"] == 0
    # The same pipeline still makes a good frame.
    T = make_transform(rot_z(0.2), [1.0, 0.0, 0.0])  # noqa: N806
    out = _run(p, [("odom", m.odometry_to_msg(T, STAMP0)), ("camera_info", m.camera_info_to_msg(INTR, STAMP0, "cam")),
                   ("color", good_color), ("depth", good_depth),
                   ("odom", m.odometry_to_msg(T, STAMP0 + 10_000_000))])
    assert len(out) == 1
    np.testing.assert_allclose(out[0].T_world_camera, T @ T_BASE_CAM, atol=1e-9)


def test_poll_releases_a_frame_whose_tf_pose_arrived_later() -> None:
    """TF mode: the transform lands in the tf2 buffer, not in the pipeline; poll() releases the frame."""
    ready = {"ok": False}
    T_tf = make_transform(np.eye(3), [1.0, 2.0, 0.0])  # noqa: N806
    p = FramePipeline(T_BASE_CAM, camera_pose=lambda f, s: (T_tf, "ok") if ready["ok"] else (None, "wait"))
    assert _run(p, _frame_msgs(STAMP0)) == [] and p.poll() == []
    ready["ok"] = True
    out = p.poll()
    assert len(out) == 1 and p.poll() == []
    np.testing.assert_allclose(out[0].T_world_camera, T_tf)
