"""launch/scene_vlm.launch.py: YAML first, then only the launch arguments that are set.

The end-to-end test runs the launch file through ``launch.LaunchService`` (the node is the console
script colcon installed in lib/scene_vlm_ros) and asks the running node for its parameters over DDS.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from scene_vlm_ros.ros.params import PARAMETERS, validate_value

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / "launch" / "scene_vlm.launch.py"

needs_launch = pytest.mark.skipif(
    importlib.util.find_spec("launch") is None or importlib.util.find_spec("launch_ros") is None,
    reason="launch/launch_ros are not importable (built from ../shared/vendor by scripts/setup.d/10-ros-vendor.sh)")


@pytest.fixture(autouse=True, scope="module")
def _undo_launch_logging():
    """Importing `launch` makes every logger created afterwards a LaunchLogger with propagate=False
    (launch.logging.reset()); undo that for the tests that run after this module in the same process."""
    yield
    logging.setLoggerClass(logging.Logger)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if type(logger).__name__ == "LaunchLogger" and not name.startswith("launch"):
            logger.propagate = True


def load_params_file(path: Path) -> dict[str, object]:
    """Dotted parameter values of the scene_vlm node in a ROS 2 parameter file; unknown names fail."""

    def flatten(d: dict[str, object], prefix: str = "") -> dict[str, object]:
        out: dict[str, object] = {}
        for key, value in d.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            out.update(flatten(value, name) if isinstance(value, dict) else {name: value})
        return out

    values = flatten(yaml.safe_load(path.read_text())["scene_vlm"]["ros__parameters"])
    unknown = sorted(set(values) - set(PARAMETERS))
    assert not unknown, f"{path}: unknown parameters {unknown}"
    return values


def _launch_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("scene_vlm_launch", LAUNCH_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("preset", ["jetson", "gpu"])
def test_presets_name_only_known_parameters_with_valid_values(preset: str) -> None:
    path = ROOT / "config" / f"{preset}.yaml"
    values = load_params_file(path)  # raises on unknown names
    assert values, f"{path} sets nothing"
    for name, value in values.items():
        assert validate_value(name, value) is None, (name, value, validate_value(name, value))
    assert values["mapping.device"] == "CUDA:0"
    assert values["model.backend"] in ("transformers", "openai")


def test_jetson_preset_is_lighter_than_defaults() -> None:
    from scene_vlm_ros.vlm.prompts import get_profile

    base = load_params_file(ROOT / "config" / "scene_vlm.yaml")
    jetson = load_params_file(ROOT / "config" / "jetson.yaml")
    # 0 in the YAML means the profile's own value ("auto": the export's, else the default profile)
    profile = get_profile(None if base["query.prompt_profile"] == "auto" else base["query.prompt_profile"])
    assert 0 < jetson["query.n_frames"] < (base["query.n_frames"] or profile.n_frames)
    assert 0 < jetson["query.image_size_px"] < (base["query.image_size_px"] or profile.image_size_px)
    assert jetson["model.load_in_4bit"] is True or jetson["model.backend"] == "openai"


def test_rviz_config_shows_bev_markers_cloud_and_query_result() -> None:
    rviz = yaml.safe_load((ROOT / "config" / "scene_vlm.rviz").read_text())
    displays = {d["Class"]: d for d in rviz["Visualization Manager"]["Displays"]}
    topics = {d["Topic"]["Value"]: d["Class"] for d in rviz["Visualization Manager"]["Displays"] if "Topic" in d}
    assert topics == {"/scene_vlm/bev_image": "rviz_default_plugins/Image",
                      "/scene_vlm/objects": "rviz_default_plugins/MarkerArray",
                      "/scene_vlm/map_cloud": "rviz_default_plugins/PointCloud2",
                      "/scene_vlm/query_result": "rviz_default_plugins/MarkerArray"}
    assert "rviz_default_plugins/TF" in displays
    assert rviz["Visualization Manager"]["Global Options"]["Fixed Frame"] == "map"


@needs_launch
def test_parameter_list_yaml_first_then_set_arguments_only(tmp_path: Path) -> None:
    mod = _launch_module()
    unset = {name: "" for name in mod.OVERRIDES}
    assert mod.parameter_list("/c.yaml", "", "/share", {**unset, "autostart": ""}) == ["/c.yaml"]
    share = str(ROOT)  # the repository has the installed share directory's config/ layout
    params = mod.parameter_list("/c.yaml", "realsense, jetson", share,
                                {**unset, "model_dtype": "float16", "model_load_in_4bit": "True", "autostart": "false"})
    assert params == ["/c.yaml", f"{share}/config/realsense.yaml", f"{share}/config/jetson.yaml",
                      {"model.dtype": "float16", "model.load_in_4bit": True, "autostart": False}]
    with pytest.raises(ValueError, match="true or false"):
        mod.parameter_list("/c.yaml", "", share, {"use_sim_time": "yes"})
    with pytest.raises(ValueError, match="'orin' is not a preset"):
        mod.parameter_list("/c.yaml", "orin", share, {})
    with pytest.raises(ValueError, match="not a preset"):
        mod.parameter_list("/c.yaml", "scene_vlm", share, {})


# ---- end to end: LaunchService + a running node ----------------------------------------------------------

@pytest.fixture(scope="module")
def installed_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scene_vlm_ros built by colcon (the interface package comes from this environment)."""
    from tests.wsutil import colcon_build, copy_clone

    ws = tmp_path_factory.mktemp("launch_ws")
    copy_clone(ws / "src" / "scene_vlm_ros")
    out = colcon_build(ws, dict(os.environ), "--packages-select", "scene_vlm_ros")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return ws / "install" / "scene_vlm_ros"


