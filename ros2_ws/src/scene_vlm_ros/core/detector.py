"""2D object detection (Darknet YOLO models through OpenCV DNN) and lifting of detections to 3D.

Two presets of one :class:`DarknetDetector`:

- ``yolov4-tiny``: the COCO YOLOv4-tiny release (24 MB, 416 px input, ~60-120 ms a frame on 2 CPU
  cores). ``scripts/setup.d/20-detector.sh`` puts it into ``.models/yolov4-tiny/``.
- ``yolo-fastest``: Yolo-Fastest 1.1 (1.4 MB, 320 px, ~20-40 ms), the small option.

Darknet loading needs ``cv2.dnn.readNetFromDarknet``, i.e. ``opencv-python-headless<5`` (pinned).
The detector runs on keyframes only (its cost is amortised over the frames in between). Boxes are
pixel ``(x0, y0, x1, y1)`` in the input image; labels are COCO names in the Darknet spelling
(``chair``, ``diningtable``, ``sofa``...; :mod:`referring` maps them to people's words).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from .geometry import transform_points
from .types import CameraIntrinsics

logger = logging.getLogger(__name__)


class DetectorUnavailableError(RuntimeError):
    """The detector's files are missing, corrupt, or OpenCV cannot load them."""


@dataclass(frozen=True)
class Detection:
    """One 2D detection: COCO ``label``, confidence ``score`` (0-1), pixel box ``(x0, y0, x1, y1)``."""

    label: str
    score: float
    box_xyxy: tuple[int, int, int, int]


@dataclass(frozen=True)
class DarknetPreset:
    """File names and defaults of one Darknet model.

    ``weights_bytes``: the release file's exact size (a truncated or foreign file is refused before
    OpenCV reads it: its Darknet reader does not notice a short file). ``rank``: higher is the
    stronger model (what :func:`find_best_detector` prefers).
    """

    name: str
    cfg: str
    weights: str
    names: str
    input_size: int
    weights_bytes: Optional[int]
    rank: int


PRESETS: dict[str, DarknetPreset] = {
    "yolov4-tiny": DarknetPreset("yolov4-tiny", "yolov4-tiny.cfg", "yolov4-tiny.weights", "coco.names", 416,
                                 24_251_276, 2),
    "yolo-fastest": DarknetPreset("yolo-fastest", "yolo-fastest-1.1.cfg", "yolo-fastest-1.1.weights", "coco.names",
                                  320, 1_384_268, 1),
}


def preset_for_dir(model_dir: Path) -> DarknetPreset:
    """The preset whose cfg file ``model_dir`` holds (the strongest when several); raises
    :class:`DetectorUnavailableError` naming the expected files when none."""
    model_dir = Path(model_dir)
    found = [p for p in PRESETS.values() if (model_dir / p.cfg).is_file()]
    if not found:
        expected = ", ".join(f"{p.cfg} ({p.name})" for p in PRESETS.values())
        raise DetectorUnavailableError(
            f"detector cfg not found in {model_dir} (expected one of: {expected}); run `make setup` for YOLOv4-tiny "
            "or point detector_model_dir at ../shared/models/yolo-fastest-1.1"
        )
    return max(found, key=lambda p: p.rank)


def check_detector_files(model_dir: Path, preset: DarknetPreset) -> tuple[Path, Path, Path]:
    """``(cfg, weights, names)`` paths of ``preset`` in ``model_dir``, after checking they exist and
    the weights have the release size; raises :class:`DetectorUnavailableError` otherwise."""
    base = Path(model_dir)
    cfg, weights, names = base / preset.cfg, base / preset.weights, base / preset.names
    for what, p in (("cfg", cfg), ("weights", weights), ("names", names)):
        if not p.is_file():
            raise DetectorUnavailableError(
                f"{preset.name} {what} file not found ({p}); set detector_model_dir to a folder with "
                f"{preset.cfg}, {preset.weights} and {preset.names} (README 'Detector'; `make setup` fetches "
                "YOLOv4-tiny into .models/yolov4-tiny)"
            )
    size = weights.stat().st_size
    if preset.weights_bytes is not None and size != preset.weights_bytes:
        raise DetectorUnavailableError(
            f"{weights} is {size} bytes, the {preset.name} release is {preset.weights_bytes}: the file is truncated "
            "or corrupt; delete it and run `make setup` again"
        )
    return cfg, weights, names


