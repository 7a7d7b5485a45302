"""Launch the scene_vlm node: `ros2 launch scene_vlm_ros scene_vlm.launch.py [preset:=jetson|gpu] [ARG:=VALUE]`.

Parameters come from YAML first, then from explicit overrides only:
  1. ``config`` (default: the installed config/scene_vlm.yaml),
  2. ``preset``: empty, or comma-separated presets layered on top in order, each config/<name>.yaml
     (hosts: ``jetson``, ``gpu``; cameras: ``realsense``; e.g. ``preset:=realsense,jetson``),
  3. the launch arguments below that are *set*: every one defaults to empty, which means "keep the
     YAML's value" (a non-empty default would silently win over the parameter file).

``autostart`` (the YAML's default: true) lets the node configure and activate itself; set
``autostart:=false`` when a lifecycle manager (nav2_lifecycle_manager) drives it. Without ROS launch tooling (PyPI
installs), ``scene-vlm run --config config/scene_vlm.yaml`` starts the same node in-process.
``rviz:=true`` also opens rviz2 with config/scene_vlm.rviz (BEV image, object markers, map cloud,
query result, TF).
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

from launch import LaunchContext, LaunchDescription

#: launch argument -> (node parameter, type, description). Empty argument = no override.
OVERRIDES: dict[str, tuple[str, type, str]] = {
    "model_backend": ("model.backend", str, "fallback | transformers | openai | none"),
    "model_path": ("model.path", str, "Local Qwen2-VL / Qwen2.5-VL checkpoint directory (transformers)"),
    "model_device": ("model.device", str, "transformers device: auto, cpu, cuda or cuda:N"),
    "model_dtype": ("model.dtype", str, "transformers dtype: auto, bfloat16, float16 or float32"),
    "model_load_in_4bit": ("model.load_in_4bit", bool, "transformers 4-bit weights (CUDA + bitsandbytes): true|false"),
    "mapping_device": ("mapping.device", str, "Open3D fusion device: CPU:0 or CUDA:0"),
    "map_frame": ("map_frame", str, "Frame of the map, boxes and markers (e.g. map)"),
    "use_sim_time": ("use_sim_time", bool, "Use /clock (rosbag replay): true|false"),
    "color_topic": ("topics.color", str, "Colour image topic"),
    "depth_topic": ("topics.depth", str, "Depth image topic"),
    "camera_info_topic": ("topics.camera_info", str, "CameraInfo topic"),
    "odom_topic": ("topics.odom", str, "nav_msgs/Odometry topic"),
}
#: presets shipped in config/ (any other config/<name>.yaml in the share directory works too)
PRESETS = ("jetson", "gpu", "realsense")


def _typed(value: str, kind: type, argument: str) -> object:
    if kind is bool:
        lowered = value.strip().lower()
        if lowered not in ("true", "false"):
            raise ValueError(f"launch argument {argument}:={value!r} must be true or false")
        return lowered == "true"
    return value


def parameter_list(config: str, preset: str, share: str, arguments: dict[str, str]) -> list[object]:
    """The node's ``parameters``: YAML file(s) first, then a dict of the non-empty overrides only.

    Args:
        config: path of the base parameter file.
        preset: "" or comma-separated preset names (config/<name>.yaml in ``share``), applied in order.
        share: the package's share directory (where config/<preset>.yaml is installed).
        arguments: launch argument name -> its value as text ("" = not set).
    """
    files: list[object] = [config]
    for name in filter(None, (p.strip() for p in preset.split(","))):
        path = os.path.join(share, "config", f"{name}.yaml")
        if name == "scene_vlm" or not os.path.isfile(path):
            raise ValueError(f"launch argument preset: {name!r} is not a preset in {os.path.join(share, 'config')} "
                             f"(shipped: {', '.join(PRESETS)})")
        files.append(path)
    overrides = {OVERRIDES[name][0]: _typed(value, OVERRIDES[name][1], name)
                 for name, value in arguments.items() if name in OVERRIDES and value.strip() != ""}
    autostart = arguments.get("autostart", "").strip()
    if autostart:
        overrides["autostart"] = _typed(autostart, bool, "autostart")
    return [*files, overrides] if overrides else files


def _node(context: LaunchContext, share: str) -> list[LifecycleNode]:
    values = {name: LaunchConfiguration(name).perform(context) for name in [*OVERRIDES, "autostart"]}
    params = parameter_list(LaunchConfiguration("config").perform(context),
                            LaunchConfiguration("preset").perform(context).strip(), share, values)
    return [LifecycleNode(
        package="scene_vlm_ros",
        executable="scene_vlm_node",
        # The parameter files' top-level key is this name; rename both together.
        name="scene_vlm",
        namespace="",
        output="screen",
        parameters=params,
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level").perform(context)],
    )]


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("scene_vlm_ros")
    args = [
        DeclareLaunchArgument("config", default_value=os.path.join(share, "config", "scene_vlm.yaml"),
                              description="Parameter file of the scene_vlm node"),
        DeclareLaunchArgument("preset", default_value="",
                              description=f"Empty, or presets layered on the config, comma-separated: "
                                          f"{', '.join(PRESETS)}"),
        DeclareLaunchArgument("autostart", default_value="",
                              description="false under a lifecycle manager (empty: keep the YAML's autostart, true)"),
        DeclareLaunchArgument("log_level", default_value="info", description="debug | info | warn | error"),
        DeclareLaunchArgument("rviz", default_value="false",
                              description="Also start rviz2 with config/scene_vlm.rviz (needs rviz2 installed)"),
        *[DeclareLaunchArgument(name, default_value="", description=f"{desc} (empty: keep the YAML's {param})")
          for name, (param, _kind, desc) in OVERRIDES.items()],
    ]
    rviz = Node(package="rviz2", executable="rviz2", name="scene_vlm_rviz", output="log",
                arguments=["-d", os.path.join(share, "config", "scene_vlm.rviz")],
                condition=IfCondition(LaunchConfiguration("rviz")))
    return LaunchDescription([*args, OpaqueFunction(function=_node, args=[share]), rviz])