@needs_launch
@pytest.mark.ros
def test_every_override_argument_defaults_to_empty(installed_package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from launch.actions import DeclareLaunchArgument

    from launch import LaunchContext

    monkeypatch.setenv("AMENT_PREFIX_PATH", f"{installed_package}{os.pathsep}{os.environ.get('AMENT_PREFIX_PATH', '')}")
    mod = _launch_module()
    description = mod.generate_launch_description()
    declared = {a.name: a for a in description.entities if isinstance(a, DeclareLaunchArgument)}
    assert set(mod.OVERRIDES) <= set(declared)
    ctx = LaunchContext()
    for name in mod.OVERRIDES:
        default = declared[name].default_value
        assert default is not None and "".join(s.perform(ctx) for s in default) == "", name
    config_default = "".join(s.perform(ctx) for s in declared["config"].default_value)
    assert Path(config_default) == installed_package / "share" / "scene_vlm_ros" / "config" / "scene_vlm.yaml"


def _get_parameters(names: list[str], timeout_s: float = 60.0) -> dict[str, object]:
    import rclpy
    from rcl_interfaces.srv import GetParameters
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import parameter_value_to_python

    context = rclpy.context.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("launch_test_client", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        client = node.create_client(GetParameters, "/scene_vlm/get_parameters")
        deadline = time.monotonic() + timeout_s
        while not client.service_is_ready():
            assert time.monotonic() < deadline, "the launched node never offered /scene_vlm/get_parameters"
            executor.spin_once(timeout_sec=0.1)
        future = client.call_async(GetParameters.Request(names=names))
        while not future.done():
            assert time.monotonic() < deadline, "no answer from /scene_vlm/get_parameters"
            executor.spin_once(timeout_sec=0.1)
        values = [parameter_value_to_python(v) for v in future.result().values]
        executor.shutdown()
        node.destroy_node()
        return dict(zip(names, values))
    finally:
        rclpy.shutdown(context=context)


@needs_launch
@pytest.mark.ros
def test_launch_service_runs_node_with_yaml_plus_one_override(
        installed_package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    from launch import LaunchDescription, LaunchService

    monkeypatch.setenv("AMENT_PREFIX_PATH", f"{installed_package}{os.pathsep}{os.environ.get('AMENT_PREFIX_PATH', '')}")
    site = next(installed_package.glob("lib/python3*/site-packages"))
    monkeypatch.setenv("PYTHONPATH", f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    # A parameter file whose values all differ from the node's declared defaults.
    yaml_values = {"topics": {"color": "/yaml/color", "odom": "/yaml/odom"},
                   "query": {"timeout_s": 12.5, "n_frames": 3},
                   "model": {"backend": "none", "dtype": "bfloat16"},
                   "publish": {"bev_period_s": 0.0, "cloud_period_s": 0.0}}
    config = tmp_path / "params.yaml"
    config.write_text(yaml.safe_dump({"scene_vlm": {"ros__parameters": yaml_values}}))

    service = LaunchService(argv=[], noninteractive=True)
    service.include_launch_description(LaunchDescription([IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
        launch_arguments={"config": str(config), "model_dtype": "float16"}.items())]))
    got: dict[str, object] = {}
    errors: list[BaseException] = []

    def query_then_shut_down() -> None:
        try:
            got.update(_get_parameters(["topics.color", "topics.odom", "query.timeout_s", "query.n_frames",
                                        "model.backend", "model.dtype", "topics.depth"]))
        except BaseException as exc:  # reported below, after the launch service stopped
            errors.append(exc)
        finally:
            service.shutdown()

    # LaunchService.run must own the main thread (signal handlers); the DDS client runs beside it.
    client = threading.Thread(target=query_then_shut_down, daemon=True)
    client.start()
    exit_code = service.run(shutdown_when_idle=False)
    client.join(timeout=30)
    if errors:
        raise errors[0]
    assert exit_code == 0
    assert got["topics.color"] == "/yaml/color"      # YAML, not a launch-argument default
    assert got["topics.odom"] == "/yaml/odom"
    assert got["query.timeout_s"] == 12.5
    assert got["query.n_frames"] == 3
    assert got["model.backend"] == "none"
    assert got["model.dtype"] == "float16"           # the one override wins over the YAML's bfloat16
    assert got["topics.depth"] == "/camera/depth/image_raw"  # neither: the declared default