class DarknetDetector:
    """A Darknet YOLO model (cfg + weights + coco.names) run by ``cv2.dnn`` on the CPU.

    ``model_dir`` holds the preset's files (``preset=None``: recognised from the cfg file present).
    ``input_size`` is the square network input in pixels (None: the preset's). Raises
    :class:`DetectorUnavailableError` for missing, truncated or unreadable files.
    """

    def __init__(
        self,
        model_dir: Path,
        preset: Optional[str] = None,
        input_size: Optional[int] = None,
        score_threshold: float = 0.3,
        nms_threshold: float = 0.45,
        labels: Optional[tuple[str, ...]] = None,
    ) -> None:
        model_dir = Path(model_dir)
        if preset is None:
            p = preset_for_dir(model_dir)
        elif preset in PRESETS:
            p = PRESETS[preset]
        else:
            raise DetectorUnavailableError(f"unknown detector preset {preset!r}; known: {sorted(PRESETS)}")
        cfg, weights, names = check_detector_files(model_dir, p)
        if not hasattr(cv2.dnn, "readNetFromDarknet"):
            raise DetectorUnavailableError("this OpenCV has no Darknet importer (needs opencv-python-headless<5)")
        try:
            self._net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
        except cv2.error as exc:
            raise DetectorUnavailableError(f"OpenCV could not load {cfg} / {weights}: {exc}") from exc
        if self._net.empty():
            raise DetectorUnavailableError(f"OpenCV loaded an empty network from {cfg} / {weights}")
        self._net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self._net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        self._out_names = self._net.getUnconnectedOutLayersNames()
        self.class_names = [ln.strip() for ln in names.read_text().splitlines() if ln.strip()]
        if not self.class_names:
            raise DetectorUnavailableError(f"{names} lists no class names")
        self.preset = p
        self.name = p.name
        self.model_dir = model_dir
        self.input_size = int(input_size or p.input_size)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.labels = set(labels) if labels else None

    def detect(self, color_rgb: np.ndarray) -> list[Detection]:
        """Detections in an (H, W, 3) uint8 RGB image, after per-class NMS, best first."""
        h, w = color_rgb.shape[:2]
        blob = cv2.dnn.blobFromImage(
            color_rgb, 1.0 / 255.0, (self.input_size, self.input_size), swapRB=False, crop=False
        )
        self._net.setInput(blob)
        outs = self._net.forward(self._out_names)
        rows = np.concatenate([o.reshape(-1, o.shape[-1]) for o in outs], axis=0)
        # Darknet region rows: cx, cy, w, h (relative), objectness, 80 class probabilities.
        cls_scores = rows[:, 5:]
        cls = np.argmax(cls_scores, axis=1)
        conf = cls_scores[np.arange(len(rows)), cls]
        keep = conf >= self.score_threshold
        rows, cls, conf = rows[keep], cls[keep], conf[keep]
        boxes = []
        for r in rows:
            bw, bh = r[2] * w, r[3] * h
            boxes.append([int(r[0] * w - bw / 2), int(r[1] * h - bh / 2), int(bw), int(bh)])
        dets: list[Detection] = []
        if not boxes:
            return dets
        idx = cv2.dnn.NMSBoxesBatched(boxes, conf.tolist(), cls.tolist(), self.score_threshold, self.nms_threshold)
        for i in np.asarray(idx).reshape(-1):
            label = self.class_names[int(cls[i])] if int(cls[i]) < len(self.class_names) else str(int(cls[i]))
            if self.labels is not None and label not in self.labels:
                continue
            x, y, bw, bh = boxes[i]
            x0, y0 = max(0, x), max(0, y)
            x1, y1 = min(w, x + bw), min(h, y + bh)
            if x1 > x0 and y1 > y0:
                dets.append(Detection(label, float(conf[i]), (x0, y0, x1, y1)))
        dets.sort(key=lambda d: -d.score)
        return dets




