"""scene_vlm_ros.datasets"""
