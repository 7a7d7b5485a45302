"""Spatio-temporal object (STO) markers: numbered ID badges on the BEV and on the video frames.

GPT4Scene's insight is that the *same* number, drawn on an object in the global BEV and in every
frame where the object is visible, ties the views together. The badge's number is the instance id;
text refers to it as ``<OBJ###>`` (zero-padded to three digits, see :mod:`scene_vlm_ros.vlm.prompts`).
The style (filled colour badge with a white rim, number with a contrasting outline, size scaled
with the image) is defined only here, so training samples and live prompts look identical.

Visibility in a frame uses the instance's own points: they are projected with
:func:`scene_vlm_ros.core.geometry.project_points` and depth-tested against the keyframe's depth
image, so an object hidden behind another gets no badge in that frame.
"""

from __future__ import annotations

import colorsys
import logging
from dataclasses import dataclass

import cv2
import numpy as np

from .bev import BevImage
from .geometry import project_points
from .types import CameraIntrinsics, Keyframe, SceneSnapshot

logger = logging.getLogger(__name__)

#: Samples per instance for the visibility test; a stride subsample keeps it deterministic.
DEFAULT_SAMPLES_PER_INSTANCE = 256
#: Depth agreement tolerance: ``abs_m + rel * depth`` (fused points sit a voxel or so off the surface,
#: and depth noise of structured-light/ToF sensors grows with range).
DEFAULT_DEPTH_TOL_M = 0.05
DEFAULT_DEPTH_TOL_REL = 0.03
#: An instance counts as visible when at least this many of its samples pass the depth test ...
DEFAULT_MIN_VISIBLE_POINTS = 10
#: ... and at least this fraction of them (a box seen from one side shows 20-60 % of its surface).
DEFAULT_MIN_VISIBLE_FRACTION = 0.05
#: Badge radius as a fraction of the image's longer side (15 px at 512 px).
BADGE_RADIUS_FRACTION = 0.03
_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class MarkerPlacement:
    """Where a badge was drawn: pixel ``uv`` = (u, v) of its centre in the output image,
    ``depth_m`` the anchor's depth along the optical axis (NaN on the BEV)."""

    instance_id: int
    uv: tuple[float, float]
    depth_m: float


@dataclass(frozen=True)
class InstanceSamples:
    """Deterministic subsample of every instance's points, concatenated for one projection per frame.

    ``points`` (M, 3) float64 world; ``owner`` (M,) index into ``instance_ids`` (I,);
    ``counts`` (I,) samples per instance; ``centers`` (I, 3) box centres (world, m).
    """

    instance_ids: np.ndarray
    points: np.ndarray
    owner: np.ndarray
    counts: np.ndarray
    centers: np.ndarray


@dataclass(frozen=True)
class FrameVisibility:
    """Per-instance visibility of one keyframe (all arrays indexed like ``instance_ids``).

    ``n_visible`` samples passing the depth test, ``fraction`` = n_visible / samples,
    ``visible`` the decision, ``visible_uv`` (I, 2) centroid of the passing samples (NaN when none),
    ``visible_uv_min``/``visible_uv_max`` (I, 2) their pixel bounds (+-inf when none),
    ``center_uv`` (I, 2) / ``center_depth_m`` (I,) the projected box centre (native resolution).
    """

    keyframe_id: int
    instance_ids: np.ndarray
    n_visible: np.ndarray
    fraction: np.ndarray
    visible: np.ndarray
    visible_uv: np.ndarray
    visible_uv_min: np.ndarray
    visible_uv_max: np.ndarray
    center_uv: np.ndarray
    center_depth_m: np.ndarray


