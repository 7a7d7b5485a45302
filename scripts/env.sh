# Source me: the project's environment (.venv + the colcon-built interface package).
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
export SCENE_VLM_ROOT="$_svr_root"
unset _svr_root _svr_u
