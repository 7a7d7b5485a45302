"""Synthetic indoor rooms: object categories built from primitives, seeded layouts, JSON I/O.

World frame (the room frame, ``map``): metres, z up; the room spans ``[0, X] x [0, Y] x [0, Z]``.
An object is a gravity-aligned box (:class:`~scene_vlm_ros.core.types.GroundTruthObject`): ``center``
(m), ``size`` = full extents along the object's own x (width), y (depth), z (height), ``yaw`` about +z
(rad). Object-local convention: the object's *front* faces local -y and its back is at local +y, so
an object whose back stands against the north wall (y = Y) has yaw 0. A chair's sitter faces -y.

Every mesh part a category builds lies inside the object's box, so the box is exact ground truth for
the rendered pixels (the acceptance test in ``tests/test_render.py`` relies on that).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from scipy import ndimage

from ..core.colors import COLOR_PALETTE, COLOR_SYNONYMS, canonical_color
from ..core.geometry import box_iou
from ..core.referring import canonical_label as referring_canonical_label
from ..core.types import GroundTruthObject, OrientedBox3D

logger = logging.getLogger(__name__)

#: Default room extents (m) when a layout is generated without ``room_size`` (x and y vary by seed).
DEFAULT_ROOM_HEIGHT_M = 2.7
#: Overlap tolerance (m^3) below which two boxes count as touching, not interpenetrating.
OVERLAP_TOLERANCE_M3 = 1e-5
#: How far (m) a box may poke through a wall/floor/ceiling before it counts as outside the room.
OUTSIDE_TOLERANCE_M = 0.01


class LayoutError(ValueError):
    """A layout is invalid (unknown label, overlap, object outside the room) or cannot be generated."""


# ----------------------------------------------------------------------------------------------
# Primitive meshes (object-local frame, metres)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeshPart:
    """One coloured primitive of an object: vertices (N, 3) float64 m, triangles (M, 3) int32, rgb 0..255."""

    vertices: np.ndarray
    triangles: np.ndarray
    rgb: tuple[float, float, float]


_BOX_TRIANGLES = np.array(
    [
        [0, 2, 1], [1, 2, 3],  # -x face
        [4, 5, 6], [5, 7, 6],  # +x face
        [0, 1, 4], [1, 5, 4],  # -y face
        [2, 6, 3], [3, 6, 7],  # +y face
        [0, 4, 2], [2, 4, 6],  # -z face
        [1, 3, 5], [3, 7, 5],  # +z face
    ],
    dtype=np.int32,
)


def box_mesh(lo: tuple[float, float, float], hi: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box from corner ``lo`` to corner ``hi`` (m): ``(vertices (8, 3), triangles (12, 3))``."""
    lo_a, hi_a = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    verts = np.array([[x, y, z] for x in (lo_a[0], hi_a[0]) for y in (lo_a[1], hi_a[1]) for z in (lo_a[2], hi_a[2])])
    return verts, _BOX_TRIANGLES.copy()


