"""scene_vlm_ros.commands"""
