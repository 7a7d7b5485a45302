"""The benchmark commands run and report what they claim (figures themselves are not asserted)."""

from __future__ import annotations

from scene_vlm_ros.commands.bench_query import bench_query


def test_bench_query_reports_overhead_and_mapping_ratio():
    res = bench_query(repeats=3, n_frames=4, n_scene_frames=24, width=160, height=120)
    q = res["query_overhead"]
    assert q["n"] == 3 and 0 < q["p50_ms"] <= q["p95_ms"]
    assert q["instances"] > 0
    assert res["mapping_fps_alone"] > 0 and res["mapping_fps_with_queries"] > 0
    assert res["queries_during_mapping"] >= 1  # the query thread really ran while mapping
    assert 0 < res["paced_frames_integrated_alone"] <= 1 and 0 < res["paced_frames_integrated_with_queries"] <= 1
    assert abs(res["mapping_rate_kept"] - res["mapping_fps_with_queries"] / res["mapping_fps_alone"]) < 1e-9


def test_bench_soak_samples_every_sensor_minute(kitchen_dir):
    """Structure of the soak report on a tiny run: 2 "minutes" of 30 frames (camera at 0.5 Hz)."""
    from scene_vlm_ros.commands.bench_soak import bench_soak

    res = bench_soak(kitchen_dir, minutes=2.0, camera_hz=0.5, progress=False)
    assert res["frames"] == 60 and res["accepted"] == 60  # the looped replay is never rejected
    assert [s["minute"] for s in res["samples"]] == [1.0, 2.0]
    assert all(s["rss_mb"] > 0 and s["blocks"] > 0 for s in res["samples"])
    assert res["blocks_max_deviation"] >= 0.0


def test_bench_ingest_runs_node_and_player_as_processes(tmp_path):
    """Three processes (node, player at 1.0x, this monitor): every published frame is accounted for as
    integrated, skipped by policy, dropped (by reason) or lost before the node; recall is reported
    beside the offline map's."""
    import pytest

    pytest.importorskip("rclpy")
    from scene_vlm_ros.commands.bench_ingest import bench_ingest
    from scene_vlm_ros.commands.make_bag import make_bag

    bag = tmp_path / "room"
    make_bag(source="synthetic", seed=1, frames=30, out=bag, width=160, height=120, progress=False)
    res = bench_ingest(bag, rate=1.0, overrides={"mapping.max_rate_hz": 15.0}, log_dir=tmp_path / "logs")
    assert res["frames_published"] == 30 and res["published"]["/odom"] == 30
    assert 0 < res["frames_integrated"] <= 16  # at most one of every two 30 Hz frames under 15 Hz
    assert res["frames_skipped_by_policy"] > 0
    accounted = res["frames_integrated"] + res["frames_skipped_by_policy"] + sum(res["frames_dropped"].values())
    assert accounted <= res["frames_received"] <= res["frames_published"]
    assert set(res["recall_live"]) == set(res["recall_offline"]) == {0.25, 0.5}
    assert (tmp_path / "logs" / "node.log").read_text().count("active: listening") == 1
