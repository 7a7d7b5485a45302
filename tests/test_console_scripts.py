"""The executables users start: `scene_vlm_node` and `scene-vlm run`, each in its own process,
called over DDS from this test process, then stopped with Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")
SceneQuery = pytest.importorskip("scene_vlm_interfaces.srv").SceneQuery

from .rosutil import ask_scene_query, fresh_domain, stop_process  # noqa: E402

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", [
    ["scene_vlm_node"],
    ["scene-vlm", "run", "--config", str(ROOT / "config" / "scene_vlm.yaml"), "--set", "query.timeout_s=5.0"],
])
def test_executable_serves_scene_query_and_stops_on_sigint(command):
    exe = shutil.which(command[0])
    if exe is None:
        pytest.skip(f"{command[0]} is not on PATH (run through `make test`)")
    domain = fresh_domain()
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain)}
    proc = subprocess.Popen([exe, *command[1:]], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        resp = ask_scene_query(domain, SceneQuery.Request(question="where is the chair?"), proc)
        assert resp.error_code == SceneQuery.Response.NO_MAP_YET, resp.error_msg
        assert "no frame has been integrated" in resp.error_msg
    finally:
        rc = stop_process(proc)
    assert rc in (0, -signal.SIGINT), proc.stderr.read()[-3000:]