def marker_color(instance_id: int) -> tuple[int, int, int]:
    """Deterministic, saturated badge colour (RGB uint8 values) of an instance id.

    Hues step by the golden ratio so consecutive ids get far-apart colours.
    """
    hue = (int(instance_id) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.9)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def _text_color(rgb: tuple[int, int, int]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(fill, outline) for the number: dark on bright badges, white on dark ones."""
    luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return ((0, 0, 0), (255, 255, 255)) if luma > 150 else ((255, 255, 255), (0, 0, 0))


def badge_radius_px(image_shape: tuple[int, ...]) -> int:
    """Badge radius (px) for an image of this shape: 3 % of the longer side, at least 7 px."""
    return max(7, int(round(BADGE_RADIUS_FRACTION * max(image_shape[0], image_shape[1]))))


def draw_badge(image: np.ndarray, uv: tuple[float, float], instance_id: int, radius_px: int | None = None) -> None:
    """Draw one ID badge in place on an (H, W, 3) uint8 RGB image, centred at pixel ``uv``.

    A pill (circle for 1-2 digits) filled with :func:`marker_color`, a white rim, and the id in
    digits with an outline of the opposite brightness, so it reads on any background.
    """
    r = badge_radius_px(image.shape) if radius_px is None else int(radius_px)
    text = str(int(instance_id))
    thickness = max(1, int(round(r / 7)))
    (tw0, th0), _ = cv2.getTextSize("0", _FONT, 1.0, thickness)
    scale = 1.05 * r / th0  # digit height ~ the badge radius
    (tw, th), _ = cv2.getTextSize(text, _FONT, scale, thickness)
    half_w = max(0, int(round(tw / 2 + 0.35 * r)) - r)  # straight part of the pill beyond the end caps
    cu, cv_ = int(round(uv[0])), int(round(uv[1]))
    rim = max(1, int(round(r / 6)))
    color = marker_color(instance_id)
    for fill, grow in (((255, 255, 255), rim), (color, 0)):
        rr = r + grow
        cv2.circle(image, (cu - half_w, cv_), rr, fill, -1, cv2.LINE_AA)
        cv2.circle(image, (cu + half_w, cv_), rr, fill, -1, cv2.LINE_AA)
        if half_w:
            cv2.rectangle(image, (cu - half_w, cv_ - rr), (cu + half_w, cv_ + rr), fill, -1)
    text_fill, text_outline = _text_color(color)
    org = (int(round(cu - tw / 2)), int(round(cv_ + th / 2)))
    cv2.putText(image, text, org, _FONT, scale, text_outline, thickness + 2 * max(1, thickness // 2 + 1), cv2.LINE_AA)
    cv2.putText(image, text, org, _FONT, scale, text_fill, thickness, cv2.LINE_AA)


def prepare_instance_samples(
    snapshot: SceneSnapshot, max_points_per_instance: int = DEFAULT_SAMPLES_PER_INSTANCE
) -> InstanceSamples:
    """Subsample each instance's points (deterministic stride) once per snapshot for all frames."""
    if max_points_per_instance < 1:
        raise ValueError(f"max_points_per_instance must be >= 1, got {max_points_per_instance}")
    ids, chunks, owners, counts, centers = [], [], [], [], []
    for i, inst in enumerate(snapshot.instances):
        pts = inst.points
        if len(pts) == 0:
            pts = inst.center[None, :].astype(np.float32)  # box-only instance: its centre stands in
        stride = int(np.ceil(len(pts) / max_points_per_instance))
        sub = np.asarray(pts[::stride], dtype=np.float64)
        ids.append(inst.instance_id)
        chunks.append(sub)
        owners.append(np.full(len(sub), i, dtype=np.int64))
        counts.append(len(sub))
        centers.append(inst.center)
    if not ids:
        return InstanceSamples(
            np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3))
        )
    return InstanceSamples(
        np.asarray(ids, dtype=np.int64),
        np.concatenate(chunks, axis=0),
        np.concatenate(owners),
        np.asarray(counts, dtype=np.int64),
        np.asarray(centers, dtype=np.float64),
    )


