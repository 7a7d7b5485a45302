"""scene_vlm_ros: the ROS 2 package (ament_python) and the pip-installable Python library.

The sources live in ros2_ws/src/scene_vlm_ros (import name ``scene_vlm_ros``); the interface
package ros2_ws/src/scene_vlm_interfaces is built by colcon (ament_cmake).
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "scene_vlm_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="3D scene memory + vision-language /scene_query for ROS 2 robots",
    license="Apache-2.0",
    python_requires=">=3.10",
    package_dir={"": "ros2_ws/src"},
    packages=find_packages("ros2_ws/src", include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["assets/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml")),
    ],
    install_requires=["numpy", "typer", "rich", "pyyaml"],
    extras_require={
        "mapping": ["open3d==0.20.0", "opencv-python-headless<5", "scipy"],
        "bags": ["rosbags", "mcap"],
        "vlm": ["torch", "torchvision", "transformers>=5,<6", "pillow"],
    },
    zip_safe=True,
    entry_points={
        "console_scripts": [
            "scene_vlm_node = scene_vlm_ros.ros.scene_vlm_node:main",
            "scene-vlm = scene_vlm_ros.cli:main",
        ],
    },
)
