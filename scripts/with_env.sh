#!/usr/bin/env bash
# Run a command inside the project's environment: scripts/with_env.sh python -m pytest ...
set -euo pipefail
# shellcheck disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec "$@"
