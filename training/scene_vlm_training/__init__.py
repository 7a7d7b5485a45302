"""scene_vlm_training: the offline half of scene_vlm_ros.

Builds GPT4Scene-style samples from scans with the robot's own snapshot and prompt code
(``build-data``), fine-tunes a Qwen2-VL-family model with the text loss plus ROSS3D's cross-view and
global-view (BEV) reconstruction losses (``fit``), and writes a checkpoint directory that the node's
transformers backend loads as is (``export``). Imports ``scene_vlm_ros.core``, ``.vlm`` and
``.datasets``, never ``scene_vlm_ros.ros``.
"""

__version__ = "0.1.0"

#: Version of the sample format written by build-data (bumped when a sample's meaning changes).
SAMPLE_FORMAT_VERSION = 1
