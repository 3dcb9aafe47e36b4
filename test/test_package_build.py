"""`colcon build` of this package in a fresh workspace, as on a robot, and its `pip install`.

Checks what the ament_cmake build installs: the Python package merged with the
generated messages and the compiled modules (_pack_cloud, _tsdf_fuse, _tsdf_extract, _resample, _sparse_depth,
_lens), the `ros2 run` executables from setup.cfg, launch/ and config/ (the build is conftest's colcon_install,
shared with the launch tests); that setup.py builds the same compiled modules (conftest's pip_install); and that
the package names the modules it runs without (compiled.py, which the node's start-up warning reads).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mapanything_ros import compiled

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def install(colcon_install):
    return colcon_install


def _site_packages(install):
    (site,) = install.glob("lib/python3*/site-packages")
    return site


def test_installs_python_package_with_generated_messages(install):
    pkg = _site_packages(install) / "mapanything_ros"
    assert (pkg / "msg" / "_reconstruction_window.py").is_file()
    assert (pkg / "geometry" / "camera.py").is_file()
    assert "extend_path" in (pkg / "__init__.py").read_text()  # ours, not rosidl's empty one
    code = ("import mapanything_ros, mapanything_ros.msg as m, mapanything_ros.geometry as g; "
            "from mapanything_ros import encode, _pack_cloud as k, _tsdf_fuse as f, _resample as r, _sparse_depth as s, _lens as l; "
            "from mapanything_ros import _tsdf_extract as x; "
            "from mapanything_ros.mapping import tsdf, reconstruction; from mapanything_ros.srv import MapFile; "
            "from mapanything_ros.geometry import depth, distortion; "
            "print(m.__file__); print(g.__file__); print(k.__file__); print(f.__file__); print(r.__file__); "
            "print(s.__file__); print(l.__file__); print(x.__file__); print(m.ReconstructionWindow(sequence=1).sequence); "
            "print(encode.COMPILED and tsdf.COMPILED and tsdf._tsdf_extract is x and reconstruction._resample is r "
            "and depth._sparse_depth is s and distortion._lens is l); "
            "print(MapFile.Request(path='x').path)")
    env = dict(os.environ, PYTHONPATH=str(_site_packages(install)),
               LD_LIBRARY_PATH=f"{install / 'lib'}:{os.environ.get('LD_LIBRARY_PATH', '')}")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=install, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    msg_file, geometry_file, kernel_file, fuse_file, resample_file, depth_file, lens_file, extract_file, seq, \
        compiled, path = out.stdout.split()
    for name in (msg_file, geometry_file, kernel_file, fuse_file, resample_file, depth_file, lens_file, extract_file):
        assert name.startswith(str(install)), name
    assert seq == "1" and compiled == "True" and path == "x"  # the compiled modules built and used; the service type
    sources = ("_pack_cloud.c", "_tsdf_fuse.c", "_tsdf_extract.c", "_resample.c", "_sparse_depth.c", "_lens.c", "_buffers.h")
    assert not any((pkg / name).exists() for name in sources)  # sources not installed


def test_installs_executables_launch_and_config(install):
    share = install / "share" / "mapanything_ros"
    assert (share / "package.xml").is_file()
    assert (share / "config" / "fastdds_localhost.xml").is_file()
    assert (share / "launch").is_dir()
    exe = install / "lib" / "mapanything_ros" / "mapanything-ros"
    assert os.access(exe, os.X_OK)
    env = dict(os.environ, PYTHONPATH=str(_site_packages(install)))
    out = subprocess.run([sys.executable, str(exe), "--help"], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "demo" in out.stdout, out.stderr


@pytest.mark.parametrize("launch_file", ["mapping.launch.py", "depth_completion.launch.py", "image_only.launch.py"])
def test_ros2_launch_show_args_from_the_sourced_install(colcon_install, launch_file):
    pytest.importorskip("ros2launch", reason="ros2launch not installed (tools/dev builds it)")
    out = subprocess.run(["bash", "-c", f"source setup.bash && ros2 launch mapanything_ros {launch_file} --show-args"],
                         cwd=colcon_install, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    for argument in ("'config':", "'cameras':", "'backend':", "'namespace':"):
        assert argument in out.stdout, out.stdout


def test_compiled_names_every_compiled_module():
    assert sorted(compiled.MODULES) == sorted(p.stem for p in (REPO / "mapanything_ros").glob("_*.c"))
    assert compiled.missing() == {} and compiled.warning() is None  # tools/dev builds them all


def test_compiled_says_which_modules_are_missing():
    """With two modules unimportable, missing() and the warning name those two and what runs instead."""
    code = ("import importlib.abc, sys\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name in ('mapanything_ros._tsdf_fuse', 'mapanything_ros._lens'): raise ImportError(name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from mapanything_ros import compiled\n"
            "print(sorted(compiled.missing())); print(compiled.warning())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "['_lens', '_tsdf_fuse']"
    assert out[1].startswith("compiled modules not built: _tsdf_fuse, _lens; the map's fusion in numpy; the lens "
                             "models' rays in numpy instead"), out[1]


def test_pip_install_builds_the_compiled_modules(pip_install):
    """setup.py builds every module CMakeLists.txt builds, from the same sources with the same compile
    options; the code imports them from the install and runs them (no fallback)."""
    site, log = pip_install
    cmake = (REPO / "CMakeLists.txt").read_text()
    for name in compiled.MODULES:
        options = re.search(rf"target_compile_options\({name} PRIVATE ([^)]*)\)", cmake).group(1)
        (line,) = [s for s in log.splitlines() if f" -c mapanything_ros/{name}.c " in s]
        assert line.rstrip().endswith(options), line
    code = ("import importlib; from mapanything_ros import compiled, encode; "
            "from mapanything_ros.mapping import tsdf, reconstruction; "
            "from mapanything_ros.geometry import depth, distortion; "
            "print(compiled.missing()); "
            "print(*[importlib.import_module('mapanything_ros.' + m).__file__ for m in sorted(compiled.MODULES)]); "
            "print(encode.COMPILED and tsdf.COMPILED and None not in (tsdf._tsdf_extract, reconstruction._resample, "
            "depth._sparse_depth, distortion._lens)); print(tsdf._tsdf_fuse.SIMD)")
    env = dict(os.environ, PYTHONPATH=str(site))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=site, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    missing, files, used, simd = out.stdout.splitlines()
    assert missing == "{}" and used == "True" and simd in ("avx2", "baseline")
    assert len(files.split()) == len(compiled.MODULES)
    assert all(f.startswith(str(site / "mapanything_ros")) for f in files.split()), files
