# shellcheck shell=bash
# ROS 2 packages that have no PyPI wheel (tf2, tf2_msgs, tf2_py, tf2_ros_py, launch, launch_ros,
# ros2launch, ros2run, vision_msgs, ...), built from ../shared/vendor/ros2-jazzy-src.tar.gz into a
# workspace of their own, .ros_vendor/ (recipe: shared/docs/ros2-vendor.md; verified against our Kilted
# wheels without a source patch). scripts/env.sh sources .ros_vendor/install/local_setup.bash after
# the project's own environment.
#
# Without ../shared/vendor this step logs one line and does nothing: the node then runs its
# odometry+extrinsic pose mode, skips vision_msgs outputs, and the tests of those paths skip with a
# reason. A user with a real ROS 2 install has all of these packages already.
# The clean build takes about 3 minutes on 2 cores; an unchanged rerun is a stamp check.
# SCENE_VLM_SKIP_ROS_VENDOR=1 skips the step.
ROS_VENDOR_TARBALL="${SCENE_VLM_ROS_VENDOR_TARBALL:-$ROOT/../shared/vendor/ros2-jazzy-src.tar.gz}"
ROS_VENDOR_WS="$ROOT/.ros_vendor"
# The build needs these four wheels besides the lock's ROS wheels (they have no dependencies):
# launch imports osrf_pycommon; ament_cmake_ros (used by tf2) find_package()s gtest/gmock/pytest even
# with BUILD_TESTING=OFF. They are pinned in requirements.lock; installed here too so that the step
# also works in a .venv made before they were pinned.
ROS_VENDOR_WHEELS=(osrf-pycommon==2.0.2 ros-ament-cmake-gmock==2.7.3 ros-ament-cmake-gtest==2.7.3
                   ros-ament-cmake-pytest==2.7.3)

ros_vendor_install_wheels() {
  local missing=() w
  for w in "${ROS_VENDOR_WHEELS[@]}"; do
    "$ROOT/.venv/bin/python" -m pip show -q "${w%%==*}" >/dev/null 2>&1 || missing+=("$w")
  done
  if ((${#missing[@]})); then
    log "ros-vendor: installing ${missing[*]} (--no-deps)"
    "$ROOT/.venv/bin/python" -m pip install -q --no-deps "${missing[@]}" 2>&1 | grep -v "is ignored: it is neither" || true
  fi
}

ros_vendor_build() {
  local stamp="$1"
  (
    set -euo pipefail
    # shellcheck disable=SC1091
    source "$ROOT/.venv/bin/activate"
    export AMENT_PREFIX_PATH="$VIRTUAL_ENV" CMAKE_PREFIX_PATH="$VIRTUAL_ENV" MAKEFLAGS="-j2"
    rm -rf "$ROS_VENDOR_WS"
    mkdir -p "$ROS_VENDOR_WS/src"
    tar -xzf "$ROS_VENDOR_TARBALL" -C "$ROS_VENDOR_WS/src"
    cd "$ROS_VENDOR_WS"
    colcon --log-base log build --base-paths src --build-base build --install-base install --merge-install \
      --parallel-workers 1 \
      --cmake-args -DPython3_EXECUTABLE="$VIRTUAL_ENV/bin/python" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release \
      --event-handlers console_cohesion- status- summary+ >"$ROS_VENDOR_WS/build.log" 2>&1 \
      || { tail -n 60 "$ROS_VENDOR_WS/build.log" >&2; cat log/latest_build/*/stdout_stderr.log 2>/dev/null | tail -n 80 >&2; exit 1; }
    echo "$stamp" > "$STAMPS/ros-vendor"
  )
}

if [[ "${SCENE_VLM_SKIP_ROS_VENDOR:-0}" == "1" ]]; then
  log "ros-vendor: skipped (SCENE_VLM_SKIP_ROS_VENDOR=1)"
elif [[ ! -f "$ROS_VENDOR_TARBALL" ]]; then
  log "ros-vendor: $ROS_VENDOR_TARBALL not found: tf2_ros, launch, launch_ros and vision_msgs are not built;" \
      "pose input falls back to odometry + camera_extrinsic and the tests that need them skip"
else
  ros_vendor_stamp="$( (sha256sum "$ROS_VENDOR_TARBALL" | cut -d' ' -f1; grep -E '^(ros-|colcon|catkin|lark)' "$ROOT/requirements.lock" | sort;
                        printf '%s\n' "${ROS_VENDOR_WHEELS[@]}"; echo v1) | sha256sum | cut -d' ' -f1)"
  if [[ "$(cat "$STAMPS/ros-vendor" 2>/dev/null)" == "$ros_vendor_stamp" && -f "$ROS_VENDOR_WS/install/local_setup.bash" ]]; then
    :
  else
    ros_vendor_install_wheels
    log "ros-vendor: building tf2_ros, launch, launch_ros, vision_msgs from $(basename "$ROS_VENDOR_TARBALL") into .ros_vendor (about 3 min)"
    ros_vendor_build "$ros_vendor_stamp" || { echo "setup: the vendored ROS 2 build failed (log: $ROS_VENDOR_WS/build.log)" >&2; exit 1; }
    log "ros-vendor: built into .ros_vendor/install"
  fi
fi
