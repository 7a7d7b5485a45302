"""scene_vlm_ros.bag"""
