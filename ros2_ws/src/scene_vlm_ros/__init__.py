"""scene_vlm_ros: 3D scene memory and language queries with 3D boxes for ROS 2 robots."""

__version__ = "0.1.0"
