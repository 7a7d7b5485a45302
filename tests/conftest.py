"""Shared fixtures: real data from ../shared, DDS isolation for node tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# DDS isolation: every pytest process gets its own domain and talks over loopback only, so that
# parallel runs on one machine (CI beside a developer, two sessions) never see each other's nodes.
# Set before anything imports rclpy.
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
# The Fast DDS profile users get from `scene-vlm run` (large shared-memory segments for images).
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO_ROOT / "config" / "fastdds_shm.xml"))


def shared_root() -> Path:
    return Path(os.environ.get("SCENE_VLM_SHARED", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real RGB-D sequences, annotation slices); skips when absent."""
    path = shared_root() / "data"
    if not path.is_dir():
        pytest.skip(f"real test data not found at {path} (set SCENE_VLM_SHARED or see README 'Data')")
    return path


@pytest.fixture(scope="session")
def kitchen_dir(shared_data: Path) -> Path:
    path = shared_data / "7scenes-redkitchen"
    if not (path / "camera-intrinsics.txt").is_file():
        pytest.skip(f"7-Scenes redkitchen slice not found at {path}")
    return path


@pytest.fixture(scope="session")
def yolo_dir() -> Path:
    """``../shared/models/yolo-fastest-1.1`` (real pretrained detector); skips when absent."""
    path = shared_root() / "models" / "yolo-fastest-1.1"
    if not (path / "yolo-fastest-1.1.weights").is_file():
        pytest.skip(f"Yolo-Fastest weights not found at {path} (see README 'Detector')")
    return path


@pytest.fixture(scope="session")
def formats_dir(shared_data: Path) -> Path:
    """``../shared/data/annotation-formats`` (real benchmark annotation slices); skips when absent."""
    path = shared_data / "annotation-formats"
    if not (path / "scanqa_v1.0_val_first200.json").is_file():
        pytest.skip(f"benchmark annotation slices not found at {path}")
    return path
