"""pip installation of mapanything_ros, for machines with a pip-installed ROS 2.

On a ROS 2 machine the package is built with colcon (CMakeLists.txt), which also generates the
msg/ and srv/ interfaces. This file installs the Python code and builds the compiled modules
(mapanything_ros/_*.c: point-cloud packing, the map's fusion and searches, native depth, LiDAR
projection, lens rays) from the sources and compile options CMakeLists.txt gives them, so that both
builds make the same modules. Each is optional: without a C compiler the install goes on, and the
numpy code beside each module runs instead (several times slower; the node says so at start:
mapanything_ros/compiled.py).
"""

import os
import re
from pathlib import Path

from setuptools import Extension, find_packages, setup

HERE = Path(__file__).resolve().parent


def extensions():
    """The compiled modules as CMakeLists.txt declares them: (name, source) from Python3_add_library,
    GCC/Clang options from target_compile_options."""
    cmake = (HERE / "CMakeLists.txt").read_text()
    modules = re.findall(r"Python3_add_library\((\w+) MODULE WITH_SOABI \$\{PROJECT_NAME\}/(\w+\.c)\)", cmake)
    out = []
    for name, source in modules:
        options = re.search(rf"target_compile_options\({name} PRIVATE ([^)]*)\)", cmake)  # GCC / Clang ones
        out.append(Extension(f"mapanything_ros.{name}", [f"mapanything_ros/{source}"],
                             extra_compile_args=options.group(1).split() if options and os.name == "posix" else [],
                             libraries=["m"] if os.name == "posix" else [], optional=True))
    return out


setup(
    packages=find_packages(include=("mapanything_ros", "mapanything_ros.*")),
    ext_modules=extensions(),
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
