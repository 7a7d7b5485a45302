"""scene_vlm_ros.ros"""