def instance_visibility(
    keyframe: Keyframe,
    samples: InstanceSamples,
    *,
    depth_tol_m: float = DEFAULT_DEPTH_TOL_M,
    depth_tol_rel: float = DEFAULT_DEPTH_TOL_REL,
    min_visible_points: int = DEFAULT_MIN_VISIBLE_POINTS,
    min_visible_fraction: float = DEFAULT_MIN_VISIBLE_FRACTION,
) -> FrameVisibility:
    """Which instances a keyframe sees: project all samples once, depth-test, count per instance.

    A sample passes when it projects inside the image in front of the camera and the depth image
    at its pixel (nearest) is valid and within ``depth_tol_m + depth_tol_rel * z`` of its own depth.
    Without depth readings nothing can be confirmed, so nothing is marked (no guessing).
    """
    intr = keyframe.intrinsics
    n_inst = len(samples.instance_ids)
    uv, z = project_points(samples.points, intr, keyframe.T_world_camera)
    h, w = keyframe.depth_m.shape[:2]
    # Depth may be stored at another resolution than the intrinsics describe; map pixel centres.
    dsx, dsy = w / intr.width, h / intr.height
    with np.errstate(invalid="ignore"):
        col = np.rint((uv[:, 0] + 0.5) * dsx - 0.5)
        row = np.rint((uv[:, 1] + 0.5) * dsy - 0.5)
        inside = (z > 1e-3) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    idx = np.flatnonzero(inside)
    d = keyframe.depth_m[row[idx].astype(np.int64), col[idx].astype(np.int64)].astype(np.float64)
    zi = z[idx]
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(d) & (d > 0) & (np.abs(d - zi) <= depth_tol_m + depth_tol_rel * zi)
    passing = idx[ok]
    owner = samples.owner[passing]
    n_vis = np.bincount(owner, minlength=n_inst)
    counts = np.maximum(samples.counts, 1)
    frac = n_vis / counts
    need = np.maximum(np.minimum(min_visible_points, counts), np.ceil(min_visible_fraction * counts))
    visible = (n_vis >= need) & (n_vis > 0)
    su = np.bincount(owner, weights=uv[passing, 0], minlength=n_inst)
    sv = np.bincount(owner, weights=uv[passing, 1], minlength=n_inst)
    with np.errstate(invalid="ignore", divide="ignore"):
        vis_uv = np.stack([su / n_vis, sv / n_vis], axis=1)
    uv_min = np.full((n_inst, 2), np.inf)
    uv_max = np.full((n_inst, 2), -np.inf)
    np.minimum.at(uv_min, owner, uv[passing])
    np.maximum.at(uv_max, owner, uv[passing])
    c_uv, c_z = project_points(samples.centers, intr, keyframe.T_world_camera) if n_inst else (np.zeros((0, 2)), [])
    return FrameVisibility(
        keyframe_id=int(keyframe.keyframe_id),
        instance_ids=samples.instance_ids,
        n_visible=n_vis,
        fraction=frac,
        visible=visible,
        visible_uv=vis_uv,
        visible_uv_min=uv_min,
        visible_uv_max=uv_max,
        center_uv=np.asarray(c_uv, dtype=np.float64).reshape(-1, 2),
        center_depth_m=np.asarray(c_z, dtype=np.float64),
    )


