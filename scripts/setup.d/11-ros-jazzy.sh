# shellcheck shell=bash
# ROS 2 Jazzy beside the default Kilted, for `make test ROS_DISTRO=jazzy` (does nothing otherwise).
#
# Jazzy's PyPI wheels carry the same distribution names as Kilted's (ros-rclpy, ros-std-msgs, ...) at
# older versions, so they cannot share one venv. .venv-jazzy holds only the Jazzy ROS wheels
# (requirements-jazzy.lock, --no-deps) and reaches everything else (torch, open3d, colcon, ...) through
# a .pth line naming .venv's site-packages, which comes AFTER its own: `import rclpy` is Jazzy's, the
# native ROS libraries are Jazzy's (the wheels' bootstrapper looks in the venv's own prefix only).
# Then the interface package and the vendored ROS packages are built against Jazzy into
# ros2_ws/install-jazzy and .ros_vendor-jazzy; scripts/env.sh selects all three when
# SCENE_VLM_ROS_DISTRO=jazzy (the Makefile sets it from `make ... ROS_DISTRO=jazzy`).
# About 20 s of wheels + 1 min interface build + 2 min vendored build the first time; stamped.
if [[ "${SCENE_VLM_ROS_DISTRO:-kilted}" == "jazzy" ]]; then
  JAZZY_VENV="$ROOT/.venv-jazzy"
  jazzy_base_site="$("$ROOT/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  jazzy_stamp="$( (cat "$ROOT/requirements-jazzy.lock" "$ROOT/setup.py"; echo "$jazzy_base_site";
                   find "$ROOT/ros2_ws/src/scene_vlm_interfaces" -type f | sort | xargs cat;
                   sha256sum "${ROS_VENDOR_TARBALL:-/dev/null}" 2>/dev/null; echo v1) | sha256sum | cut -d' ' -f1)"
  if [[ "$(cat "$STAMPS/ros-jazzy" 2>/dev/null)" == "$jazzy_stamp" && -f "$ROOT/ros2_ws/install-jazzy/local_setup.bash" ]]; then
    :
  else
    log "ros-jazzy: .venv-jazzy (Jazzy ROS wheels over .venv), interfaces and vendored packages built against Jazzy"
    (
      set -euo pipefail
      cd "$ROOT"
      if [[ ! -x "$JAZZY_VENV/bin/python" ]]; then
        "$(readlink -f "$ROOT/.venv/bin/python")" -m venv --without-pip "$JAZZY_VENV"
      fi
      jazzy_site="$("$JAZZY_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
      echo "$jazzy_base_site" > "$jazzy_site/scene_vlm_base_venv.pth"
      pip_j=("$ROOT/.venv/bin/python" -m pip --python "$JAZZY_VENV/bin/python")
      "${pip_j[@]}" install -q --no-deps --ignore-installed -r requirements-jazzy.lock >"$JAZZY_VENV/pip.log" 2>&1 \
        || { grep -v "is ignored: it is neither" "$JAZZY_VENV/pip.log" >&2; exit 1; }
      "${pip_j[@]}" install -q --no-deps --no-build-isolation -e . >>"$JAZZY_VENV/pip.log" 2>&1 \
        || { grep -v "is ignored: it is neither" "$JAZZY_VENV/pip.log" >&2; exit 1; }
      # colcon runs under Jazzy's interpreter (ament_python packages are built with colcon's Python).
      cat > "$JAZZY_VENV/bin/colcon" <<EOF
#!$JAZZY_VENV/bin/python
import sys
from colcon_core.command import main
sys.exit(main())
EOF
      chmod +x "$JAZZY_VENV/bin/colcon"
      "$JAZZY_VENV/bin/python" -c "import rclpy, std_msgs, torch, open3d; assert rclpy.__file__.startswith('$JAZZY_VENV')" \
        || { echo "setup: .venv-jazzy does not import Jazzy's rclpy" >&2; exit 1; }
      jazzy_build() {  # name base-paths build-base install-base log
        AMENT_PREFIX_PATH="$JAZZY_VENV" CMAKE_PREFIX_PATH="$JAZZY_VENV" MAKEFLAGS=-j2 VIRTUAL_ENV="$JAZZY_VENV" \
        PATH="$JAZZY_VENV/bin:$PATH" PYTHONPATH="" LD_LIBRARY_PATH="" _ROS_WHEELS_BOOTSTRAP_COMPLETE="" \
          "$JAZZY_VENV/bin/colcon" --log-base "$5" build --base-paths "$2" --build-base "$3" --install-base "$4" \
          "${@:6}" --cmake-args -DPython3_EXECUTABLE="$JAZZY_VENV/bin/python" -DBUILD_TESTING=OFF \
          -DCMAKE_BUILD_TYPE=Release --event-handlers console_cohesion- status- summary+ >"$4.log" 2>&1 \
          || { tail -n 60 "$4.log" >&2; exit 1; }
      }
      rm -rf ros2_ws/build-jazzy ros2_ws/install-jazzy
      jazzy_build interfaces ros2_ws/src/scene_vlm_interfaces ros2_ws/build-jazzy ros2_ws/install-jazzy ros2_ws/log-jazzy
      if [[ -f "${ROS_VENDOR_TARBALL:-}" ]]; then
        rm -rf .ros_vendor-jazzy && mkdir -p .ros_vendor-jazzy/src
        tar -xzf "$ROS_VENDOR_TARBALL" -C .ros_vendor-jazzy/src
        jazzy_build vendor .ros_vendor-jazzy/src .ros_vendor-jazzy/build .ros_vendor-jazzy/install \
          .ros_vendor-jazzy/log --merge-install --parallel-workers 1
      fi
    ) || { echo "setup: the Jazzy environment failed (logs: ros2_ws/install-jazzy.log, .ros_vendor-jazzy/install.log)" >&2; exit 1; }
    echo "$jazzy_stamp" > "$STAMPS/ros-jazzy"
    log "ros-jazzy: ready (.venv-jazzy, ros2_ws/install-jazzy$([[ -d .ros_vendor-jazzy/install ]] && echo ', .ros_vendor-jazzy'))"
  fi
fi
