"""Launch the scene_vlm node (ROS 2 users: `ros2 launch scene_vlm_ros scene_vlm.launch.py`).

Arguments: config (parameter file), model_backend, model_path, use_sim_time, and topic remaps
(color_topic, depth_topic, camera_info_topic, odom_topic). Where `ros2 launch` is unavailable
(PyPI installs), `scene-vlm run --config config/scene_vlm.yaml` starts the same node in-process.
The node is a lifecycle node; this file configures and activates it automatically.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

from launch import LaunchDescription

try:  # auto-configure/activate when the lifecycle helpers are present
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch.events import matches_action
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from lifecycle_msgs.msg import Transition
except ImportError:  # pragma: no cover
    EmitEvent = None


def generate_launch_description():
    share = get_package_share_directory("scene_vlm_ros")
    args = [
        DeclareLaunchArgument("config", default_value=os.path.join(share, "config", "scene_vlm.yaml"),
                              description="Parameter file of the scene_vlm node"),
        DeclareLaunchArgument("model_backend", default_value="fallback",
                              description="fallback | transformers | openai | none"),
        DeclareLaunchArgument("model_path", default_value="",
                              description="Local Qwen2-VL checkpoint directory (transformers backend)"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="Use /clock (rosbag replay)"),
        DeclareLaunchArgument("color_topic", default_value="/camera/color/image_raw"),
        DeclareLaunchArgument("depth_topic", default_value="/camera/depth/image_raw"),
        DeclareLaunchArgument("camera_info_topic", default_value="/camera/color/camera_info"),
        DeclareLaunchArgument("odom_topic", default_value="/odom"),
    ]
    node = LifecycleNode(
        package="scene_vlm_ros",
        executable="scene_vlm_node",
        name="scene_vlm",
        namespace="",
        output="screen",
        parameters=[
            LaunchConfiguration("config"),
            {
                "model.backend": LaunchConfiguration("model_backend"),
                "model.path": LaunchConfiguration("model_path"),
                "use_sim_time": LaunchConfiguration("use_sim_time"),
                "topics.color": LaunchConfiguration("color_topic"),
                "topics.depth": LaunchConfiguration("depth_topic"),
                "topics.camera_info": LaunchConfiguration("camera_info_topic"),
                "topics.odom": LaunchConfiguration("odom_topic"),
            },
        ],
    )
    actions = [*args, node]
    if EmitEvent is not None:
        actions.append(RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=node, goal_state="inactive",
            entities=[EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                                  transition_id=Transition.TRANSITION_ACTIVATE))])))
    return LaunchDescription(actions)