def visibility_matrix(
    snapshot: SceneSnapshot,
    samples: InstanceSamples | None = None,
    cache: dict[int, FrameVisibility] | None = None,
    **visibility_kwargs,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Visibility of every instance in every keyframe.

    ``cache`` (keyframe id -> :class:`FrameVisibility`, for these ``samples``) is read and filled, so
    a prompt tests each frame once for selection and marking.
    Returns ``(keyframe_ids (K,), instance_ids (I,), visible (K, I) bool, fraction (K, I) float)``.
    """
    samples = prepare_instance_samples(snapshot) if samples is None else samples
    cache = {} if cache is None else cache
    vis = []
    for kf in snapshot.keyframes:
        if kf.keyframe_id not in cache:
            cache[kf.keyframe_id] = instance_visibility(kf, samples, **visibility_kwargs)
        vis.append(cache[kf.keyframe_id])
    n_inst = len(samples.instance_ids)
    kf_ids = np.asarray([kf.keyframe_id for kf in snapshot.keyframes], dtype=np.int64)
    visible = np.asarray([v.visible for v in vis], dtype=bool).reshape(len(vis), n_inst)
    frac = np.asarray([v.fraction for v in vis], dtype=np.float64).reshape(len(vis), n_inst)
    return kf_ids, samples.instance_ids, visible, frac


def resized_intrinsics(intr: CameraIntrinsics, width: int, height: int) -> CameraIntrinsics:
    """Intrinsics of the image resized to ``width`` x ``height`` (pixel-centre exact, per-axis scale)."""
    sx, sy = width / intr.width, height / intr.height
    return CameraIntrinsics(
        int(width), int(height), intr.fx * sx, intr.fy * sy, (intr.cx + 0.5) * sx - 0.5, (intr.cy + 0.5) * sy - 0.5
    )


def capped_size(width: int, height: int, max_side_px: int | None) -> tuple[int, int]:
    """(width, height) with the longer side capped at ``max_side_px`` (aspect kept; never enlarged)."""
    if max_side_px is None or max(width, height) <= max_side_px:
        return int(width), int(height)
    f = max_side_px / max(width, height)
    return max(1, int(round(width * f))), max(1, int(round(height * f)))


def _clamp_uv(uv: np.ndarray, w: int, h: int, margin: float) -> tuple[float, float]:
    m_u = min(margin, (w - 1) / 2.0)
    m_v = min(margin, (h - 1) / 2.0)
    return float(np.clip(uv[0], m_u, w - 1 - m_u)), float(np.clip(uv[1], m_v, h - 1 - m_v))


def mark_frame(
    keyframe: Keyframe,
    snapshot: SceneSnapshot,
    *,
    samples: InstanceSamples | None = None,
    image_size: int | None = None,
    anchor: str = "auto",
    visibility: FrameVisibility | None = None,
    **visibility_kwargs,
) -> tuple[np.ndarray, list[MarkerPlacement]]:
    """Draw the ID badge of every instance visible in ``keyframe`` on a copy of its colour image.

    Args:
        keyframe: the frame (colour, depth, intrinsics, ``T_world_camera``).
        snapshot: supplies the instances (ignored when ``samples`` is given).
        samples: precomputed :func:`prepare_instance_samples` (reuse it across frames).
        image_size: cap of the output's longer side (nearest resampling, as GPT4Scene); ``None`` keeps
            the native size. Visibility is always tested at native resolution.
        anchor: ``"center"`` the projected box centre; ``"visible"`` the centroid of the samples that
            pass the depth test; ``"auto"`` the centre when it falls within the pixel bounds of the
            visible samples (the object is seen around its centre), else their centroid -- so a
            half-hidden object's badge sits on its visible part, not on the occluder.
        visibility: a precomputed :func:`instance_visibility` of this frame.

    Returns ``(image (H', W', 3) uint8 RGB, placements)`` with ``uv`` in output pixels; badges are
    drawn far to near so the nearest object's badge is on top.
    """
    if anchor not in ("auto", "center", "visible"):
        raise ValueError(f"anchor must be 'auto', 'center' or 'visible', got {anchor!r}")
    samples = prepare_instance_samples(snapshot) if samples is None else samples
    vis = visibility if visibility is not None else instance_visibility(keyframe, samples, **visibility_kwargs)
    hc, wc = keyframe.color_rgb.shape[:2]
    w1, h1 = capped_size(wc, hc, image_size)
    if (w1, h1) != (wc, hc):
        image = cv2.resize(keyframe.color_rgb, (w1, h1), interpolation=cv2.INTER_NEAREST)
    else:
        image = np.array(keyframe.color_rgb, copy=True)
    # Projections are in the intrinsics' pixel grid, which is what the output image rescales.
    w0, h0 = keyframe.intrinsics.width, keyframe.intrinsics.height
    sx, sy = w1 / w0, h1 / h0
    radius = badge_radius_px(image.shape)

    todo: list[tuple[float, int, np.ndarray]] = []
    for i in np.flatnonzero(vis.visible):
        c_uv = vis.center_uv[i]
        c_in = (
            vis.center_depth_m[i] > 1e-3
            and np.all(np.isfinite(c_uv))
            and 0 <= c_uv[0] <= w0 - 1
            and 0 <= c_uv[1] <= h0 - 1
        )
        on_visible_part = bool(
            c_in and np.all(c_uv >= vis.visible_uv_min[i] - 1.0) and np.all(c_uv <= vis.visible_uv_max[i] + 1.0)
        )
        # A centre behind the camera or off-image cannot carry the badge, whatever the anchor.
        use_center = c_in and (anchor == "center" or (anchor == "auto" and on_visible_part))
        uv = c_uv if use_center else vis.visible_uv[i]
        depth = float(vis.center_depth_m[i])
        todo.append((depth, int(vis.instance_ids[i]), uv))
    placements = []
    for depth, inst_id, uv in sorted(todo, key=lambda t: (-t[0], t[1])):
        out_uv = np.array([(uv[0] + 0.5) * sx - 0.5, (uv[1] + 0.5) * sy - 0.5])
        u, v = _clamp_uv(out_uv, w1, h1, radius)
        draw_badge(image, (u, v), inst_id, radius)
        placements.append(MarkerPlacement(inst_id, (u, v), depth))
    return image, placements


def draw_bev_markers(
    bev: BevImage, snapshot: SceneSnapshot, image: np.ndarray | None = None
) -> tuple[np.ndarray, list[MarkerPlacement]]:
    """Draw every instance's badge at its box centre (world x, y) on a copy of the BEV.

    Lower objects are drawn first so a badge on a tall object is not covered by one below it.
    Returns ``(image (S, S, 3) uint8 RGB, placements)``; ``depth_m`` is NaN for BEV placements.
    """
    out = np.array(bev.image if image is None else image, copy=True)
    h, w = out.shape[:2]
    radius = badge_radius_px(out.shape)
    order = sorted(snapshot.instances, key=lambda it: (float(it.box.center[2] + it.box.size[2] / 2), it.instance_id))
    placements = []
    for inst in order:
        uv = bev.world_to_px(inst.center[None, :2])[0]
        if not np.all(np.isfinite(uv)):
            logger.warning("draw_bev_markers: instance %d has a non-finite centre; skipped", inst.instance_id)
            continue
        u, v = _clamp_uv(uv, w, h, radius)
        draw_badge(out, (u, v), inst.instance_id, radius)
        placements.append(MarkerPlacement(int(inst.instance_id), (u, v), float("nan")))
    return out, placements
