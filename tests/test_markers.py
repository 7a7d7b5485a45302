"""STO markers: placement on the BEV and on frames, occlusion, colours, resizing, legibility."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from scene_vlm_ros.commands.bench_prompt import build_box_scene
from scene_vlm_ros.core.bev import render_bev
from scene_vlm_ros.core.geometry import project_points
from scene_vlm_ros.core.markers import (
    badge_radius_px,
    draw_badge,
    draw_bev_markers,
    instance_visibility,
    mark_frame,
    marker_color,
    prepare_instance_samples,
)
from scene_vlm_ros.core.types import SceneSnapshot

# Keyframes of build_box_scene: 2 looks at the yellow box (id 4) straight through the tall cabinet
# (id 3); 3 sees the box from the side; 4 sees the bin (id 12) mostly hidden behind the table.
OCCLUDED_KF, SIDE_KF, PARTIAL_KF = 2, 3, 4
BOX_ID, CABINET_ID, BIN_ID = 4, 3, 12


@pytest.fixture(scope="module")
def room() -> SceneSnapshot:
    return build_box_scene()


def _badge_fill_pixels(image: np.ndarray, uv, instance_id: int) -> int:
    r = badge_radius_px(image.shape)
    u, v = int(round(uv[0])), int(round(uv[1]))
    patch = image[max(0, v - r) : v + r + 1, max(0, u - 2 * r) : u + 2 * r + 1]
    return int(np.all(patch == marker_color(instance_id), axis=2).sum())


def test_bev_markers_on_projected_centres(room):
    bev = render_bev(room, size_px=512)
    image, placements = draw_bev_markers(bev, room)
    assert sorted(p.instance_id for p in placements) == sorted(i.instance_id for i in room.instances)
    for p in placements:
        inst = room.instance(p.instance_id)
        expected = bev.world_to_px(inst.center[None, :2])[0]
        assert np.hypot(*(np.asarray(p.uv) - expected)) <= 2.0, f"instance {p.instance_id}"
        assert np.isnan(p.depth_m)
        r = badge_radius_px(image.shape)
        assert _badge_fill_pixels(image, p.uv, p.instance_id) > 0.5 * r * r, "badge not drawn at its placement"
    assert not np.array_equal(image, bev.image) and bev.image is not image, "markers go on a copy"


def test_frame_markers_land_on_projected_centres(room):
    kf = room.keyframe(0)
    image, placements = mark_frame(kf, room, anchor="center")
    got = {p.instance_id: p for p in placements}
    assert {1, 2, 5}.issubset(got), f"table, chair and sofa are in plain view of keyframe 0, got {sorted(got)}"
    r = badge_radius_px(image.shape)
    h, w = image.shape[:2]
    for iid, p in got.items():
        uv, z = project_points(room.instance(iid).center[None, :], kf.intrinsics, kf.T_world_camera)
        if r <= uv[0, 0] <= w - 1 - r and r <= uv[0, 1] <= h - 1 - r:
            assert np.hypot(*(np.asarray(p.uv) - uv[0])) <= 2.0, f"instance {iid}"
        assert p.depth_m == pytest.approx(z[0])
        assert _badge_fill_pixels(image, p.uv, iid) > 0.5 * r * r
    # Default anchor: same place for objects seen around their centre.
    _, auto = mark_frame(kf, room)
    auto_uv = {p.instance_id: p.uv for p in auto}
    for iid in (1, 2):
        np.testing.assert_allclose(auto_uv[iid], got[iid].uv, atol=1e-9)


def test_occluded_object_gets_no_marker(room):
    kf = room.keyframe(OCCLUDED_KF)
    uv, z = project_points(room.instance(BOX_ID).center[None, :], kf.intrinsics, kf.T_world_camera)
    h, w = kf.depth_m.shape
    assert z[0] > 0 and 0 <= uv[0, 0] < w and 0 <= uv[0, 1] < h, "setup: the box centre is inside the frame"
    _, placements = mark_frame(kf, room)
    ids = {p.instance_id for p in placements}
    assert BOX_ID not in ids, "the box hidden behind the cabinet must not be marked"
    assert CABINET_ID in ids
    _, side = mark_frame(room.keyframe(SIDE_KF), room)
    assert BOX_ID in {p.instance_id for p in side}, "seen from the side the box is marked"


def test_half_hidden_object_marked_on_its_visible_part(room):
    kf = room.keyframe(PARTIAL_KF)
    samples = prepare_instance_samples(room)
    vis = instance_visibility(kf, samples)
    i = int(np.flatnonzero(samples.instance_ids == BIN_ID)[0])
    assert vis.visible[i]
    _, placements = mark_frame(kf, room, samples=samples, visibility=vis)
    p = next(p for p in placements if p.instance_id == BIN_ID)
    lo, hi = vis.visible_uv_min[i], vis.visible_uv_max[i]
    r = badge_radius_px(kf.color_rgb.shape)
    assert np.all(np.asarray(p.uv) >= lo - r) and np.all(np.asarray(p.uv) <= hi + r)
    _, centred = mark_frame(kf, room, samples=samples, visibility=vis, anchor="center")
    c = next(q for q in centred if q.instance_id == BIN_ID)
    assert not np.allclose(c.uv, p.uv), "the centre lies on the occluding table; auto must move off it"


def test_no_depth_means_no_markers(room):
    kf = dataclasses.replace(room.keyframe(0), depth_m=np.zeros_like(room.keyframe(0).depth_m))
    image, placements = mark_frame(kf, room)
    assert placements == []
    np.testing.assert_array_equal(image, kf.color_rgb)


def test_resized_frame_scales_placements(room):
    kf = room.keyframe(0)
    big, p_big = mark_frame(kf, room, anchor="center")
    small, p_small = mark_frame(kf, room, anchor="center", image_size=160)
    assert big.shape == (240, 320, 3) and small.shape == (120, 160, 3)
    r_s = badge_radius_px(small.shape)
    small_uv = {p.instance_id: np.asarray(p.uv) for p in p_small}
    for p in p_big:
        exp = (np.asarray(p.uv) + 0.5) / 2.0 - 0.5
        if r_s <= exp[0] <= 159 - r_s and r_s <= exp[1] <= 119 - r_s:
            np.testing.assert_allclose(small_uv[p.instance_id], exp, atol=1.0)


def test_marker_colours_deterministic_and_distinct():
    colours = [marker_color(i) for i in range(64)]
    assert colours == [marker_color(i) for i in range(64)]
    assert len(set(colours)) == 64
    for c in colours:
        assert all(isinstance(v, int) and 0 <= v <= 255 for v in c)
    # Neighbouring ids must not look alike (golden-ratio hue steps).
    for a, b in zip(colours, colours[1:]):
        assert np.abs(np.subtract(a, b)).sum() > 60


def test_badge_is_legible_at_512():
    image = np.full((512, 512, 3), 128, np.uint8)
    draw_badge(image, (100.0, 100.0), 7)
    draw_badge(image, (300.0, 300.0), 123)
    r = badge_radius_px(image.shape)
    assert r >= 14
    for uv, iid in (((100, 100), 7), ((300, 300), 123)):
        patch = image[uv[1] - r - 4 : uv[1] + r + 5, uv[0] - 3 * r : uv[0] + 3 * r]
        white = np.all(patch == 255, axis=2).sum()
        black = np.all(patch == 0, axis=2).sum()
        assert white > 20 and black > 20, "rim/number and its outline must contrast"
        assert np.all(patch == marker_color(iid), axis=2).sum() > r * r
    # Three digits get a wider badge than one.
    row = image[300]
    assert np.count_nonzero(np.any(row != 128, axis=1)) > 2 * r + 4


def test_depth_at_another_resolution_than_colour(room):
    kf = room.keyframe(OCCLUDED_KF)
    half = dataclasses.replace(kf, depth_m=kf.depth_m[::2, ::2])
    _, placements = mark_frame(half, room)
    ids = {p.instance_id for p in placements}
    assert CABINET_ID in ids and BOX_ID not in ids
    _, full = mark_frame(kf, room)
    for p, q in zip(sorted(placements, key=lambda p: p.instance_id), sorted(full, key=lambda p: p.instance_id)):
        np.testing.assert_allclose(p.uv, q.uv, atol=1e-9)
