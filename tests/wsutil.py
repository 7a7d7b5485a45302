"""Helpers for tests that build the repository as a user's colcon workspace would (ws/src/<clone>)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The one documented extra argument: colcon stops descending at the root package.xml, so the
#: interface package below it is named as a second base path (README, "How a robot uses it").
BASE_PATHS = ["src", "src/scene_vlm_ros/ros2_ws/src"]


def require_colcon() -> str:
    colcon = shutil.which("colcon")
    if colcon is None:
        pytest.skip("colcon is not on PATH (run through scripts/with_env.sh or `make test`)")
    return colcon


def copy_clone(dest: Path) -> Path:
    """Copy what a clone of the repository holds (tracked + untracked-but-not-ignored files) to ``dest``.

    With ``SCENE_VLM_TEST_CLONE_REF=<commit>`` the copy is that commit (``git archive``) instead of
    the work tree, to test what was committed while the work tree is being edited.
    """
    ref = os.environ.get("SCENE_VLM_TEST_CLONE_REF", "").strip()
    if ref:
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", "--format=tar", ref], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
        return dest
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if not src.is_file():  # deleted in the work tree but still in the index
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    return dest


def underlay_env() -> dict[str, str]:
    """This environment without the project's own ros2_ws/install overlay: the venv (and the vendored
    packages) play the role of /opt/ros/<distro>, so the workspace under test builds its own
    scene_vlm_interfaces instead of finding ours."""
    env = dict(os.environ)
    own = str(ROOT / "ros2_ws" / "install")
    for key in ("AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH", "PYTHONPATH", "LD_LIBRARY_PATH", "COLCON_PREFIX_PATH"):
        if key in env:
            kept = [p for p in env[key].split(os.pathsep) if p and not p.startswith(own)]
            env[key] = os.pathsep.join(kept)
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    if sys.prefix not in env["AMENT_PREFIX_PATH"].split(os.pathsep):
        env["AMENT_PREFIX_PATH"] += os.pathsep + sys.prefix
    env.setdefault("CMAKE_PREFIX_PATH", env["AMENT_PREFIX_PATH"])
    env["MAKEFLAGS"] = "-j2"
    return env


def colcon_build(ws: Path, env: dict[str, str], *extra: str, timeout_s: float = 600) -> subprocess.CompletedProcess:
    """``colcon build --base-paths src src/scene_vlm_ros/ros2_ws/src`` in ``ws``; the CMake arguments
    are this machine's (the PyPI wheels' CMake needs the venv's interpreter named), not the user's."""
    cmd = [require_colcon(), "build", "--base-paths", *BASE_PATHS, *extra,
           "--event-handlers", "console_cohesion-", "status-",
           "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"]
    return subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=timeout_s)


def in_sourced_ws(ws: Path, command: str, env: dict[str, str], timeout_s: float = 120) -> subprocess.CompletedProcess:
    """Run ``command`` in bash after ``source ws/install/setup.bash``."""
    script = f"set +u; source {ws / 'install' / 'setup.bash'}; set -u; {command}"
    return subprocess.run(["bash", "-c", script], cwd=ws, env=env, capture_output=True, text=True,
                          timeout=timeout_s)
