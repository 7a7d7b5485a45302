"""Synthetic room layouts: categories, seeded generation, validation, JSON and ground-truth I/O."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from scene_vlm_ros.core.colors import COLOR_PALETTE
from scene_vlm_ros.core.geometry import box_iou
from scene_vlm_ros.core.types import GroundTruthObject
from scene_vlm_ros.datasets.synthetic import (
    CATEGORIES,
    KNOWN_LABELS,
    LayoutError,
    RoomLayout,
    canonical_label,
    free_space,
    generate_layout,
    layout_from_json,
    load_layout,
    object_parts_world,
    read_ground_truth,
    save_layout,
    validate_layout,
    write_ground_truth,
)

SEEDS = range(10)


@pytest.fixture(scope="module")
def layouts() -> list[RoomLayout]:
    return [generate_layout(s) for s in SEEDS]


def _room_json(objects: list[dict], size=(5.0, 4.0, 2.7)) -> dict:
    return {"room": {"size": list(size)}, "objects": objects}


def test_categories_are_plain_words_with_palette_colours() -> None:
    assert len(CATEGORIES) >= 12
    assert {"table", "chair", "sofa", "bed", "cabinet", "shelf", "desk", "lamp", "tv", "plant", "box",
            "trash can"} <= set(KNOWN_LABELS)
    for label, spec in CATEGORIES.items():
        assert spec.label == label and label == label.lower()
        assert spec.colors and all(c in COLOR_PALETTE for c in spec.colors)
        for lo, hi in spec.size:
            assert 0 < lo <= hi < 3.0
    assert canonical_label("Monitor") == "tv"
    assert canonical_label("trash_can") == "trash can"
    assert canonical_label("spaceship") is None


@pytest.mark.parametrize("label", KNOWN_LABELS)
def test_mesh_parts_stay_inside_the_object_box(label: str) -> None:
    # The rendered pixels of an object must lie in its ground-truth box, for any size and yaw.
    rng = np.random.default_rng(0)
    spec = CATEGORIES[label]
    for small in (False, True):
        size = spec.sample_size(rng, small=small)
        obj = GroundTruthObject(1, label, spec.colors[0], (2.0, 1.5, size[2] / 2), size, 0.7)
        parts = object_parts_world(obj)
        assert len(parts) >= 1
        verts = np.vstack([p.vertices for p in parts])
        assert obj.box.contains(verts, margin_m=1e-6).all(), label
        # And the parts fill the box: their extent reaches every side (within 2 cm, round parts 30%).
        local = (verts - np.asarray(obj.center)) @ obj.box.rotation()
        extent = local.max(axis=0) - local.min(axis=0)
        assert np.all(extent >= np.asarray(size) * 0.7 - 0.02), (label, extent, size)


def test_generation_is_deterministic_per_seed() -> None:
    a = generate_layout(7)
    b = generate_layout(7)
    assert a.to_json() == b.to_json()
    c = generate_layout(8)
    assert c.to_json() != a.to_json()


def test_generated_layouts_are_valid(layouts: list[RoomLayout]) -> None:
    labels = set()
    for layout in layouts:
        validate_layout(layout)
        X, Y, Z = layout.size
        assert 5.0 <= X <= 7.5 and 4.0 <= Y <= 6.0 and math.isclose(Z, 2.7)
        assert 8 <= len(layout.objects) <= 12
        assert [o.object_id for o in layout.objects] == list(range(1, len(layout.objects) + 1))
        for o in layout.objects:
            assert o.label in KNOWN_LABELS and o.color in CATEGORIES[o.label].colors
            lo, hi = o.box.aabb()
            assert np.all(lo >= -1e-6) and np.all(hi <= np.asarray(layout.size) + 1e-6), o
            # Objects stand on the floor or exactly on top of another object.
            bottom = o.center[2] - o.size[2] / 2
            tops = [p.center[2] + p.size[2] / 2 for p in layout.objects if p is not o]
            assert abs(bottom) < 1e-6 or any(abs(bottom - t) < 1e-3 for t in tops), o
        for i, a in enumerate(layout.objects):
            for b in layout.objects[:i]:
                assert box_iou(a.box, b.box) < 1e-6, (a, b)
        assert any(o.kind == "door" for o in layout.openings)
        labels |= {o.label for o in layout.objects}
    assert len(labels) >= 12, sorted(labels)


def test_layouts_repeat_categories_and_leave_walking_space(layouts: list[RoomLayout]) -> None:
    repeated = 0
    for layout in layouts:
        counts: dict[str, int] = {}
        for o in layout.objects:
            counts[o.label] = counts.get(o.label, 0) + 1
        repeated += any(c >= 2 for c in counts.values())
        fs = free_space(layout.size, layout.objects, resolution_m=0.1)
        free_area = fs.free.sum() * 0.01
        assert free_area >= 0.25 * layout.size[0] * layout.size[1]
    assert repeated >= 7


def test_chairs_are_placed_at_tables(layouts: list[RoomLayout]) -> None:
    pairs = 0
    for layout in layouts:
        tables = [o for o in layout.objects if o.label in ("table", "desk")]
        for chair in (o for o in layout.objects if o.label == "chair"):
            d = min((np.hypot(chair.center[0] - t.center[0], chair.center[1] - t.center[1]) for t in tables),
                    default=np.inf)
            pairs += d < 1.3
    assert pairs >= 5


def test_requested_count_and_room_size_are_honoured() -> None:
    layout = generate_layout(3, n_objects=5, room_size=(4.0, 3.5, 2.5))
    assert len(layout.objects) == 5 and layout.size == (4.0, 3.5, 2.5)
    validate_layout(layout)
    with pytest.raises(LayoutError, match="fewer objects or a larger room"):
        generate_layout(1, n_objects=30, room_size=(2.0, 2.0, 2.5))
    with pytest.raises(LayoutError, match="fewer objects or a larger room"):  # passes the area check, cannot fit
        generate_layout(1, n_objects=12, room_size=(2.5, 2.0, 2.5))
    with pytest.raises(LayoutError, match="n_objects"):
        generate_layout(1, n_objects=0)


def test_layout_json_loading_roundtrip(tmp_path, layouts: list[RoomLayout]) -> None:
    src = layouts[2]
    path = save_layout(src, tmp_path / "room.json")
    back = load_layout(path)
    assert back.objects == src.objects and back.size == src.size and back.openings == src.openings
    d = _room_json([
        {"label": "table", "color": "brown", "center": [2.5, 2.0, 0.375], "size": [1.2, 0.8, 0.75], "yaw": 0.3},
        {"label": "monitor", "color": "black", "center": [2.5, 2.0, 0.95], "size": [0.6, 0.2, 0.4]},
    ])
    layout = layout_from_json(d)
    assert [o.label for o in layout.objects] == ["table", "tv"]
    assert [o.object_id for o in layout.objects] == [1, 2]
    assert layout.objects[0].yaw == pytest.approx(0.3) and layout.objects[1].yaw == 0.0


def test_unknown_label_is_refused_naming_the_object() -> None:
    d = _room_json([
        {"label": "table", "center": [2.5, 2.0, 0.375], "size": [1.2, 0.8, 0.75]},
        {"label": "spaceship", "center": [1.0, 1.0, 0.5], "size": [0.5, 0.5, 1.0]},
    ])
    with pytest.raises(LayoutError, match=r"object #1 \('spaceship'\): unknown label"):
        layout_from_json(d)


def test_overlap_is_refused_naming_both_objects() -> None:
    d = _room_json([
        {"label": "table", "center": [2.5, 2.0, 0.375], "size": [1.2, 0.8, 0.75]},
        {"label": "chair", "center": [2.9, 2.2, 0.45], "size": [0.5, 0.5, 0.9], "yaw": 0.5},
    ])
    with pytest.raises(LayoutError, match=r"object #1 \(id 2, 'chair'\) overlaps object #0 \(id 1, 'table'\)"):
        layout_from_json(d)
    # Touching (a tv standing on the table) is not overlapping.
    d["objects"][1] = {"label": "tv", "center": [2.5, 2.0, 0.75 + 0.25], "size": [0.6, 0.2, 0.5]}
    layout_from_json(d)


def test_object_outside_the_room_is_refused_naming_it() -> None:
    d = _room_json([
        {"label": "sofa", "center": [4.5, 2.0, 0.4], "size": [1.8, 0.9, 0.8], "yaw": 1.5708},
        {"label": "shelf", "center": [1.0, 3.9, 1.0], "size": [1.0, 0.35, 2.0]},
    ])
    with pytest.raises(LayoutError, match=r"object #1 \(id 2, 'shelf'\) is outside the room"):
        layout_from_json(d)
    d["objects"][1]["center"] = [1.0, 3.5, 1.0]
    layout_from_json(d)
    d["objects"][1]["center"] = [1.0, 3.5, 1.8]  # through the ceiling
    with pytest.raises(LayoutError, match="outside the room"):
        layout_from_json(d)


def test_malformed_layout_files_are_refused(tmp_path) -> None:
    with pytest.raises(LayoutError, match="room"):
        layout_from_json({"objects": []})
    with pytest.raises(LayoutError, match="'center' and 'size'"):
        layout_from_json(_room_json([{"label": "box", "center": [1, 1]}]))
    with pytest.raises(LayoutError, match="colour"):
        layout_from_json(_room_json([{"label": "box", "color": "mauve", "center": [1, 1, 0.2], "size": [.3, .3, .4]}]))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(LayoutError, match="not valid JSON"):
        load_layout(bad)
    with pytest.raises(FileNotFoundError):
        load_layout(tmp_path / "missing.json")


def test_ground_truth_file_roundtrip(tmp_path, layouts: list[RoomLayout]) -> None:
    layout = layouts[4]
    path = write_ground_truth(layout, tmp_path / "scene.gt.json")
    raw = json.loads(path.read_text())
    assert raw["frame_id"] == "map" and raw["room"]["size"] == list(layout.size)
    assert set(raw["objects"][0]) == {"object_id", "label", "color", "center", "size", "yaw"}
    objects, size = read_ground_truth(path)
    assert objects == layout.objects
    assert size == layout.size
