# Source me: the project's environment (.venv + the colcon-built interface package + the vendored ROS 2
# packages in .ros_vendor when set-up built them).
# Usage: source scripts/env.sh   (make targets do it for you)
_svr_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "$_svr_root/.venv/bin/activate"
if [[ -f "$_svr_root/ros2_ws/install/local_setup.bash" ]]; then
  # colcon's scripts reference unset variables; relax nounset while sourcing them.
  _svr_u=$(set +o | grep nounset); set +u
  # shellcheck disable=SC1091
  source "$_svr_root/ros2_ws/install/local_setup.bash"
  eval "$_svr_u"
fi
# The vendored ROS 2 packages (tf2_ros, launch, launch_ros, vision_msgs; scripts/setup.d/10-ros-vendor.sh),
# when ../shared/vendor was there at set-up. Sourced after the project's own environment: its
# local_setup.bash prepends to AMENT_PREFIX_PATH, PYTHONPATH and LD_LIBRARY_PATH (PYTHONPATH alone
# fails with "ImportError: libtf2.so"; AMENT_PREFIX_PATH lets launch_ros find packages).
if [[ "${SCENE_VLM_NO_ROS_VENDOR:-0}" != "1" && -f "$_svr_root/.ros_vendor/install/local_setup.bash" ]]; then
  _svr_u=$(set +o | grep nounset); set +u
  # shellcheck disable=SC1091
  source "$_svr_root/.ros_vendor/install/local_setup.bash"
  eval "$_svr_u"
fi
export SCENE_VLM_ROOT="$_svr_root"
unset _svr_root _svr_u
