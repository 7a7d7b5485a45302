"""`colcon build` of the ament_python package (the interface package is built by setup already)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.ros
def test_colcon_builds_scene_vlm_ros(tmp_path):
    colcon = shutil.which("colcon")
    if colcon is None:
        pytest.skip("colcon is not on PATH (run through `make test`, which sets up the environment)")
    env = dict(os.environ)
    out = subprocess.run(
        [colcon, "--log-base", str(tmp_path / "log"), "build", "--base-paths", str(ROOT),
         "--build-base", str(tmp_path / "build"), "--install-base", str(tmp_path / "install"),
         "--packages-select", "scene_vlm_ros"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    prefix = tmp_path / "install" / "scene_vlm_ros"
    assert (prefix / "bin" / "scene_vlm_node").is_file()
    assert (prefix / "bin" / "scene-vlm").is_file()
    share = prefix / "share" / "scene_vlm_ros"
    assert (share / "package.xml").is_file()
    assert (share / "config" / "scene_vlm.yaml").is_file()
    assert {p.name for p in (share / "launch").iterdir()} >= {"scene_vlm.launch.py", "replay.launch.py"}
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "scene_vlm_ros").is_file()
    site = next((prefix / "lib").glob("python3*/site-packages"))
    assert (site / "scene_vlm_ros" / "core" / "types.py").is_file()
