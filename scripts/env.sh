# Source me: the project's environment (.venv + the colcon-built interface package + the vendored ROS 2
# packages in .ros_vendor when set-up built them).
# Usage: source scripts/env.sh   (make targets do it for you)
# SCENE_VLM_ROS_DISTRO=jazzy selects the Jazzy environment that `make setup ROS_DISTRO=jazzy` builds
# (.venv-jazzy, ros2_ws/install-jazzy, .ros_vendor-jazzy; scripts/setup.d/11-ros-jazzy.sh).
_svr_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ "${SCENE_VLM_ROS_DISTRO:-kilted}" == "jazzy" ]]; then
  if [[ ! -x "$_svr_root/.venv-jazzy/bin/python" ]]; then
    echo "env.sh: SCENE_VLM_ROS_DISTRO=jazzy but .venv-jazzy is missing: run make setup ROS_DISTRO=jazzy" >&2
    return 1 2>/dev/null || exit 1
  fi
  _svr_venv=.venv-jazzy _svr_ws=ros2_ws/install-jazzy _svr_vendor=.ros_vendor-jazzy
  # A Kilted process that started this shell must not leave its library path to a Jazzy interpreter.
  unset _ROS_WHEELS_BOOTSTRAP_COMPLETE LD_LIBRARY_PATH PYTHONPATH AMENT_PREFIX_PATH CMAKE_PREFIX_PATH COLCON_PREFIX_PATH
else
  _svr_venv=.venv _svr_ws=ros2_ws/install _svr_vendor=.ros_vendor
fi
# shellcheck disable=SC1090
source "$_svr_root/$_svr_venv/bin/activate"
# colcon's scripts reference unset variables; relax nounset while sourcing them.
_svr_u=$(set +o | grep nounset); set +u
if [[ -f "$_svr_root/$_svr_ws/local_setup.bash" ]]; then
  # shellcheck disable=SC1090
  source "$_svr_root/$_svr_ws/local_setup.bash"
fi
# The vendored ROS 2 packages (tf2_ros, launch, launch_ros, vision_msgs; scripts/setup.d/10-ros-vendor.sh),
# when ../shared/vendor was there at set-up. Sourced after the project's own environment: its
# local_setup.bash prepends to AMENT_PREFIX_PATH, PYTHONPATH and LD_LIBRARY_PATH (PYTHONPATH alone
# fails with "ImportError: libtf2.so"; AMENT_PREFIX_PATH lets launch_ros find packages).
# SCENE_VLM_NO_ROS_VENDOR=1 leaves them out (to see the fallbacks and the tests' skip reasons).
if [[ "${SCENE_VLM_NO_ROS_VENDOR:-0}" != "1" && -f "$_svr_root/$_svr_vendor/install/local_setup.bash" ]]; then
  # shellcheck disable=SC1090
  source "$_svr_root/$_svr_vendor/install/local_setup.bash"
fi
eval "$_svr_u"
export SCENE_VLM_ROOT="$_svr_root"
unset _svr_root _svr_u _svr_venv _svr_ws _svr_vendor
