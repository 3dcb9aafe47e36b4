"""pip installation of mapanything_ros, for machines with a pip-installed ROS 2.

On a ROS 2 machine the package is built with colcon (CMakeLists.txt), which
also generates the msg/ interfaces and builds the PointCloud2 kernel
(mapanything_ros/_pack_cloud.c); this file only installs the Python code, which
packs point clouds through its OpenCV path where that kernel is not built.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=("mapanything_ros", "mapanything_ros.*")),
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.24",
        "torch>=2.3",
        "safetensors>=0.4",
        "opencv-python-headless>=4.8",
        "huggingface_hub>=0.23",
        "rosbags>=0.10",
    ],
    extras_require={"test": ["pytest>=7", "hypothesis>=6"]},
)