class YoloFastestDetector(DarknetDetector):
    """Yolo-Fastest 1.1 (the small preset): ``DarknetDetector(model_dir, preset="yolo-fastest")``."""

    def __init__(self, model_dir: Path, **kwargs: object) -> None:
        super().__init__(model_dir, preset="yolo-fastest", **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class DetectorChoice:
    """A detector found on this machine: preset ``name`` and the folder with its files."""

    name: str
    model_dir: Path


def default_model_dirs() -> list[Path]:
    """Folders :func:`find_best_detector` looks in, strongest first: ``$SCENE_VLM_MODELS/yolov4-tiny``,
    ``.models/yolov4-tiny`` in the working directory and in this checkout, then
    ``<shared>/models/yolo-fastest-1.1`` (``$SCENE_VLM_SHARED`` or ``../shared``)."""
    from ..paths import find_shared

    dirs: list[Path] = []
    if os.environ.get("SCENE_VLM_MODELS"):
        dirs.append(Path(os.environ["SCENE_VLM_MODELS"]) / "yolov4-tiny")
    dirs.append(Path.cwd() / ".models" / "yolov4-tiny")
    # core/detector.py -> scene_vlm_ros -> src -> ros2_ws -> checkout root (source layout).
    dirs.append(Path(__file__).resolve().parents[3] / ".models" / "yolov4-tiny")
    shared = find_shared("models", "yolo-fastest-1.1")
    if shared is not None:
        dirs.append(shared)
    return dirs


def find_best_detector(search_dirs: Optional[list[Path]] = None) -> Optional[DetectorChoice]:
    """The strongest detector whose files are present and intact (YOLOv4-tiny, then Yolo-Fastest),
    or None. ``search_dirs`` defaults to :func:`default_model_dirs`. Only file presence and sizes are
    checked here (cheap); loading errors still surface as :class:`DetectorUnavailableError` when the
    detector is built."""
    best: Optional[tuple[int, DetectorChoice]] = None
    for d in search_dirs if search_dirs is not None else default_model_dirs():
        try:
            p = preset_for_dir(d)
            check_detector_files(d, p)
        except DetectorUnavailableError as exc:
            logger.debug("detector candidate %s skipped: %s", d, exc)
            continue
        if best is None or p.rank > best[0]:
            best = (p.rank, DetectorChoice(p.name, Path(d)))
    return None if best is None else best[1]


def lift_detection(
    det: Detection,
    depth_m: np.ndarray,
    intrinsics: CameraIntrinsics,
    T_world_camera: np.ndarray,  # noqa: N803
    stride: int = 4,
    depth_band_m: float = 0.4,
    shrink: float = 0.15,
) -> np.ndarray:
    """World points (N, 3) float32 of a 2D detection (see :func:`lift_detection_colored`)."""
    return lift_detection_colored(det, depth_m, intrinsics, T_world_camera, None, stride, depth_band_m, shrink)[0]


def lift_detection_colored(
    det: Detection,
    depth_m: np.ndarray,
    intrinsics: CameraIntrinsics,
    T_world_camera: np.ndarray,  # noqa: N803
    color_rgb: Optional[np.ndarray] = None,
    stride: int = 4,
    depth_band_m: float = 0.4,
    shrink: float = 0.15,
) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) float32 and their colours (N, 3) uint8 (grey without ``color_rgb``) of a
    2D detection: depth pixels in the (shrunk) box near the object's depth.

    A box also covers background; the object is taken as the pixels within ``depth_band_m`` (m) of
    the box's central depth (median of the inner region), and the box is shrunk by ``shrink`` of its
    size on each side before sampling, both to keep background and neighbours out. Depth and colour
    are taken as pixel-aligned (registered).
    """
    empty = (np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8))
    x0, y0, x1, y1 = det.box_xyxy
    dx, dy = int((x1 - x0) * shrink), int((y1 - y0) * shrink)
    x0, x1, y0, y1 = x0 + dx, x1 - dx, y0 + dy, y1 - dy
    if x1 <= x0 or y1 <= y0:
        return empty
    patch = np.asarray(depth_m[y0:y1:stride, x0:x1:stride], dtype=np.float32)
    valid = np.isfinite(patch) & (patch > 0)
    if valid.sum() < 5:
        return empty
    ch, cw = patch.shape
    centre = patch[ch // 4 : max(ch // 4 + 1, 3 * ch // 4), cw // 4 : max(cw // 4 + 1, 3 * cw // 4)]
    cvalid = centre[np.isfinite(centre) & (centre > 0)]
    ref = float(np.median(cvalid)) if len(cvalid) else float(np.median(patch[valid]))
    sel = valid & (np.abs(patch - ref) <= depth_band_m)
    vs, us = np.nonzero(sel)
    z = patch[vs, us]
    u = x0 + us * stride
    v = y0 + vs * stride
    pts = np.stack([(u - intrinsics.cx) / intrinsics.fx * z, (v - intrinsics.cy) / intrinsics.fy * z, z], axis=1)
    world = transform_points(np.asarray(T_world_camera, dtype=np.float64), pts.astype(np.float64)).astype(np.float32)
    if color_rgb is None:
        cols = np.full((len(world), 3), 128, np.uint8)
    else:
        cols = np.asarray(color_rgb)[np.clip(v, 0, color_rgb.shape[0] - 1), np.clip(u, 0, color_rgb.shape[1] - 1)]
    return world, np.asarray(cols, dtype=np.uint8)
