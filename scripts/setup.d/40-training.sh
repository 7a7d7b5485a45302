# shellcheck shell=bash
# The offline training package (training/, import name scene_vlm_training, command scene-vlm-train),
# installed editable into the venv without touching its pinned dependencies (they come from
# requirements.lock: diffusers, peft, tensorboard, deepspeed, accelerate). Re-runs only when
# training/pyproject.toml changes or the package stops importing. SCENE_VLM_SKIP_TRAINING=1 skips it.
training_stamp="$(sha256sum "$ROOT/training/pyproject.toml" | cut -d' ' -f1)"
if [[ "${SCENE_VLM_SKIP_TRAINING:-0}" == "1" ]]; then
  log "training: skipped (SCENE_VLM_SKIP_TRAINING=1)"
elif [[ "$(cat "$STAMPS/training" 2>/dev/null)" == "$training_stamp" ]] \
    && "$ROOT/.venv/bin/python" -c "import scene_vlm_training" 2>/dev/null; then
  :
else
  log "training: pip install -e training/ (no dependency changes)"
  "$ROOT/.venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$ROOT/training" \
    || { echo "setup: pip install -e training/ failed" >&2; exit 1; }
  echo "$training_stamp" > "$STAMPS/training"
  log "training: scene-vlm-train installed"
fi
