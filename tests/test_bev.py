"""BEV rendering: golden image, pixel mapping, height cut, z-buffer, splatting, real kitchen data.

The golden PNGs in ``tests/golden/`` are the box room of
``scene_vlm_ros.commands.bench_prompt.build_box_scene`` rendered at 256 px. After an intended
change of the BEV or marker style, regenerate them with ``.venv/bin/python scripts/regen_golden.py``
and look at the new images before committing them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scene_vlm_ros.commands.bench_prompt import CEILING_RGB, FLOOR_RGB, ROOM_XY_M, build_box_scene
from scene_vlm_ros.core.bev import estimate_floor_and_cut, render_bev
from scene_vlm_ros.core.markers import draw_bev_markers
from scene_vlm_ros.core.types import SceneSnapshot

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def room() -> SceneSnapshot:
    return build_box_scene()


def _cloud(points, colors) -> SceneSnapshot:
    pts, cols = np.asarray(points, np.float32), np.asarray(colors, np.uint8)
    return SceneSnapshot(0.0, "map", pts, cols, n_frames_integrated=1)


def _assert_close_to_golden(image: np.ndarray, name: str) -> None:
    golden = np.asarray(Image.open(GOLDEN / name).convert("RGB"))
    assert image.shape == golden.shape, f"{name}: shape {image.shape} != golden {golden.shape}"
    diff = np.abs(image.astype(np.int16) - golden.astype(np.int16)).max(axis=2)
    assert diff.mean() < 2.0, f"{name}: mean abs diff {diff.mean():.2f} (regenerate: scripts/regen_golden.py)"
    assert (diff > 40).mean() < 0.01, f"{name}: {(diff > 40).mean():.2%} pixels differ by > 40"


def test_bev_matches_golden(room):
    bev = render_bev(room, size_px=256)
    _assert_close_to_golden(bev.image, "bev_box_room_256.png")


def test_bev_with_markers_matches_golden(room):
    bev = render_bev(room, size_px=256)
    marked, _ = draw_bev_markers(bev, room)
    _assert_close_to_golden(marked, "bev_box_room_markers_256.png")


def test_square_black_background_uniform_scale_and_centred(room):
    bev = render_bev(room, size_px=200, margin_m=0.2)
    img = bev.image
    assert img.shape == (200, 200, 3) and img.dtype == np.uint8
    assert np.all(img[0] == 0) and np.all(img[-1] == 0), "background (outside the room) must be black"
    rows, cols = np.nonzero(img.any(axis=2))
    # The room is 4 m x 3 m: with one scale on both axes its drawn extent keeps that 4:3 ratio.
    w_px, h_px = cols.max() - cols.min(), rows.max() - rows.min()
    assert w_px / h_px == pytest.approx(ROOM_XY_M[0] / ROOM_XY_M[1], rel=0.05)
    assert w_px == pytest.approx(ROOM_XY_M[0] * bev.bev_px_per_m, abs=3)
    # Centred on both axes.
    assert (cols.min() + cols.max()) / 2 == pytest.approx(99.5, abs=2)
    assert (rows.min() + rows.max()) / 2 == pytest.approx(99.5, abs=2)


def test_world_px_mapping_round_trips_and_north_is_up(room):
    bev = render_bev(room, size_px=256)
    pts = np.array([[0.5, 0.5], [3.0, 2.0], [1.5, 2.5]])
    uv = bev.world_to_px(pts)
    np.testing.assert_allclose(bev.px_to_world(uv), pts, atol=1e-9)
    assert uv[1, 0] > uv[0, 0], "+x world must go right"
    assert uv[1, 1] < uv[0, 1], "+y world must go up (smaller v)"
    # The pixel under the table centre shows the table top (brown, lit from above).
    table = room.instance(1)
    u, v = np.rint(bev.world_to_px(table.center[None, :2])[0]).astype(int)
    np.testing.assert_array_equal(bev.image[v, u], (125, 80, 45))


def test_default_height_cut_removes_the_ceiling(room):
    bev = render_bev(room, size_px=256)
    assert bev.floor_z_m == pytest.approx(0.0, abs=0.02)
    assert bev.height_cut_m < 2.6
    u, v = np.rint(bev.world_to_px(np.array([[3.5, 1.2]]))[0]).astype(int)  # open floor
    np.testing.assert_array_equal(bev.image[v, u], FLOOR_RGB)
    assert not np.all(bev.image == CEILING_RGB, axis=2).any(), "no ceiling pixel may survive the cut"
    # With a cut above the ceiling, the ceiling (the highest surface) covers the room.
    high = render_bev(room, size_px=256, height_cut_m=3.0)
    np.testing.assert_array_equal(high.image[v, u], CEILING_RGB)


def test_estimate_floor_and_cut_detects_a_low_ceiling():
    rng = np.random.default_rng(0)
    floor = rng.normal(0.0, 0.005, 5000)
    furniture = rng.uniform(0.0, 1.0, 2000)
    for ceiling_z, expect in ((2.5, 2.0), (1.8, 1.65)):
        ceiling = rng.normal(ceiling_z, 0.005, 3000)
        f, cut = estimate_floor_and_cut(np.concatenate([floor, furniture, ceiling]))
        assert f == pytest.approx(0.0, abs=0.03)
        assert cut == pytest.approx(expect, abs=0.05)
    assert estimate_floor_and_cut(floor, height_cut_m=1.2)[1] == 1.2


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_highest_point_wins_whatever_the_order(order):
    pts = np.array([[0.0, 0.0, 0.1], [0.0, 0.0, 0.9], [1.0, 1.0, 0.0], [-1.0, -1.0, 0.0]])
    cols = np.array([[255, 0, 0], [0, 0, 255], [9, 9, 9], [9, 9, 9]])
    idx = [*order, 2, 3]
    bev = render_bev(_cloud(pts[idx], cols[idx]), size_px=65, height_cut_m=2.0, splat_radius_px=0)
    u, v = np.rint(bev.world_to_px(np.array([[0.0, 0.0]]))[0]).astype(int)
    np.testing.assert_array_equal(bev.image[v, u], (0, 0, 255))


def test_splatting_closes_a_sparse_floor(room):
    # 512 px over ~4.4 m is ~3.5 px between the 3 cm floor samples: without splatting the floor
    # is a grid of dots, with the density-derived radius it must be closed.
    inner = (slice(None), slice(None))
    for radius, expect_closed in ((None, True), (0, False)):
        bev = render_bev(room, size_px=512, splat_radius_px=radius)
        lo = np.rint(bev.world_to_px(np.array([[0.1, ROOM_XY_M[1] - 0.1]]))[0]).astype(int)
        hi = np.rint(bev.world_to_px(np.array([[ROOM_XY_M[0] - 0.1, 0.1]]))[0]).astype(int)
        inner = (slice(lo[1], hi[1]), slice(lo[0], hi[0]))
        holes = (bev.image[inner] == 0).all(axis=2).mean()
        if expect_closed:
            assert bev.splat_radius_px >= 2
            assert holes == 0.0, f"{holes:.2%} of the room interior is black"
        else:
            assert holes > 0.3


def test_bad_inputs_raise_specific_errors(room):
    with pytest.raises(ValueError, match="size_px"):
        render_bev(room, size_px=8)
    with pytest.raises(ValueError, match="extent_xy_m"):
        render_bev(room, extent_xy_m=(1.0, 0.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="margin_m"):
        render_bev(room, margin_m=-1.0)


def test_empty_and_fixed_extent():
    empty = render_bev(_cloud(np.zeros((0, 3)), np.zeros((0, 3))), size_px=32)
    assert empty.image.shape == (32, 32, 3) and not empty.image.any()
    pts = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    bev = render_bev(_cloud(pts, [[200, 0, 0], [0, 200, 0]]), size_px=101, extent_xy_m=(-1, -1, 3, 3), margin_m=0.0)
    assert bev.bev_px_per_m == pytest.approx(25.0)
    np.testing.assert_allclose(bev.world_to_px(np.array([[1.0, 1.0]])), [[50.0, 50.0]])


def test_real_kitchen_bev_is_gravity_aligned_and_filled(kitchen_dir):
    """Real 7-Scenes frames back-projected: the floor plan fills a good part of the image."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("regen_golden", Path(__file__).parents[1] / "scripts/regen_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    snap = mod.kitchen_snapshot(kitchen_dir, stride=8, max_frames=20)
    bev = render_bev(snap, size_px=256)
    filled = bev.image.any(axis=2).mean()
    assert filled > 0.15, f"only {filled:.1%} of the kitchen BEV is drawn"
    # Gravity-aligned: the kept points span a plausible height range above the floor.
    assert 0.5 < bev.height_cut_m - bev.floor_z_m <= 2.0 + 1e-6
