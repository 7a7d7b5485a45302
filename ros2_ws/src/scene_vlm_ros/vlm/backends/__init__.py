"""scene_vlm_ros.vlm/backends"""
