"""Replay a rosbag2 file (written by `scene-vlm make-bag`) into a running scene_vlm node.

`ros2 launch scene_vlm_ros replay.launch.py bag:=/path/to/scene.mcap rate:=1.0` starts the node
(scene_vlm.launch.py) and `ros2 bag play`. Without ROS launch tooling, `scene-vlm run --bag FILE`
does the same in one process with the project's own replayer.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

from launch import LaunchDescription


def generate_launch_description():
    share = get_package_share_directory("scene_vlm_ros")
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 directory or .mcap file to replay"),
        DeclareLaunchArgument("rate", default_value="1.0", description="Playback rate"),
        DeclareLaunchArgument("config", default_value=os.path.join(share, "config", "scene_vlm.yaml")),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(share, "launch", "scene_vlm.launch.py")),
            launch_arguments={"config": LaunchConfiguration("config"), "use_sim_time": "true"}.items(),
        ),
        ExecuteProcess(
            cmd=["ros2", "bag", "play", LaunchConfiguration("bag"), "--rate", LaunchConfiguration("rate"),
                 "--clock"],
            output="screen",
        ),
    ])
