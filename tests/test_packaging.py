"""Static checks of the package layout: launch files, parameter file, console scripts, ROS-free core."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import yaml

from scene_vlm_ros.ros.bringup import flatten, load_params_file
from scene_vlm_ros.ros.params import PARAMETERS, validate_value

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "ros2_ws" / "src" / "scene_vlm_ros"


def _console_scripts() -> set[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and " = " in node.value:
            names.add(node.value.split(" = ")[0].strip())
    return names


def test_core_imports_no_rclpy():
    """scene_vlm_ros.core (and the modules training uses) must import without rclpy."""
    code = (
        "import sys, importlib, pkgutil\n"
        "sys.modules['rclpy'] = None\n"  # any 'import rclpy' now raises ImportError
        "import scene_vlm_ros.core as core\n"
        "mods = [m.name for m in pkgutil.walk_packages(core.__path__, 'scene_vlm_ros.core.')]\n"
        "for m in mods + ['scene_vlm_ros.vlm.types', 'scene_vlm_ros.vlm.engine']:\n"
        "    importlib.import_module(m)\n"
        "print(len(mods))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.strip()) >= 5
    import re

    for path in (PKG / "core").rglob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+rclpy", path.read_text(), re.M), f"{path} imports rclpy"


def test_launch_files_parse_and_name_real_things():
    scripts = _console_scripts()
    assert "scene_vlm_node" in scripts and "scene-vlm" in scripts
    for launch in (ROOT / "launch").glob("*.launch.py"):
        tree = ast.parse(launch.read_text(), filename=str(launch))
        funcs = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
        assert "generate_launch_description" in funcs, launch
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "executable":
                assert isinstance(node.value, ast.Constant) and node.value.value in {*scripts, "rviz2"}, launch
            if isinstance(node, ast.keyword) and node.arg == "package":
                assert node.value.value in ("scene_vlm_ros", "rviz2")  # rviz2 only with rviz:=true
        # every file the launch file joins under share/ exists in the repo
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "join":
                parts = [a.value for a in node.args if isinstance(a, ast.Constant)]
                if len(parts) == 2 and parts[0] in ("config", "launch"):
                    assert (ROOT / parts[0] / parts[1]).is_file(), f"{launch.name} names missing {parts}"
    text = (ROOT / "launch" / "scene_vlm.launch.py").read_text()
    for p in ("model.backend", "model.path", "use_sim_time", "topics.color", "topics.depth", "topics.odom"):
        assert f'"{p}"' in text


def test_yaml_defaults_equal_parameter_table():
    values = load_params_file(ROOT / "config" / "scene_vlm.yaml")
    assert set(values) == set(PARAMETERS)
    for name, value in values.items():
        assert value == PARAMETERS[name][0], name
        assert validate_value(name, value) is None


def test_unknown_yaml_parameter_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"scene_vlm": {"ros__parameters": {"query": {"timeuot_s": 3}}}}))
    try:
        load_params_file(bad)
    except ValueError as exc:
        assert "query.timeuot_s" in str(exc)
    else:
        raise AssertionError("typo accepted")


def test_validate_value_ranges():
    assert validate_value("query.queue_size", 0) is not None
    assert validate_value("model.backend", "gpt5") is not None
    assert validate_value("camera_extrinsic", [0, 0, 0, 0, 0, 0, 0]) is not None
    assert validate_value("query.timeout_s", 5.0) is None
    assert flatten({"a": {"b": 1}, "c": 2}) == {"a.b": 1, "c": 2}


def test_package_xml_and_setup_agree():
    import xml.etree.ElementTree as ET

    pkg = ET.parse(ROOT / "package.xml").getroot()
    assert pkg.findtext("name") == "scene_vlm_ros"
    assert pkg.find("export/build_type").text == "ament_python"
    deps = {d.text for d in pkg.findall("depend")}
    assert {"rclpy", "scene_vlm_interfaces", "sensor_msgs", "nav_msgs"} <= deps
    iface = ET.parse(ROOT / "ros2_ws/src/scene_vlm_interfaces/package.xml").getroot()
    assert iface.find("export/build_type").text == "ament_cmake"


def test_every_shipped_preset_names_real_parameters_with_valid_values() -> None:
    """config/*.yaml presets (realsense, jetson, gpu, ...) only set declared parameters, to valid values."""
    from scene_vlm_ros.ros.bringup import load_params_file

    presets = sorted((ROOT / "config").glob("*.yaml"))
    assert {p.name for p in presets} >= {"scene_vlm.yaml", "realsense.yaml"}
    for preset in presets:
        values = load_params_file(preset)
        assert values, preset.name
        for name, value in values.items():
            assert name in PARAMETERS, f"{preset.name}: unknown parameter {name}"
            assert validate_value(name, value) is None, f"{preset.name}: {validate_value(name, value)}"
