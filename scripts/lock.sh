#!/usr/bin/env bash
# Re-resolve requirements.in into requirements.lock in a throw-away venv.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tmp=$(mktemp -d)
python3.11 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q -r "$ROOT/requirements.in"
{ echo "# Pinned environment of scene_vlm_ros (pip freeze of a working .venv; regenerate with scripts/lock.sh)."
  echo "# torch/torchvision 2.14.1/0.29.1 are taken from the machine's local wheel store when present."
    # Names come from the dist-info METADATA: the ROS wheels also ship egg-info dirs under their
  # import names, which `pip freeze` reports but PyPI does not know.
  for d in "$tmp"/venv/lib/python3.11/site-packages/*.dist-info; do
    printf '%s==%s\n' "$(grep -m1 '^Name:' "$d/METADATA" | cut -d' ' -f2)" "$(grep -m1 '^Version:' "$d/METADATA" | cut -d' ' -f2)"
  done | tr -d "\r" | sort -f | grep -vE '^(pip|setuptools|wheel|)=='; } > "$ROOT/requirements.lock"
rm -rf "$tmp"
