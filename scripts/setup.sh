#!/usr/bin/env bash
# Idempotent set-up for scene_vlm_ros on Debian 12 / Python 3.11 (run by `make demo` and `make test`).
#  1. Debian packages the wheels need (libusb for Open3D, cmake/g++ for the interface package).
#  2. .venv with the pinned Python dependencies (requirements.lock) and this package (editable).
#  3. Include paths the ROS 2 wheels' CMake exports hard-code (see docs/ros2-on-pypi notes in README).
#  4. colcon build of the workspace (interface package + this package) into ros2_ws/install.
#  5. feature steps in scripts/setup.d/ (each idempotent with its own stamp).
# Every step is skipped when its inputs did not change (hash stamps in .stamps/).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STAMPS="$ROOT/.stamps"
mkdir -p "$STAMPS"
PYTHON="${PYTHON:-python3.11}"
log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

# ---- 1. Debian packages ---------------------------------------------------------------------
APT_PACKAGES=(libusb-1.0-0 libgomp1 cmake g++ make)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  log "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---- 2. virtual environment -----------------------------------------------------------------
lock_hash=$(cat requirements.lock setup.py | sha256sum | cut -d' ' -f1)
if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi
if [[ "$(cat "$STAMPS/venv" 2>/dev/null)" != "$lock_hash" ]]; then
  log "installing pinned Python dependencies (first run: a few minutes, torch is large)"
  .venv/bin/python -m pip install -q --upgrade pip==24.3.1 setuptools==75.8.0 wheel 2>&1 | grep -v "is ignored: it is neither" || true
  .venv/bin/python -m pip install -q -r requirements.lock 2>&1 | grep -v "is ignored: it is neither" || true
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v "is ignored: it is neither" || true
  .venv/bin/python -c "import rclpy, open3d, cv2, torch, transformers, rosbags" \
    || { echo "setup: the virtual environment is incomplete (see pip output above)" >&2; exit 1; }
  echo "$lock_hash" > "$STAMPS/venv"
fi

# ---- 3. include paths hard-coded by the ROS 2 wheels' CMake exports -------------------------
# The wheels were built in a manylinux container; their exported targets name that container's
# Python and NumPy include directories. Point those names at this interpreter's (needs root).
py_inc=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_inc=$(.venv/bin/python -c 'import numpy; print(numpy.get_include())')
link_if_missing() {  # target linkname
  local target="$1" name="$2"
  if [[ ! -e "$name" ]]; then
    local SUDO=""
    [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO mkdir -p "$(dirname "$name")"
    $SUDO ln -sfn "$target" "$name"
  fi
}
link_if_missing "$py_inc" /opt/python/cp311-cp311/include/python3.11
for np_name in $(cat scripts/wheel_numpy_include_paths.txt 2>/dev/null); do
  link_if_missing "$np_inc" "$np_name"
done

# ---- 4. colcon build ------------------------------------------------------------------------
ws_hash=$( (find ros2_ws/src/scene_vlm_interfaces -type f | sort | xargs cat; echo "$lock_hash") | sha256sum | cut -d' ' -f1)
if [[ "$(cat "$STAMPS/colcon" 2>/dev/null)" != "$ws_hash" || ! -f ros2_ws/install/local_setup.bash ]]; then
  log "colcon build (scene_vlm_interfaces)"
  (
    source .venv/bin/activate
    export AMENT_PREFIX_PATH="$VIRTUAL_ENV" CMAKE_PREFIX_PATH="$VIRTUAL_ENV"
    cd ros2_ws
    colcon --log-base log build --base-paths src/scene_vlm_interfaces \
      --build-base build --install-base install \
      --cmake-args -DPython3_EXECUTABLE="$VIRTUAL_ENV/bin/python" -DBUILD_TESTING=OFF \
      --event-handlers console_cohesion- status- summary+ >/dev/null \
      || { cat log/latest_build/*/stdout_stderr.log >&2; exit 1; }
  )
  echo "$ws_hash" > "$STAMPS/colcon"
fi
# ---- 5. feature steps: scripts/setup.d/NN-name.sh, sourced in order -------------------------
# Each is idempotent and keeps its own stamp in $STAMPS (detector weights, vendored ROS packages,
# Java for the caption scorers, ...). They may use log, link_if_missing, ROOT, STAMPS.
for step in "$ROOT"/scripts/setup.d/*.sh; do
  [[ -e "$step" ]] || continue
  # shellcheck disable=SC1090
  source "$step"
done
log "ready (.venv + ros2_ws/install)"
