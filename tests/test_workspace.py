"""The repository cloned into a user's workspace (ws/src/scene_vlm_ros) builds with colcon, both
packages, and the sourced install lets `ros2 run` / launch_ros find scene_vlm_node in lib/scene_vlm_ros.

The full workspace build (the interface package's code generation) takes about a minute on 2 cores; it
runs in `make test` because it is what a user does first.
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

from tests.wsutil import BASE_PATHS, colcon_build, copy_clone, in_sourced_ws, require_colcon, underlay_env

pytestmark = pytest.mark.ros
VENDOR = "built from ../shared/vendor by scripts/setup.d/10-ros-vendor.sh"


@pytest.fixture(scope="module")
def built_ws(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    require_colcon()
    ws = tmp_path_factory.mktemp("ws")
    copy_clone(ws / "src" / "scene_vlm_ros")
    env = underlay_env()
    out = colcon_build(ws, env)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return ws, env


def _colcon_list(ws: Path, env: dict[str, str], *base_paths: str) -> set[str]:
    args = [require_colcon(), "list", "--names-only"]
    if base_paths:
        args += ["--base-paths", *base_paths]
    out = subprocess.run(args, cwd=ws, env=env, capture_output=True, text=True, timeout=60, check=True)
    return set(out.stdout.split())


def test_documented_base_paths_find_both_packages(tmp_path: Path) -> None:
    require_colcon()
    copy_clone(tmp_path / "src" / "scene_vlm_ros")
    env = underlay_env()
    # Why the argument exists: colcon stops descending at the root package.xml.
    assert _colcon_list(tmp_path, env) == {"scene_vlm_ros"}
    assert _colcon_list(tmp_path, env, *BASE_PATHS) == {"scene_vlm_ros", "scene_vlm_interfaces"}


def test_both_packages_install(built_ws: tuple[Path, dict[str, str]]) -> None:
    ws, _env = built_ws
    install = ws / "install"
    node = install / "scene_vlm_ros" / "lib" / "scene_vlm_ros" / "scene_vlm_node"
    assert node.is_file() and node.stat().st_mode & 0o111, "setup.cfg must put scripts in lib/scene_vlm_ros"
    assert (install / "scene_vlm_ros" / "lib" / "scene_vlm_ros" / "scene-vlm").is_file()
    assert not (install / "scene_vlm_ros" / "bin" / "scene_vlm_node").exists()
    share = install / "scene_vlm_ros" / "share" / "scene_vlm_ros"
    for rel in ("config/scene_vlm.yaml", "config/jetson.yaml", "config/gpu.yaml", "config/scene_vlm.rviz",
                "launch/scene_vlm.launch.py", "package.xml"):
        assert (share / rel).is_file(), rel
    iface = install / "scene_vlm_interfaces"
    assert next(iface.glob("lib/python3*/site-packages/scene_vlm_interfaces/action/_scene_query.py"), None)


def test_sourced_install_resolves_the_node_executable(built_ws: tuple[Path, dict[str, str]]) -> None:
    """launch_ros and `ros2 run` resolve <prefix of package>/lib/<package>/<executable> via the ament index."""
    ws, env = built_ws
    probe = ("python -c \"import os; from ament_index_python.packages import get_package_prefix as p; "
             "print(os.path.join(p('scene_vlm_ros'), 'lib', 'scene_vlm_ros', 'scene_vlm_node')); "
             "import scene_vlm_interfaces.action as a; print(a.__file__)\"")
    out = in_sourced_ws(ws, probe, env)
    assert out.returncode == 0, out.stderr[-3000:]
    exe, iface = out.stdout.split()
    assert Path(exe).is_file() and Path(exe).is_relative_to(ws / "install")
    assert Path(iface).is_relative_to(ws / "install"), "the workspace's own interface package must be used"


@pytest.mark.skipif(importlib.util.find_spec("ros2cli") is None,
                    reason=f"ros2cli is not importable ({VENDOR})")
def test_ros2_run_finds_scene_vlm_node(built_ws: tuple[Path, dict[str, str]]) -> None:
    ws, env = built_ws
    out = in_sourced_ws(ws, "ros2 pkg executables scene_vlm_ros", env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "scene_vlm_ros scene_vlm_node" in out.stdout.splitlines()
    # `ros2 run` executes the installed console script (the CLI's --help: quick, no DDS needed).
    out = in_sourced_ws(ws, "ros2 run scene_vlm_ros scene-vlm --help", env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "run" in out.stdout


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None,
                    reason=f"launch_ros is not importable ({VENDOR})")
def test_launch_ros_finds_scene_vlm_node(built_ws: tuple[Path, dict[str, str]]) -> None:
    ws, env = built_ws
    probe = ("python -c \"from launch import LaunchContext; "
             "from launch_ros.substitutions import ExecutableInPackage as E; "
             "print(E('scene_vlm_node', 'scene_vlm_ros').perform(LaunchContext()))\"")
    out = in_sourced_ws(ws, probe, env)
    assert out.returncode == 0, out.stderr[-3000:]
    exe = Path(out.stdout.strip())
    assert exe == ws / "install" / "scene_vlm_ros" / "lib" / "scene_vlm_ros" / "scene_vlm_node"


# ---- ROS 2 Jazzy beside Kilted (make ... ROS_DISTRO=jazzy) ----------------------------------------------------

JAZZY_VENV = Path(__file__).resolve().parents[1] / ".venv-jazzy"


def _distro_probe(distro: str) -> dict[str, str]:
    """Which rclpy (version, location) and interface package a fresh `scripts/with_env.sh` shell gets."""
    import json
    import os

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "LD_LIBRARY_PATH", "AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH",
                        "_ROS_WHEELS_BOOTSTRAP_COMPLETE", "VIRTUAL_ENV")}
    env["SCENE_VLM_ROS_DISTRO"] = distro
    probe = ("import json, rclpy, importlib.metadata as md; import scene_vlm_interfaces.action as a; "
             "ctx = rclpy.context.Context(); rclpy.init(context=ctx, domain_id=101); n = rclpy.create_node('p', "
             "context=ctx); n.destroy_node(); rclpy.shutdown(context=ctx); "
             "print(json.dumps({'version': md.version('ros-rclpy'), 'rclpy': rclpy.__file__, 'iface': a.__file__}))")
    out = subprocess.run([str(root / "scripts" / "with_env.sh"), "python", "-c", probe], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not (JAZZY_VENV / "bin" / "python").exists(),
                    reason="no .venv-jazzy: build it with `make setup ROS_DISTRO=jazzy`")
def test_ros_distro_jazzy_selects_jazzy_wheels_and_its_own_builds() -> None:
    jazzy = _distro_probe("jazzy")
    kilted = _distro_probe("kilted")
    assert jazzy["version"].startswith("7."), jazzy  # rclpy 7.x is Jazzy's
    assert kilted["version"].startswith("9."), kilted  # 9.x is Kilted's
    assert "/.venv-jazzy/" in jazzy["rclpy"] and "/ros2_ws/install-jazzy/" in jazzy["iface"]
    assert "/.venv/" in kilted["rclpy"] and "/ros2_ws/install/" in kilted["iface"]
