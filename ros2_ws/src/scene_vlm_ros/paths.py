"""Where files live: the optional real data (``shared/`` beside a checkout, or $SCENE_VLM_SHARED) and
the package's own config files (source tree or colcon install)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def find_shared(*parts: str) -> Optional[Path]:
    """``<shared>/<parts...>`` from $SCENE_VLM_SHARED, beside the working directory, or beside the
    checkout; None when none of them has it."""
    roots = [os.environ.get("SCENE_VLM_SHARED"), Path.cwd().parent / "shared",
             Path(__file__).resolve().parents[3].parent / "shared"]
    for root in roots:
        if root and (Path(root).joinpath(*parts)).exists():
            return Path(root).joinpath(*parts)
    return None


FASTDDS_PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"


def config_file(name: str) -> Optional[Path]:
    """``config/<name>`` of this package: the source checkout's, else the colcon install's share dir."""
    here = Path(__file__).resolve()
    candidates = [here.parents[3] / "config" / name]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "scene_vlm_ros" / "config" / name)
    return next((c for c in candidates if c.is_file()), None)


def use_fastdds_profile() -> Optional[str]:
    """Point Fast DDS at ``config/fastdds_shm.xml`` (large shared-memory segments for camera-rate
    images) unless the user already chose a profile file; call before rclpy creates a participant.
    Returns the profile in force."""
    if not os.environ.get(FASTDDS_PROFILE_ENV):
        profile = config_file("fastdds_shm.xml")
        if profile is not None:
            os.environ[FASTDDS_PROFILE_ENV] = str(profile)
            if _fast_dds_major() == 2:  # Fast DDS 2.x (ROS 2 Jazzy) reads the older name; 3.x warns on it
                os.environ.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(profile))
    return os.environ.get(FASTDDS_PROFILE_ENV)


def _fast_dds_major() -> Optional[int]:
    """Major version of the Fast DDS wheel in this environment (2 = Jazzy's fastrtps, 3 = Kilted's fastdds)."""
    from importlib import metadata

    for dist in ("ros-fastrtps", "ros-fastdds"):
        try:
            return int(metadata.version(dist).split(".")[0])
        except (metadata.PackageNotFoundError, ValueError):
            continue
    return None
