"""scene_vlm_ros.eval"""
