"""`colcon build` of the ament_python package (the interface package comes from this environment's
ros2_ws/install; tests/test_workspace.py builds both in a user's workspace)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from tests.wsutil import colcon_build, copy_clone, in_sourced_ws

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("colcon_ws")
    copy_clone(root / "src" / "scene_vlm_ros")
    out = colcon_build(root, dict(os.environ), "--packages-select", "scene_vlm_ros")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return root


def test_colcon_installs_executables_in_lib_and_data_in_share(ws: Path) -> None:
    prefix = ws / "install" / "scene_vlm_ros"
    for exe in ("scene_vlm_node", "scene-vlm"):
        path = prefix / "lib" / "scene_vlm_ros" / exe
        assert path.is_file() and os.access(path, os.X_OK), f"{exe} must be in lib/scene_vlm_ros (setup.cfg)"
    share = prefix / "share" / "scene_vlm_ros"
    assert (share / "package.xml").is_file()
    assert {p.name for p in (share / "config").iterdir()} >= {"scene_vlm.yaml", "jetson.yaml", "gpu.yaml",
                                                               "scene_vlm.rviz"}
    assert {p.name for p in (share / "launch").iterdir()} >= {"scene_vlm.launch.py", "replay.launch.py"}
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "scene_vlm_ros").is_file()
    site = next((prefix / "lib").glob("python3*/site-packages"))
    assert (site / "scene_vlm_ros" / "core" / "types.py").is_file()


@pytest.mark.skipif(importlib.util.find_spec("ros2cli") is None,
                    reason="ros2cli is not importable (built from ../shared/vendor by setup.d/10-ros-vendor.sh)")
def test_ros2_pkg_lists_the_node(ws: Path) -> None:
    out = in_sourced_ws(ws, "ros2 pkg executables scene_vlm_ros", dict(os.environ))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "scene_vlm_ros scene_vlm_node" in out.stdout.splitlines()
