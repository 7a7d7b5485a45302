"""Default topic names and frame ids of scene_vlm_ros bags and nodes (the one place they are spelled).

The camera topics follow the ``realsense2_camera`` / ``depth_image_proc`` naming so that a bag
recorded from a real RealSense replays without remapping; frame ids follow REP-105
(``odom`` -> ``base_link`` -> ``camera_link`` -> ``camera_color_optical_frame``). Images carry the
*optical* frame id, because that is the frame their pixels are expressed in.
"""

from __future__ import annotations

#: Colour image, ``sensor_msgs/msg/Image``, encoding ``rgb8``.
TOPIC_COLOR = "/camera/color/image_raw"
#: Depth image registered to colour, ``sensor_msgs/msg/Image``, ``16UC1`` millimetres (0 = no reading).
TOPIC_DEPTH = "/camera/depth/image_raw"
#: The same images as ``image_transport`` republishes them compressed (what robots usually record):
#: ``sensor_msgs/msg/CompressedImage``, jpeg/png colour and ``compressedDepth`` png depth.
TOPIC_COLOR_COMPRESSED = TOPIC_COLOR + "/compressed"
TOPIC_DEPTH_COMPRESSED = TOPIC_DEPTH + "/compressedDepth"
#: Pinhole calibration of the colour (and registered depth) image, ``sensor_msgs/msg/CameraInfo``.
TOPIC_CAMERA_INFO = "/camera/color/camera_info"
#: Wheel/visual odometry, ``nav_msgs/msg/Odometry`` (``odom`` -> ``base_link``).
TOPIC_ODOM = "/odom"
#: Dynamic transforms, ``tf2_msgs/msg/TFMessage``.
TOPIC_TF = "/tf"
#: Static transforms (transient-local), ``tf2_msgs/msg/TFMessage``.
TOPIC_TF_STATIC = "/tf_static"
#: Instance mask of a semantic camera, ``sensor_msgs/msg/Image`` ``16UC1`` (pixel = object id, 0 = none).
TOPIC_INSTANCES = "/camera/instances/image_raw"
#: The id -> label table of the instance mask, ``scene_vlm_interfaces/msg/InstanceLabelArray``.
TOPIC_INSTANCE_LABELS = "/camera/instances/labels"

FRAME_MAP = "map"
FRAME_ODOM = "odom"
FRAME_BASE = "base_link"
FRAME_CAMERA_LINK = "camera_link"
FRAME_CAMERA_OPTICAL = "camera_color_optical_frame"

MSGTYPE_IMAGE = "sensor_msgs/msg/Image"
MSGTYPE_COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
MSGTYPE_CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
MSGTYPE_ODOMETRY = "nav_msgs/msg/Odometry"
MSGTYPE_TF = "tf2_msgs/msg/TFMessage"
MSGTYPE_INSTANCE_LABELS = "scene_vlm_interfaces/msg/InstanceLabelArray"