def frustum_mesh(
    center_xy: tuple[float, float], z0: float, z1: float, r0: float, r1: float, segments: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Capped cone frustum about a vertical axis from height ``z0`` (radius ``r0``) to ``z1`` (``r1``).

    ``r0 == r1`` gives a cylinder, ``r1 == 0`` a cone. The polygon is inscribed in the circle, so the
    mesh stays inside the cylinder's bounding box.
    """
    ang = np.linspace(0.0, 2.0 * np.pi, segments, endpoint=False)
    ring = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    cx, cy = center_xy
    bottom = np.column_stack([cx + r0 * ring[:, 0], cy + r0 * ring[:, 1], np.full(segments, z0)])
    top = np.column_stack([cx + r1 * ring[:, 0], cy + r1 * ring[:, 1], np.full(segments, z1)])
    verts = np.vstack([bottom, top, [[cx, cy, z0], [cx, cy, z1]]])
    i = np.arange(segments)
    j = (i + 1) % segments
    side = np.vstack([np.stack([i, j, segments + i], 1), np.stack([j, segments + j, segments + i], 1)])
    cap_b = np.stack([np.full(segments, 2 * segments), j, i], 1)
    cap_t = np.stack([np.full(segments, 2 * segments + 1), segments + i, segments + j], 1)
    return verts, np.vstack([side, cap_b, cap_t]).astype(np.int32)


def sphere_mesh(center: tuple[float, float, float], radius: float, rings: int = 8, segments: int = 14) -> tuple[
    np.ndarray, np.ndarray
]:
    """UV sphere (vertices inside the sphere's bounding box)."""
    verts = [[center[0], center[1], center[2] - radius]]
    for k in range(1, rings):
        phi = -np.pi / 2 + np.pi * k / rings
        for s in range(segments):
            th = 2.0 * np.pi * s / segments
            verts.append(
                [
                    center[0] + radius * np.cos(phi) * np.cos(th),
                    center[1] + radius * np.cos(phi) * np.sin(th),
                    center[2] + radius * np.sin(phi),
                ]
            )
    verts.append([center[0], center[1], center[2] + radius])
    tris = []
    top = len(verts) - 1
    for s in range(segments):
        t = (s + 1) % segments
        tris.append([0, 1 + t, 1 + s])
        last = 1 + (rings - 2) * segments
        tris.append([top, last + s, last + t])
    for k in range(rings - 2):
        a0 = 1 + k * segments
        b0 = a0 + segments
        for s in range(segments):
            t = (s + 1) % segments
            tris.append([a0 + s, a0 + t, b0 + s])
            tris.append([a0 + t, b0 + t, b0 + s])
    return np.asarray(verts, dtype=np.float64), np.asarray(tris, dtype=np.int32)


def _shade(rgb: tuple[float, float, float], factor: float) -> tuple[float, float, float]:
    return tuple(float(min(255.0, c * factor)) for c in rgb)  # type: ignore[return-value]


def _part(mesh: tuple[np.ndarray, np.ndarray], rgb: tuple[float, float, float]) -> MeshPart:
    return MeshPart(mesh[0], mesh[1], rgb)


def _legs(hx: float, hy: float, z0: float, z1: float, t: float, rgb, inset: float = 0.0) -> list[MeshPart]:
    """Four square legs of side ``t`` at the corners of ``[-hx, hx] x [-hy, hy]`` (inset by ``inset``)."""
    out = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            x0 = sx * (hx - inset) - (t if sx > 0 else 0.0)
            y0 = sy * (hy - inset) - (t if sy > 0 else 0.0)
            out.append(_part(box_mesh((x0, y0, z0), (x0 + t, y0 + t, z1)), rgb))
    return out


# Builders: (size (dx, dy, dz) m, rgb) -> parts in the object-local frame, box centred at the origin.
Builder = Callable[[tuple[float, float, float], tuple[float, float, float]], list[MeshPart]]


def _build_table(size, rgb) -> list[MeshPart]:
    hx, hy, hz = size[0] / 2, size[1] / 2, size[2] / 2
    top_t = 0.04
    parts = [_part(box_mesh((-hx, -hy, hz - top_t), (hx, hy, hz)), rgb)]
    return parts + _legs(hx, hy, -hz, hz - top_t, 0.06, _shade(rgb, 0.75), inset=0.04)


def _build_desk(size, rgb) -> list[MeshPart]:
    hx, hy, hz = size[0] / 2, size[1] / 2, size[2] / 2
    top_t, side_t = 0.04, 0.04
    parts = [_part(box_mesh((-hx, -hy, hz - top_t), (hx, hy, hz)), rgb)]
    # A side panel on the left and a drawer block on the right, as office desks have.
    parts.append(_part(box_mesh((-hx, -hy + 0.02, -hz), (-hx + side_t, hy, hz - top_t)), _shade(rgb, 0.85)))
    drawer_w = min(0.45, size[0] * 0.35)
    parts.append(_part(box_mesh((hx - drawer_w, -hy + 0.02, -hz), (hx, hy, hz - top_t)), _shade(rgb, 0.9)))
    modesty = box_mesh((-hx + side_t, hy - 0.03, -hz + 0.3), (hx - drawer_w, hy, hz - top_t))  # back panel
    parts.append(_part(modesty, _shade(rgb, 0.8)))
    return parts


def _build_chair(size, rgb) -> list[MeshPart]:
    hx, hy, hz = size[0] / 2, size[1] / 2, size[2] / 2
    seat_z = -hz + min(0.46, size[2] * 0.5)
    parts = [_part(box_mesh((-hx, -hy, seat_z - 0.05), (hx, hy, seat_z)), rgb)]
    parts.append(_part(box_mesh((-hx, hy - 0.06, seat_z), (hx, hy, hz)), rgb))  # backrest at +y (the back)
    return parts + _legs(hx, hy, -hz, seat_z - 0.05, 0.04, _shade(rgb, 0.7), inset=0.01)


def _build_armchair(size, rgb) -> list[MeshPart]:
    hx, hy, hz = size[0] / 2, size[1] / 2, size[2] / 2
    arm_w, back_d = 0.15, 0.2
    seat_top = -hz + 0.42
    parts = [_part(box_mesh((-hx + arm_w, -hy, -hz + 0.05), (hx - arm_w, hy - back_d, seat_top)), rgb)]
    parts.append(_part(box_mesh((-hx, hy - back_d, -hz + 0.05), (hx, hy, hz)), _shade(rgb, 0.92)))
    arm_top = seat_top + 0.2
    parts.append(_part(box_mesh((-hx, -hy, -hz + 0.05), (-hx + arm_w, hy - back_d, arm_top)), _shade(rgb, 0.95)))
    parts.append(_part(box_mesh((hx - arm_w, -hy, -hz + 0.05), (hx, hy - back_d, arm_top)), _shade(rgb, 0.95)))
    parts += _legs(hx, hy, -hz, -hz + 0.05, 0.05, (60.0, 45.0, 30.0), inset=0.02)
    return parts


def _build_sofa(size, rgb) -> list[MeshPart]:
    hx, hy, hz = size[0] / 2, size[1] / 2, size[2] / 2
    arm_w, back_d = 0.18, 0.22
    seat_top = -hz + 0.43
    parts = [_part(box_mesh((-hx + arm_w, -hy, -hz + 0.06), (hx - arm_w, hy - back_d, seat_top)), rgb)]
    parts.append(_part(box_mesh((-hx, hy - back_d, -hz + 0.06), (hx, hy, hz)), _shade(rgb, 0.92)))
    arm_top = min(hz, seat_top + 0.22)
    parts.append(_part(box_mesh((-hx, -hy, -hz + 0.06), (-hx + arm_w, hy - back_d, arm_top)), _shade(rgb, 0.95)))
    parts.append(_part(box_mesh((hx - arm_w, -hy, -hz + 0.06), (hx, hy - back_d, arm_top)), _shade(rgb, 0.95)))
    parts += _legs(hx, hy, -hz, -hz + 0.06, 0.05, (60.0, 45.0, 30.0), inset=0.03)
    return parts


def _build_bed(size, rgb) -> list[MeshPart]:
    hx, hy, hz = size[0] / 2, size[1] / 2, size[2] / 2
    frame_rgb = COLOR_PALETTE["brown"]
    head_t = 0.08
    parts = [_part(box_mesh((-hx, -hy, -hz), (hx, hy - head_t, -hz + 0.3)), _shade(frame_rgb, 1.0))]
    parts.append(_part(box_mesh((-hx + 0.02, -hy + 0.02, -hz + 0.3), (hx - 0.02, hy - head_t, -hz + 0.55)), rgb))
    parts.append(_part(box_mesh((-hx, hy - head_t, -hz), (hx, hy, hz)), _shade(frame_rgb, 0.9)))  # headboard
    pillow_w = min(0.6, size[0] * 0.4)
    parts.append(
        _part(box_mesh((-pillow_w / 2, hy - head_t - 0.45, -hz + 0.55), (pillow_w / 2, hy - head_t - 0.05, -hz + 0.65)),
              COLOR_PALETTE["white"])
    )
    return parts


def _build_cabinet(size, rgb) -> list[MeshPart]:
    hx, hy, hz = size[0] / 2, size[1] / 2, size[2] / 2
    handle_d = 0.025
    parts = [_part(box_mesh((-hx, -hy + handle_d, -hz), (hx, hy, hz)), rgb)]
    for sx in (-1, 1):  # two door handles on the front
        x = sx * 0.06
        handle = box_mesh((x - 0.01, -hy, hz - 0.45), (x + 0.01, -hy + handle_d, hz - 0.25))
        parts.append(_part(handle, (70.0, 70.0, 70.0)))
    return parts


def _build_nightstand(size, rgb) -> list[MeshPart]:
    hx, hy, hz = size[0] / 2, size[1] / 2, size[2] / 2
    parts = [_part(box_mesh((-hx, -hy + 0.02, -hz + 0.05), (hx, hy, hz)), rgb)]
    drawer = box_mesh((-hx + 0.03, -hy, 0.0), (hx - 0.03, -hy + 0.02, hz - 0.04))
    parts.append(_part(drawer, _shade(rgb, 0.85)))
    return parts + _legs(hx, hy, -hz, -hz + 0.05, 0.04, _shade(rgb, 0.7))


def _build_shelf(size, rgb) -> list[MeshPart]:
    hx, hy, hz = size[0] / 2, size[1] / 2, size[2] / 2
    t = 0.03
    parts = [
        _part(box_mesh((-hx, -hy, -hz), (-hx + t, hy, hz)), rgb),
        _part(box_mesh((hx - t, -hy, -hz), (hx, hy, hz)), rgb),
        _part(box_mesh((-hx + t, hy - 0.015, -hz), (hx - t, hy, hz)), _shade(rgb, 0.8)),  # back panel
    ]
    n_boards = max(3, int(size[2] / 0.38))
    for k in range(n_boards + 1):
        z = -hz + k * (size[2] - t) / n_boards
        parts.append(_part(box_mesh((-hx + t, -hy, z), (hx - t, hy - 0.015, z + t)), rgb))
    return parts


def _build_lamp(size, rgb) -> list[MeshPart]:
    hx, hy, hz = size[0] / 2, size[1] / 2, size[2] / 2
    r = min(hx, hy)
    shade_h = min(0.35, size[2] * 0.35)
    pole_rgb = (110.0, 110.0, 110.0)
    return [
        _part(frustum_mesh((0.0, 0.0), -hz, -hz + 0.03, r * 0.7, r * 0.7), pole_rgb),
        _part(frustum_mesh((0.0, 0.0), -hz + 0.03, hz - shade_h, 0.015, 0.015, segments=8), pole_rgb),
        _part(frustum_mesh((0.0, 0.0), hz - shade_h, hz, r, r * 0.6), rgb),
    ]


def _build_tv(size, rgb) -> list[MeshPart]:
    hx, hy, hz = size[0] / 2, size[1] / 2, size[2] / 2
    stand_h = min(0.1, size[2] * 0.15)
    panel_d = 0.05
    parts = [
        _part(box_mesh((-hx * 0.35, -hy, -hz), (hx * 0.35, hy, -hz + 0.02)), _shade(rgb, 0.8)),  # foot
        _part(box_mesh((-0.03, hy - panel_d - 0.04, -hz + 0.02), (0.03, hy - panel_d, -hz + stand_h)),
              _shade(rgb, 0.8)),
        _part(box_mesh((-hx, hy - panel_d, -hz + stand_h), (hx, hy, hz)), rgb),  # bezel + body
        # The screen: a slightly proud, darker inset on the front of the panel.
        _part(box_mesh((-hx + 0.03, hy - panel_d - 0.005, -hz + stand_h + 0.03), (hx - 0.03, hy - panel_d, hz - 0.03)),
              _shade(rgb, 0.55)),
    ]
    return parts


def _build_plant(size, rgb) -> list[MeshPart]:
    hx, hy, hz = size[0] / 2, size[1] / 2, size[2] / 2
    r = min(hx, hy)
    pot_h = min(0.35, size[2] * 0.35)
    pot_rgb = (165.0, 85.0, 55.0)  # terracotta
    foliage_h = size[2] - pot_h
    parts = [_part(frustum_mesh((0.0, 0.0), -hz, -hz + pot_h, r * 0.45, r * 0.6), pot_rgb)]
    if foliage_h > 2 * r:  # tall plant: a cone, like a small tree
        parts.append(_part(frustum_mesh((0.0, 0.0), -hz + pot_h, hz, r, 0.0), rgb))
    else:
        rad = min(r, foliage_h / 2)
        parts.append(_part(sphere_mesh((0.0, 0.0, hz - rad), rad), rgb))
    return parts


def _build_box(size, rgb) -> list[MeshPart]:
    hx, hy, hz = size[0] / 2, size[1] / 2, size[2] / 2
    return [
        _part(box_mesh((-hx, -hy, -hz), (hx, hy, hz - 0.01)), rgb),
        _part(box_mesh((-hx, -0.03, hz - 0.01), (hx, 0.03, hz)), _shade(rgb, 0.8)),  # tape strip
    ]


def _build_trash_can(size, rgb) -> list[MeshPart]:
    hx, hy, hz = size[0] / 2, size[1] / 2, size[2] / 2
    r = min(hx, hy)
    return [
        _part(frustum_mesh((0.0, 0.0), -hz, hz - 0.02, r * 0.85, r), rgb),
        _part(frustum_mesh((0.0, 0.0), hz - 0.02, hz, r, r), _shade(rgb, 0.75)),  # rim
    ]


# ----------------------------------------------------------------------------------------------
# Categories
# ----------------------------------------------------------------------------------------------

SizeRange = tuple[tuple[float, float], tuple[float, float], tuple[float, float]]


@dataclass(frozen=True)
class CategorySpec:
    """An object category: label, size ranges (m, width x depth x height), palette colours, mesh builder.

    ``small_size`` is the size range used when the object stands on another one (table lamp, desk
    monitor); ``support`` says whether other objects may be put on its top; ``round_footprint`` keeps
    width == depth (cylinders).
    """

    label: str
    size: SizeRange
    colors: tuple[str, ...]
    builder: Builder
    aliases: tuple[str, ...] = ()
    small_size: Optional[SizeRange] = None
    support: bool = False
    round_footprint: bool = False

    def sample_size(self, rng: np.random.Generator, small: bool = False) -> tuple[float, float, float]:
        rng_ranges = self.small_size if (small and self.small_size is not None) else self.size
        s = [float(rng.uniform(lo, hi)) for lo, hi in rng_ranges]
        if self.round_footprint:
            s[1] = s[0]
        return round(s[0], 3), round(s[1], 3), round(s[2], 3)

    def parts(self, size: tuple[float, float, float], color: str) -> list[MeshPart]:
        """Mesh parts in the object-local frame (box centred at the origin, front towards -y)."""
        rgb = tuple(float(c) for c in COLOR_PALETTE.get(color, COLOR_PALETTE["gray"]))
        return self.builder(tuple(float(v) for v in size), rgb)  # type: ignore[arg-type]


def _spec(*args, **kwargs) -> CategorySpec:
    return CategorySpec(*args, **kwargs)


CATEGORIES: dict[str, CategorySpec] = {
    c.label: c
    for c in (
        _spec("table", ((1.0, 1.7), (0.7, 1.0), (0.72, 0.78)), ("brown", "white", "beige", "black", "gray"),
              _build_table, ("dining table", "coffee table"), small_size=((0.8, 1.1), (0.5, 0.6), (0.4, 0.48)),
              support=True),
        _spec("chair", ((0.42, 0.5), (0.45, 0.52), (0.82, 0.98)), ("brown", "black", "white", "red", "blue", "gray",
              "green"), _build_chair),
        _spec("armchair", ((0.72, 0.9), (0.72, 0.88), (0.8, 0.98)), ("red", "blue", "gray", "green", "beige", "brown"),
              _build_armchair),
        _spec("sofa", ((1.6, 2.1), (0.8, 0.95), (0.75, 0.9)), ("gray", "blue", "beige", "green", "brown", "red",
              "black"), _build_sofa, ("couch",)),
        _spec("bed", ((1.4, 1.7), (1.95, 2.1), (0.9, 1.1)), ("white", "blue", "beige", "gray", "pink"), _build_bed),
        _spec("cabinet", ((0.6, 1.2), (0.4, 0.6), (0.75, 1.3)), ("white", "brown", "beige", "gray", "black"),
              _build_cabinet, ("cupboard", "sideboard"), support=True),
        _spec("shelf", ((0.8, 1.2), (0.3, 0.4), (1.5, 2.0)), ("brown", "white", "black", "beige"), _build_shelf,
              ("bookshelf", "bookcase")),
        _spec("desk", ((1.0, 1.5), (0.6, 0.75), (0.72, 0.76)), ("brown", "white", "black", "gray"), _build_desk,
              support=True),
        _spec("lamp", ((0.32, 0.45), (0.32, 0.45), (1.4, 1.7)), ("white", "yellow", "beige", "black", "orange", "red"),
              _build_lamp, ("floor lamp", "table lamp"), small_size=((0.2, 0.3), (0.2, 0.3), (0.35, 0.5)),
              round_footprint=True),
        _spec("tv", ((0.9, 1.3), (0.2, 0.26), (0.6, 0.85)), ("black", "gray", "white"), _build_tv,
              ("monitor", "television", "screen"), small_size=((0.5, 0.7), (0.16, 0.2), (0.38, 0.5))),
        _spec("plant", ((0.3, 0.55), (0.3, 0.55), (0.5, 1.3)), ("green",), _build_plant, ("potted plant", "flower"),
              small_size=((0.18, 0.28), (0.18, 0.28), (0.25, 0.4)), round_footprint=True),
        _spec("box", ((0.3, 0.6), (0.3, 0.5), (0.25, 0.5)), ("brown", "beige", "white", "blue", "red", "yellow"),
              _build_box, ("carton", "crate"), small_size=((0.2, 0.35), (0.15, 0.3), (0.12, 0.25))),
        _spec("trash can", ((0.25, 0.36), (0.25, 0.36), (0.35, 0.6)), ("gray", "black", "blue", "green", "white",
              "red"), _build_trash_can, ("trash bin", "bin", "garbage can", "wastebasket"), round_footprint=True),
        _spec("nightstand", ((0.4, 0.55), (0.35, 0.45), (0.45, 0.6)), ("brown", "white", "beige", "black"),
              _build_nightstand, ("bedside table",), support=True),
    )
}

#: The plain-word labels objects may carry, sorted.
KNOWN_LABELS: tuple[str, ...] = tuple(sorted(CATEGORIES))
#: Other words for a category -> its label (e.g. "monitor" -> "tv").
LABEL_ALIASES: dict[str, str] = {alias: spec.label for spec in CATEGORIES.values() for alias in spec.aliases}


def canonical_label(word: str) -> Optional[str]:
    """The category label ``word`` names (label or alias, case-insensitive), or None. Words the
    query side knows as synonyms ("couch", "television", "bin", "potted plant") resolve through
    :func:`core.referring.canonical_label`, so a layout accepts what a question would."""
    w = " ".join(word.strip().lower().replace("_", " ").split())
    if w in CATEGORIES:
        return w
    if w in LABEL_ALIASES:
        return LABEL_ALIASES[w]
    shared = referring_canonical_label(w)
    return shared if shared in CATEGORIES else None


def object_parts_world(obj: GroundTruthObject) -> list[MeshPart]:
    """The mesh parts of ``obj`` placed in the world frame (yaw about z, then translation to ``center``)."""
    spec = CATEGORIES.get(obj.label)
    if spec is None:
        raise LayoutError(
            f"object {obj.object_id}: unknown label {obj.label!r}; known labels: {', '.join(KNOWN_LABELS)}"
        )
    R = obj.box.rotation()
    t = np.asarray(obj.center, dtype=np.float64)
    return [MeshPart(p.vertices @ R.T + t, p.triangles, p.rgb) for p in spec.parts(obj.size, obj.color)]


# ----------------------------------------------------------------------------------------------
# Layouts
# ----------------------------------------------------------------------------------------------

WALLS = ("south", "east", "north", "west")


@dataclass(frozen=True)
class Opening:
    """A gap in a wall (door or window).

    ``wall`` is one of ``south`` (y = 0), ``east`` (x = X), ``north`` (y = Y), ``west`` (x = 0);
    ``offset_m`` is where the gap starts along the wall (measured from its x = 0 / y = 0 end),
    ``width_m`` its width, ``bottom_m``/``top_m`` its vertical extent above the floor.
    """

    kind: str  # "door" | "window"
    wall: str
    offset_m: float
    width_m: float
    bottom_m: float
    top_m: float

    def to_json(self) -> dict:
        return {"kind": self.kind, "wall": self.wall, "offset": self.offset_m, "width": self.width_m,
                "bottom": self.bottom_m, "top": self.top_m}

    @classmethod
    def from_json(cls, d: dict) -> Opening:
        return cls(str(d.get("kind", "door")), str(d["wall"]), float(d["offset"]), float(d["width"]),
                   float(d.get("bottom", 0.0)), float(d.get("top", 2.0)))


@dataclass
class RoomLayout:
    """A furnished room in the world frame: extents (m), objects (ids from 1), wall openings, ceiling flag."""

    size: tuple[float, float, float]
    objects: list[GroundTruthObject] = field(default_factory=list)
    openings: list[Opening] = field(default_factory=list)
    has_ceiling: bool = True
    seed: Optional[int] = None
    theme: str = ""

    def object(self, object_id: int) -> GroundTruthObject:
        for obj in self.objects:
            if obj.object_id == object_id:
                return obj
        raise KeyError(f"no object with id {object_id} in the layout (ids: {[o.object_id for o in self.objects]})")

    def to_json(self) -> dict:
        """The layout file format (see :func:`layout_from_json`), ids included."""
        return {
            "room": {"size": [float(v) for v in self.size], "has_ceiling": self.has_ceiling,
                     "openings": [o.to_json() for o in self.openings]},
            "objects": [o.to_json() for o in self.objects],
            "seed": self.seed,
            "theme": self.theme,
        }


def _wall_length(size: tuple[float, float, float], wall: str) -> float:
    return size[0] if wall in ("south", "north") else size[1]


def _intersection_volume(a: OrientedBox3D, b: OrientedBox3D) -> float:
    # box_iou is exact for yawed gravity-aligned boxes: iou = I / (Va + Vb - I) -> I = iou (Va + Vb) / (1 + iou).
    iou = box_iou(a, b)
    return iou * (float(np.prod(a.size)) + float(np.prod(b.size))) / (1.0 + iou)


def _outside_room(box: OrientedBox3D, size: tuple[float, float, float], tol: float = OUTSIDE_TOLERANCE_M) -> bool:
    lo, hi = box.aabb()
    return bool(np.any(lo < -tol) or np.any(hi > np.asarray(size) + tol))


def validate_layout(layout: RoomLayout) -> None:
    """Raise :class:`LayoutError` naming the object (index, id, label) that is unknown, outside or overlapping."""
    size = layout.size
    if len(size) != 3 or min(size) <= 0:
        raise LayoutError(f"room size must be three positive extents in metres, got {size}")
    for o in layout.openings:
        if o.wall not in WALLS:
            raise LayoutError(f"opening {o}: wall must be one of {WALLS}")
        if o.offset_m < 0 or o.offset_m + o.width_m > _wall_length(size, o.wall) or not 0 <= o.bottom_m < o.top_m:
            raise LayoutError(f"opening {o} does not fit its {o.wall} wall of a {size} room")
    seen_ids: set[int] = set()
    for i, obj in enumerate(layout.objects):
        name = f"object #{i} (id {obj.object_id}, {obj.label!r})"
        if obj.label not in CATEGORIES:
            raise LayoutError(f"{name}: unknown label; known labels: {', '.join(KNOWN_LABELS)}")
        if obj.object_id < 1 or obj.object_id in seen_ids or obj.object_id > 65535:
            raise LayoutError(f"{name}: object ids must be unique integers in 1..65535")
        seen_ids.add(obj.object_id)
        if min(obj.size) <= 0 or not all(math.isfinite(v) for v in (*obj.center, *obj.size, obj.yaw)):
            raise LayoutError(f"{name}: size must be positive and all values finite (size {obj.size})")
        if _outside_room(obj.box, size):
            lo, hi = obj.box.aabb()
            raise LayoutError(
                f"{name} is outside the room [0, {size[0]}] x [0, {size[1]}] x [0, {size[2]}]: its box spans "
                f"{np.round(lo, 3).tolist()} .. {np.round(hi, 3).tolist()}"
            )
    for i, a in enumerate(layout.objects):
        for j in range(i):
            b = layout.objects[j]
            vol = _intersection_volume(a.box, b.box)
            if vol > OVERLAP_TOLERANCE_M3:
                raise LayoutError(
                    f"object #{i} (id {a.object_id}, {a.label!r}) overlaps object #{j} (id {b.object_id}, "
                    f"{b.label!r}) by {vol * 1e6:.0f} cm^3"
                )


def layout_from_json(d: dict) -> RoomLayout:
    """Parse and validate a layout dict.

    Format: ``{"room": {"size": [x, y, z], "openings": [...], "has_ceiling": bool}, "objects": [{"label",
    "color", "center": [x, y, z], "size": [dx, dy, dz], "yaw"}]}``; ``openings``, ``has_ceiling``,
    ``color`` (default gray), ``yaw`` (default 0) and ``object_id`` (default index + 1) are optional.
    Labels may be aliases ("monitor" -> "tv").
    """
    if not isinstance(d, dict) or "room" not in d or "size" not in d.get("room", {}):
        raise LayoutError('a layout needs {"room": {"size": [x, y, z]}, "objects": [...]}')
    size = tuple(float(v) for v in d["room"]["size"])
    if len(size) != 3:
        raise LayoutError(f"room size must have three values (x, y, z metres), got {d['room']['size']}")
    objects = []
    for i, od in enumerate(d.get("objects", [])):
        raw_label = str(od.get("label", ""))
        label = canonical_label(raw_label)
        if label is None:
            raise LayoutError(f"object #{i} ({raw_label!r}): unknown label; known labels: {', '.join(KNOWN_LABELS)}")
        try:
            center = tuple(float(v) for v in od["center"])
            obj_size = tuple(float(v) for v in od["size"])
        except (KeyError, TypeError, ValueError) as exc:
            raise LayoutError(f"object #{i} ({raw_label!r}): needs numeric 'center' and 'size' lists ({exc})") from exc
        if len(center) != 3 or len(obj_size) != 3:
            raise LayoutError(f"object #{i} ({raw_label!r}): 'center' and 'size' need three values each")
        raw_color = str(od.get("color", "gray"))
        color = canonical_color(raw_color)  # "grey" is "gray", "tan" is "beige" (colors.COLOR_SYNONYMS)
        if color is None:
            raise LayoutError(
                f"object #{i} ({raw_label!r}): unknown colour {raw_color!r}; use one of {list(COLOR_PALETTE)} "
                f"(or a synonym: {sorted(COLOR_SYNONYMS)})"
            )
        objects.append(GroundTruthObject(int(od.get("object_id", i + 1)), label, color, center, obj_size,  # type: ignore[arg-type]
                                         float(od.get("yaw", 0.0))))
    openings = [Opening.from_json(o) for o in d["room"].get("openings", [])]
    layout = RoomLayout(size, objects, openings, bool(d["room"].get("has_ceiling", True)),  # type: ignore[arg-type]
                        d.get("seed"), str(d.get("theme", "")))
    validate_layout(layout)
    return layout


def load_layout(path: str | Path) -> RoomLayout:
    """Read and validate a layout JSON file (format: :func:`layout_from_json`)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"layout file not found: {p}")
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise LayoutError(f"{p}: not valid JSON ({exc})") from exc
    return layout_from_json(d)


def save_layout(layout: RoomLayout, path: str | Path) -> Path:
    """Write ``layout`` in the format :func:`load_layout` reads."""
    p = Path(path)
    p.write_text(json.dumps(layout.to_json(), indent=2))
    return p


def write_ground_truth(layout: RoomLayout, path: str | Path) -> Path:
    """Write the ``*.gt.json`` ground truth: ``{"frame_id": "map", "room": {"size"}, "objects": [...]}``."""
    p = Path(path)
    d = {"frame_id": "map", "room": {"size": [float(v) for v in layout.size]},
         "objects": [o.to_json() for o in layout.objects]}
    p.write_text(json.dumps(d, indent=2))
    return p


def read_ground_truth(path: str | Path) -> tuple[list[GroundTruthObject], tuple[float, float, float]]:
    """Read a ``*.gt.json`` file: ``(objects, room_size)``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"ground-truth file not found: {p}")
    d = json.loads(p.read_text())
    if d.get("frame_id", "map") != "map":
        logger.warning("%s: ground truth in frame %r, expected 'map'", p, d.get("frame_id"))
    try:
        objects = [GroundTruthObject.from_json(o) for o in d["objects"]]
        size = tuple(float(v) for v in d["room"]["size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise LayoutError(f"{p}: not a ground-truth file ({exc})") from exc
    return objects, size  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------
# Free space (shared with the trajectory planner in render.py)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FreeSpace:
    """Floor grid of a layout: cell (i, j) has centre ((i + 0.5) res, (j + 0.5) res) in the world frame.

    ``clearance_m`` is each cell's distance to the nearest object footprint or wall; ``free`` marks the
    cells where a robot of radius ``robot_radius_m`` fits (wall distance also >= ``wall_margin_m``).
    """

    resolution_m: float
    clearance_m: np.ndarray  # (nx, ny) float
    free: np.ndarray  # (nx, ny) bool
    robot_radius_m: float

    def cell(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Grid indices of (N, 2) world xy points (clipped to the grid)."""
        ij = np.floor(np.asarray(xy, dtype=np.float64) / self.resolution_m).astype(int)
        return (np.clip(ij[..., 0], 0, self.free.shape[0] - 1), np.clip(ij[..., 1], 0, self.free.shape[1] - 1))

    def centers(self) -> np.ndarray:
        """(nx, ny, 2) world xy of the cell centres."""
        nx, ny = self.free.shape
        xs = (np.arange(nx) + 0.5) * self.resolution_m
        ys = (np.arange(ny) + 0.5) * self.resolution_m
        return np.stack(np.meshgrid(xs, ys, indexing="ij"), axis=-1)


def free_space(
    size: tuple[float, float, float],
    objects: list[GroundTruthObject],
    resolution_m: float = 0.05,
    robot_radius_m: float = 0.25,
    wall_margin_m: float = 0.35,
    extra_obstacles: tuple[OrientedBox3D, ...] = (),
) -> FreeSpace:
    """Occupancy of the room floor by object footprints (every object, whatever its height)."""
    nx, ny = int(math.ceil(size[0] / resolution_m)), int(math.ceil(size[1] / resolution_m))
    xs = (np.arange(nx) + 0.5) * resolution_m
    ys = (np.arange(ny) + 0.5) * resolution_m
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    occupied = np.zeros((nx, ny), dtype=bool)
    for box in [o.box for o in objects] + list(extra_obstacles):
        c, s = math.cos(box.yaw), math.sin(box.yaw)
        dx, dy = gx - box.center[0], gy - box.center[1]
        lx, ly = dx * c + dy * s, -dx * s + dy * c
        occupied |= (np.abs(lx) <= box.size[0] / 2) & (np.abs(ly) <= box.size[1] / 2)
    dist_obj = ndimage.distance_transform_edt(~occupied) * resolution_m if occupied.any() else np.full((nx, ny), np.inf)
    dist_wall = np.minimum(np.minimum(gx, size[0] - gx), np.minimum(gy, size[1] - gy))
    clearance = np.minimum(dist_obj, dist_wall)
    free = (dist_obj > robot_radius_m) & (dist_wall > max(wall_margin_m, robot_radius_m))
    return FreeSpace(resolution_m, clearance, free, robot_radius_m)


def _walkable(fs: FreeSpace, room_area: float) -> bool:
    """Enough floor left for the camera path: one connected free region, at least 25% of the room."""
    labels, n = ndimage.label(fs.free)
    if n == 0:
        return False
    counts = np.bincount(labels.ravel())[1:]
    largest = counts.max() * fs.resolution_m**2
    return bool(largest >= 0.25 * room_area and counts.max() >= 0.92 * counts.sum())


# ----------------------------------------------------------------------------------------------
# Layout generation
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Slot:
    label: str
    place: str  # "wall" | "corner" | "center" | "around:<label>" | "beside:<label>" | "front:<label>" | "on:<label>"
    prob: float = 1.0
    small: bool = False


# Room themes: ordered slots (the core first) so that relations like "the chair next to the table" or
# "the lamp on the nightstand" occur naturally. Extras fill a layout up to its object count.
_THEMES: dict[str, tuple[_Slot, ...]] = {
    "dining": (
        _Slot("table", "center"), _Slot("chair", "around:table"), _Slot("chair", "around:table"),
        _Slot("chair", "around:table", 0.8), _Slot("chair", "around:table", 0.5), _Slot("cabinet", "wall"),
        _Slot("plant", "on:table", 0.5, small=True), _Slot("shelf", "wall", 0.8), _Slot("lamp", "corner", 0.7),
    ),
    "living": (
        _Slot("sofa", "wall"), _Slot("table", "front:sofa", 0.9, small=True), _Slot("cabinet", "wall"),
        _Slot("tv", "on:cabinet"), _Slot("armchair", "wall", 0.8), _Slot("lamp", "corner", 0.8),
        _Slot("plant", "corner", 0.8), _Slot("shelf", "wall", 0.6),
    ),
    "bedroom": (
        _Slot("bed", "wall"), _Slot("nightstand", "beside:bed"), _Slot("nightstand", "beside:bed", 0.7),
        _Slot("lamp", "on:nightstand", 0.9, small=True), _Slot("cabinet", "wall"), _Slot("desk", "wall", 0.6),
        _Slot("chair", "front:desk"), _Slot("trash can", "corner", 0.6),
    ),
    "office": (
        _Slot("desk", "wall"), _Slot("tv", "on:desk", 0.9, small=True), _Slot("chair", "front:desk"),
        _Slot("desk", "wall", 0.6), _Slot("chair", "front:desk"), _Slot("shelf", "wall"), _Slot("cabinet", "wall", 0.7),
        _Slot("trash can", "corner"), _Slot("table", "center", 0.5), _Slot("chair", "around:table"),
    ),
}
_EXTRAS: tuple[_Slot, ...] = (
    _Slot("box", "wall"), _Slot("box", "corner"), _Slot("plant", "corner"), _Slot("trash can", "wall"),
    _Slot("lamp", "corner"), _Slot("chair", "wall"), _Slot("shelf", "wall"), _Slot("cabinet", "wall"),
    _Slot("armchair", "corner"), _Slot("nightstand", "wall"), _Slot("box", "on:cabinet", small=True),
    _Slot("plant", "on:cabinet", small=True), _Slot("lamp", "on:desk", small=True),
    _Slot("box", "on:shelf", small=True),
)

_CLEARANCE_M = 0.06  # gap kept between neighbouring objects' footprints
_WALL_GAP_M = 0.03  # gap between a wall-standing object's back and the wall


def _wall_pose(size, wall: str, s: float, depth: float) -> tuple[float, float, float]:
    """(x, y, yaw) of an object whose back touches ``wall`` at position ``s`` along it."""
    d = _WALL_GAP_M + depth / 2
    if wall == "north":
        return s, size[1] - d, 0.0
    if wall == "south":
        return s, d, math.pi
    if wall == "east":
        return size[0] - d, s, -math.pi / 2
    return d, s, math.pi / 2  # west


def _door_zones(size, openings: list[Opening]) -> tuple[OrientedBox3D, ...]:
    """Keep-out boxes in front of doors (1.1 m deep) so the room stays enterable."""
    zones = []
    for o in openings:
        if o.kind != "door":
            continue
        s = o.offset_m + o.width_m / 2
        w = o.width_m + 0.3
        x, y, yaw = _wall_pose(size, o.wall, s, 1.1 - _WALL_GAP_M)
        zones.append(OrientedBox3D((x, y, size[2] / 2), (w, 1.1, size[2]), yaw))
    return tuple(zones)


def _random_openings(rng: np.random.Generator, size) -> list[Opening]:
    walls = list(WALLS)
    order = rng.permutation(4)
    door_wall = walls[order[0]]
    length = _wall_length(size, door_wall)
    openings = [Opening("door", door_wall, round(float(rng.uniform(0.3, length - 1.2)), 3), 0.9, 0.0, 2.05)]
    for k in range(1 + int(rng.random() < 0.5)):
        wall = walls[order[1 + k]]
        length = _wall_length(size, wall)
        width = min(float(rng.uniform(0.9, 1.5)), length - 0.8)
        if width < 0.5:  # a wall too short for a window
            continue
        offset = round(float(rng.uniform(0.4, length - width - 0.4)), 3)
        openings.append(Opening("window", wall, offset, round(width, 3), 0.9, 2.1))
    return openings


def _fits(box: OrientedBox3D, placed: list[GroundTruthObject], size, zones: tuple[OrientedBox3D, ...],
          on_floor: bool) -> bool:
    if _outside_room(box, size, tol=0.0):
        return False
    # Grow the footprint by the clearance and shave 1 mm off the height so stacked objects may touch.
    grown = OrientedBox3D(box.center, (box.size[0] + 2 * _CLEARANCE_M, box.size[1] + 2 * _CLEARANCE_M,
                                       box.size[2] - 0.002), box.yaw)
    others = [p.box for p in placed] + (list(zones) if on_floor else [])
    lo, hi = grown.aabb()
    for other in others:
        olo, ohi = other.aabb()
        # Cheap axis-aligned rejection first; the exact yawed-box overlap only for the close pairs.
        if np.any(hi <= olo) or np.any(ohi <= lo):
            continue
        if box_iou(grown, other) > 0.0:
            return False
    return True


def _candidate(rng: np.random.Generator, slot: _Slot, spec: CategorySpec, size, placed: list[GroundTruthObject],
               ) -> Optional[tuple[tuple[float, float, float], tuple[float, float, float], float]]:
    """One random pose (center, size, yaw) for ``slot``, or None when its anchor does not exist."""
    obj_size = spec.sample_size(rng, small=slot.small)
    dx, dy, dz = obj_size
    place, _, anchor_label = slot.place.partition(":")
    if place in ("wall", "corner"):
        wall = WALLS[int(rng.integers(4))]
        length = _wall_length(size, wall)
        lo, hi = dx / 2 + 0.02, length - dx / 2 - 0.02
        if hi <= lo:
            return None
        s = float(rng.uniform(lo, hi)) if place == "wall" else (lo if rng.random() < 0.5 else hi)
        x, y, yaw = _wall_pose(size, wall, s, dy)
        return (x, y, dz / 2), obj_size, yaw
    if place == "center":
        x = size[0] / 2 + float(rng.uniform(-0.35, 0.35))
        y = size[1] / 2 + float(rng.uniform(-0.3, 0.3))
        yaw = float(rng.choice([0.0, math.pi / 2])) + float(rng.uniform(-0.2, 0.2))
        return (x, y, dz / 2), obj_size, yaw
    anchors = [p for p in placed if p.label == anchor_label]
    if not anchors:
        return None
    a = anchors[int(rng.integers(len(anchors)))]
    ca, sa = math.cos(a.yaw), math.sin(a.yaw)
    ax, ay = np.array([ca, sa]), np.array([-sa, ca])  # anchor's local x and y axes in the world
    ac = np.asarray(a.center[:2])
    if place == "on":
        top = a.center[2] + a.size[2] / 2
        dx, dy = min(dx, a.size[0] - 0.06), min(dy, a.size[1] - 0.06)
        if dx <= 0.05 or dy <= 0.05 or top + dz > size[2]:
            return None
        spread_x = max(0.0, (a.size[0] - dx) / 2 - 0.03)
        spread_y = max(0.0, (a.size[1] - dy) / 2 - 0.03)
        ox, oy = float(rng.uniform(-spread_x, spread_x)), float(rng.uniform(-spread_y, spread_y))
        xy = ac + ox * ax + oy * ay
        return (float(xy[0]), float(xy[1]), top + dz / 2), (dx, dy, dz), a.yaw
    if place == "beside":
        side = 1.0 if rng.random() < 0.5 else -1.0
        xy = ac + side * (a.size[0] / 2 + 0.08 + dx / 2) * ax + (a.size[1] / 2 - dy / 2) * ay
        return (float(xy[0]), float(xy[1]), dz / 2), obj_size, a.yaw
    if place == "front":
        xy = ac - (a.size[1] / 2 + 0.12 + dy / 2) * ay + float(rng.uniform(-0.15, 0.15)) * ax
        # A chair in front of a desk faces the desk (its front towards the desk); a coffee table keeps the yaw.
        yaw = a.yaw + math.pi if spec.label in ("chair", "armchair") else a.yaw
        return (float(xy[0]), float(xy[1]), dz / 2), obj_size, yaw
    if place == "around":
        k = int(rng.integers(4))
        normal = [ax, -ax, ay, -ay][k]
        half_n = a.size[0] / 2 if k < 2 else a.size[1] / 2
        half_t = a.size[1] / 2 if k < 2 else a.size[0] / 2
        tangent = np.array([-normal[1], normal[0]])
        xy = ac + (half_n + 0.1 + dy / 2) * normal + float(rng.uniform(-half_t * 0.5, half_t * 0.5)) * tangent
        u = -normal  # chair -> table direction; the chair's front (local -y) must point along it
        yaw = math.atan2(u[0], -u[1])
        return (float(xy[0]), float(xy[1]), dz / 2), obj_size, yaw
    raise ValueError(f"unknown placement {slot.place!r}")


def _furnish(rng: np.random.Generator, n_objects: Optional[int], room_size) -> RoomLayout:
    size = tuple(float(v) for v in room_size) if room_size is not None else (
        round(float(rng.uniform(5.5, 7.0)), 2), round(float(rng.uniform(4.5, 5.6)), 2), DEFAULT_ROOM_HEIGHT_M)
    theme = sorted(_THEMES)[int(rng.integers(len(_THEMES)))]
    target = int(n_objects) if n_objects is not None else int(rng.integers(8, 13))
    openings = _random_openings(rng, size)
    zones = _door_zones(size, openings)
    room_area = size[0] * size[1]
    placed: list[GroundTruthObject] = []
    slots = [s for s in _THEMES[theme] if rng.random() < s.prob]
    extras = [_EXTRAS[int(i)] for i in rng.integers(len(_EXTRAS), size=40)]
    budget = 400  # candidate poses per attempt; a crowded room fails fast instead of searching forever
    for slot in slots + extras:
        if len(placed) >= target or budget <= 0:
            break
        spec = CATEGORIES[slot.label]
        on_floor = not slot.place.startswith("on:")
        for _ in range(40):
            budget -= 1
            cand = _candidate(rng, slot, spec, size, placed)
            if cand is None:
                break
            center, obj_size, yaw = cand
            yaw = float(math.remainder(yaw, 2 * math.pi))
            box = OrientedBox3D(center, obj_size, yaw)
            if not _fits(box, placed, size, zones, on_floor):
                continue
            color = spec.colors[int(rng.integers(len(spec.colors)))]
            obj = GroundTruthObject(len(placed) + 1, spec.label, color,
                                    tuple(round(v, 4) for v in center), obj_size, round(yaw, 5))  # type: ignore[arg-type]
            if on_floor and not _walkable(free_space(size, placed + [obj], resolution_m=0.1), room_area):
                continue
            placed.append(obj)
            break
    if len(placed) < target:
        raise LayoutError(f"could place only {len(placed)} of {target} objects in a {size} m room")
    return RoomLayout(size, placed, openings, True, None, theme)  # type: ignore[arg-type]


def generate_layout(seed: int, n_objects: Optional[int] = None,
                    room_size: Optional[tuple[float, float, float]] = None) -> RoomLayout:
    """A furnished room, deterministic for ``seed``.

    ``n_objects`` defaults to 8-12 (by seed); ``room_size`` (x, y, z m) to about 6 x 5 x 2.7 m. A
    theme (dining, living, bedroom, office) chooses related objects (chairs around a table, a lamp on a
    nightstand), extras fill up the count; no two objects interpenetrate, all stay inside the room,
    door areas stay clear and the free floor stays one connected region for the camera path.
    Raises :class:`LayoutError` when the objects do not fit (ask for fewer or a larger room).
    """
    if n_objects is not None and not 1 <= int(n_objects) <= 40:
        raise LayoutError(f"n_objects must be within 1..40, got {n_objects}")
    if room_size is not None and (len(room_size) != 3 or min(room_size) < 1.5):
        raise LayoutError(f"room_size must be (x, y, z) metres, each >= 1.5, got {room_size}")
    if n_objects is not None and room_size is not None and 0.15 * n_objects > 0.5 * room_size[0] * room_size[1]:
        # Even the smallest objects (~0.15 m^2 each) would cover more than half of the floor.
        raise LayoutError(f"{n_objects} objects cannot fit a {room_size[0]} x {room_size[1]} m floor with walking "
                          "space; try fewer objects or a larger room")
    last: Optional[LayoutError] = None
    for attempt in range(12):
        rng = np.random.default_rng([int(seed), attempt])
        try:
            layout = _furnish(rng, n_objects, room_size)
        except LayoutError as exc:
            last = exc
            continue
        layout.seed = int(seed)
        validate_layout(layout)
        logger.debug("layout seed %d: %s theme, %d objects (attempt %d)", seed, layout.theme, len(layout.objects),
                     attempt)
        return layout
    raise LayoutError(f"seed {seed}: {last}; try fewer objects or a larger room")
