"""The node's parameters: one table with defaults, descriptions and ranges, read into a typed config.

``config/scene_vlm.yaml`` carries the same defaults for users; tests/test_params.py checks that
the YAML and this table agree, so neither can drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

#: name -> (default, description, (min, max) or None, allowed values or None)
PARAMETERS: dict[str, tuple[Any, str, Optional[tuple[float, float]], Optional[tuple[str, ...]]]] = {
    # -- inputs ----------------------------------------------------------------------------------
    "topics.color": ("/camera/color/image_raw", "Colour image topic (rgb8/bgr8/rgba8/mono8); a name ending in "
                                                "/compressed subscribes to sensor_msgs/CompressedImage (jpeg/png).",
                     None, None),
    "topics.depth": ("/camera/depth/image_raw", "Depth image topic (16UC1 millimetres or 32FC1 metres), registered "
                                                "to colour; a name ending in /compressedDepth subscribes to "
                                                "compressed_depth_image_transport's CompressedImage (png).",
                     None, None),
    "topics.camera_info": ("/camera/color/camera_info", "CameraInfo of the (registered) colour/depth pair.",
                           None, None),
    "topics.odom": ("/odom", "nav_msgs/Odometry giving T_odom_base; the map is built in its frame.", None, None),
    "topics.instance_mask": ("/camera/instances/image_raw",
                             "Optional 16UC1 instance-mask image (pixel = instance id, 0 = none).", None, None),
    "topics.instance_labels": ("/camera/instances/labels",
                               "Optional scene_vlm_interfaces/InstanceLabelArray (id -> label table).", None, None),
    "topics.qos_depth": (5, "History depth of the image/mask subscriptions (sensor-data QoS keeps 5: when "
                            "mapping falls behind, the oldest images are overwritten).", (1, 1000), None),
    "topics.reliable": (False, "Reliable instead of best-effort image subscriptions (for bag replays that must "
                               "not lose frames; the publisher must be reliable too).", None, None),
    "use_instance_mask": (True, "Subscribe to the instance-mask topics; when they publish, they take precedence "
                                "over the detector and geometric segmentation.", None, None),
    "camera_extrinsic": ([0.1, 0.0, 1.2, -0.5474, 0.5474, -0.4476, 0.4476],
                         "Static T_base_camera_optical as [x, y, z, qx, qy, qz, qw] (m; optical frame: x right, "
                         "y down, z forward). Used because tf2_ros is not available from PyPI.", None, None),
    "map_frame": ("odom", "Frame of the map, the answers' boxes, the published markers and saved memories (map with "
                          "a localiser publishing map -> odom on TF, else odom).", None, None),
    "pose_source": ("auto", "Camera poses: tf (map_frame <- the images' frame_id at each image stamp, through "
                            "tf2_ros), odometry (topics.odom + camera_extrinsic / tf_static), or auto (tf when tf2_ros "
                            "is importable).", None, ("auto", "tf", "odometry")),
    "autostart": (True, "Configure and activate on start (scene_vlm_node, ros2 launch; scene-vlm run always "
                        "does). false: stay unconfigured until a lifecycle manager (Nav2's lifecycle_manager) "
                        "drives the transitions.", None, None),
    "memory.root_dir": ("~/.ros/scene_vlm/memories", "Directory holding saved scene memories; ~/save_memory and "
                                                     "~/load_memory name a memory inside it (absolute paths, '..' "
                                                     "and symlinks out of it are refused).", None, None),
    # -- time sync -------------------------------------------------------------------------------
    "sync.slop_s": (0.02, "Largest stamp difference (s) between colour, depth and mask of one frame.",
                    (0.0005, 1.0), None),
    "sync.queue_size": (30, "Messages kept per input stream while waiting for a match.", (1, 1000), None),
    "sync.pose_max_wait_s": (0.5, "How long (s) a frame waits for odometry newer than its stamp before it is "
                                  "dropped (reason no_pose).", (0.0, 10.0), None),
    "sync.pose_queue_size": (30, "Synchronised frames waiting for odometry past their stamp (or for the first "
                                 "camera info); the oldest is dropped as pose_queue_overflow.", (1, 1000), None),
    "sync.mapping_queue_size": (30, "Posed frames waiting for integration (30 = one second of a 30 Hz camera, "
                                    "enough to ride out a map refresh); the oldest is dropped (and counted as "
                                    "mapping_queue_overflow) when mapping falls behind.", (1, 1000), None),
    # -- mapping ---------------------------------------------------------------------------------
    "mapping.voxel_size_m": (0.05, "TSDF voxel size (m).", (0.005, 0.5), None),
    "mapping.depth_min_m": (0.2, "Depth readings nearer than this are ignored (m).", (0.0, 5.0), None),
    "mapping.depth_max_m": (5.0, "Depth readings farther than this are ignored (m).", (0.5, 50.0), None),
    "mapping.device": ("CPU:0", "Open3D device for fusion: CPU:0 or CUDA:0.", None, None),
    "mapping.detector_dir": ("auto", "2D detector for instance labels on keyframes (off the mapping thread): auto = "
                                     "the best one present (YOLOv4-tiny fetched by set-up into .models/, else "
                                     "Yolo-Fastest), a directory with a Darknet .cfg/.weights and coco.names, or "
                                     "none. The node logs which one it runs.", None, None),
    "mapping.max_rate_hz": (15.0, "Integration-rate policy: integrate at most this many frames per second of "
                                  "sensor time (frames in between are counted as skipped, not dropped); 0 = every "
                                  "frame. 15 keeps a 2-core CPU host steadily ahead of a 30 Hz camera; every frame "
                                  "also works there most of the time (84-100 % measured), so raise it on a faster "
                                  "host (config/gpu.yaml sets 0).", (0.0, 1000.0), None),
    "mapping.refresh_period_s": (1.0, "How often (s) the mapping thread re-extracts the fused cloud and "
                                      "re-segments the map between frames, so queries read a fresh snapshot at no "
                                      "cost; 0 = never (snapshots stay empty of geometry).", (0.0, 3600.0), None),
    "mapping.clear_radius_m": (0.0, "Drop map blocks farther than this from the robot (m); 0 = keep all.",
                               (0.0, 1000.0), None),
    # -- queries ---------------------------------------------------------------------------------
    "query.queue_size": (8, "Queries waiting for the model; more get BUSY.", (1, 1000), None),
    "query.timeout_s": (30.0, "Default per-query deadline (s) when the request's timeout_s is 0.", (0.01, 3600.0),
                        None),
    "query.prompt_profile": ("auto", "How the model is prompted: default (8 marked frames + BEV, a system turn "
                                     "explaining the markers), gpt4scene (GPT4Scene's released evaluation input: "
                                     "32 marked frames then the BEV, no system prompt, 512 px; the public GPT4Scene "
                                     "checkpoint needs it), or auto (what model.path's scene_vlm_export.json says "
                                     "it was trained with, else default).", None, ("auto", "default", "gpt4scene")),
    "query.n_frames": (0, "Marked keyframes shown to the model with the BEV; 0 = the export's, else the prompt "
                          "profile's (8 default, 32 gpt4scene).", (0, 64), None),
    "query.image_size_px": (0, "Longer side of every image given to the model (px); 0 = the export's, else the "
                               "prompt profile's (512).", (0, 2048), None),
    "query.max_question_chars": (2000, "Longer questions get INVALID_REQUEST.", (1, 100000), None),
    # -- model -----------------------------------------------------------------------------------
    "model.backend": ("fallback", "fallback (no weights: labels + geometry), transformers (local Qwen2-VL "
                                  "checkpoint), openai (OpenAI-compatible server, e.g. vllm serve), or none.",
                      None, ("fallback", "transformers", "openai", "none")),
    "model.path": ("", "transformers: local checkpoint directory (Qwen2-VL / Qwen2.5-VL layout).", None, None),
    "model.device": ("auto", "transformers: auto, cpu, cuda or cuda:N.", None, None),
    "model.dtype": ("auto", "transformers: auto (bf16 on CUDA, fp32 on CPU), bfloat16, float16, float32.",
                    None, ("auto", "bfloat16", "float16", "float32")),
    "model.load_in_4bit": (False, "transformers: 4-bit weights (CUDA + bitsandbytes only).", None, None),
    "model.max_new_tokens": (64, "Longest answer generated (tokens).", (1, 4096), None),
    "model.base_url": ("http://127.0.0.1:8000", "openai: server URL (with or without /v1).", None, None),
    "model.name": ("", "openai: served model name.", None, None),
    "model.api_key_env": ("OPENAI_API_KEY", "openai: environment variable holding the API key (may be unset).",
                          None, None),
    # -- outputs ---------------------------------------------------------------------------------
    "publish.bev_period_s": (2.0, "Period of ~/bev_image (s); 0 = off.", (0.0, 3600.0), None),
    "publish.objects_period_s": (1.0, "Period of ~/objects markers (s); 0 = off.", (0.0, 3600.0), None),
    "publish.cloud_period_s": (5.0, "Period of ~/map_cloud (s, throttled: the cloud is large); 0 = off.",
                               (0.0, 3600.0), None),
    "publish.cloud_max_points": (200000, "~/map_cloud is subsampled to at most this many points.",
                                 (1000, 10_000_000), None),
    "publish.diagnostics_period_s": (1.0, "Period of /diagnostics (s); 0 = off.", (0.0, 3600.0), None),
    "diagnostics.stale_warn_s": (1.0, "A camera, depth or odometry feed silent this long (s) turns the diagnostic "
                                      "WARN.", (0.05, 3600.0), None),
    "diagnostics.stale_error_s": (3.0, "... and this long (s) ERROR; it returns to OK when the feed comes back.",
                                  (0.05, 3600.0), None),
}


@dataclass
class NodeConfig:
    """Validated parameter values keyed by their dotted names (see :data:`PARAMETERS`)."""

    values: dict[str, Any] = field(default_factory=lambda: {k: v[0] for k, v in PARAMETERS.items()})

    def get(self, key: str) -> Any:
        return self.values[key]

    __getitem__ = get


def validate_value(name: str, value: Any) -> Optional[str]:
    """Reason why ``value`` is not acceptable for parameter ``name``, or None."""
    if name not in PARAMETERS:
        return f"unknown parameter {name!r}"
    default, _desc, rng, choices = PARAMETERS[name]
    if isinstance(default, bool) and not isinstance(value, bool):
        return f"{name} must be a bool"
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"{name} must be a number"
        if rng is not None and not (rng[0] <= value <= rng[1]):
            return f"{name}={value} is outside [{rng[0]}, {rng[1]}]"
    if choices is not None and value not in choices:
        return f"{name}={value!r} is not one of {list(choices)}"
    if name == "camera_extrinsic":
        if len(value) != 7:
            return "camera_extrinsic needs 7 numbers [x, y, z, qx, qy, qz, qw]"
        if sum(float(v) ** 2 for v in value[3:]) < 1e-6:
            return "camera_extrinsic quaternion is zero"
    return None
