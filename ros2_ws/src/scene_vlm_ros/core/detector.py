"""2D object detection (Yolo-Fastest COCO through OpenCV DNN) and lifting of detections to 3D.

The detector runs on keyframes only (its ~20-40 ms on 2 cores is amortised over the frames in
between). Boxes are pixel ``(x0, y0, x1, y1)`` in the input image; labels are COCO names in the
Darknet spelling (``chair``, ``diningtable``, ``sofa``...).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .geometry import transform_points
from .types import CameraIntrinsics

logger = logging.getLogger(__name__)


class DetectorUnavailableError(RuntimeError):
    """The detector's files are missing or OpenCV cannot load them."""


@dataclass(frozen=True)
class Detection:
    """One 2D detection: COCO ``label``, confidence ``score`` (0-1), pixel box ``(x0, y0, x1, y1)``."""

    label: str
    score: float
    box_xyxy: tuple[int, int, int, int]


class YoloFastestDetector:
    """Yolo-Fastest 1.1 (Darknet cfg + weights + coco.names) run by ``cv2.dnn``.

    ``model_dir`` holds ``yolo-fastest-1.1.cfg``, ``yolo-fastest-1.1.weights`` and ``coco.names``
    (explicit paths may be given instead). ``input_size`` is the square network input in pixels.
    """

    def __init__(
        self,
        model_dir: Path | None = None,
        cfg_path: Path | None = None,
        weights_path: Path | None = None,
        names_path: Path | None = None,
        input_size: int = 320,
        score_threshold: float = 0.3,
        nms_threshold: float = 0.45,
        labels: tuple[str, ...] | None = None,
    ) -> None:
        base = Path(model_dir) if model_dir is not None else None
        cfg = Path(cfg_path) if cfg_path else (base / "yolo-fastest-1.1.cfg" if base else None)
        weights = Path(weights_path) if weights_path else (base / "yolo-fastest-1.1.weights" if base else None)
        names = Path(names_path) if names_path else (base / "coco.names" if base else None)
        for what, p in (("cfg", cfg), ("weights", weights), ("names", names)):
            if p is None or not p.is_file():
                raise DetectorUnavailableError(
                    f"Yolo-Fastest {what} file not found ({p}); set detector_model_dir to a folder with "
                    "yolo-fastest-1.1.cfg/.weights and coco.names (see README 'Detector')"
                )
        if not hasattr(cv2.dnn, "readNetFromDarknet"):
            raise DetectorUnavailableError("this OpenCV has no Darknet importer (needs opencv-python-headless<5)")
        try:
            self._net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
        except cv2.error as exc:
            raise DetectorUnavailableError(f"OpenCV could not load {cfg} / {weights}: {exc}") from exc
        self._net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self._net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        self._out_names = self._net.getUnconnectedOutLayersNames()
        self.class_names = [ln.strip() for ln in names.read_text().splitlines() if ln.strip()]
        self.input_size = int(input_size)
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


def lift_detection(
    det: Detection,
    depth_m: np.ndarray,
    intrinsics: CameraIntrinsics,
    T_world_camera: np.ndarray,  # noqa: N803
    stride: int = 4,
    depth_band_m: float = 0.4,
    shrink: float = 0.15,
) -> np.ndarray:
    """World points (N, 3) float32 of a 2D detection: depth pixels in the (shrunk) box near the
    object's depth.

    A box also covers background; the object is taken as the pixels within ``depth_band_m`` (m) of
    the box's central depth (median of the inner region), and the box is shrunk by ``shrink`` of its
    size on each side before sampling, both to keep background and neighbours out.
    """
    x0, y0, x1, y1 = det.box_xyxy
    dx, dy = int((x1 - x0) * shrink), int((y1 - y0) * shrink)
    x0, x1, y0, y1 = x0 + dx, x1 - dx, y0 + dy, y1 - dy
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 3), np.float32)
    patch = np.asarray(depth_m[y0:y1:stride, x0:x1:stride], dtype=np.float32)
    valid = np.isfinite(patch) & (patch > 0)
    if valid.sum() < 5:
        return np.zeros((0, 3), np.float32)
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
    return transform_points(np.asarray(T_world_camera, dtype=np.float64), pts.astype(np.float64)).astype(np.float32)
