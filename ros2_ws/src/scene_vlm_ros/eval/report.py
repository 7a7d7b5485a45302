"""``report.html`` of ``scene-vlm eval``: one self-contained page a person would rather look at than read.

Contents, top to bottom: headline numbers; the scene's BEV (:func:`~scene_vlm_ros.core.bev.render_bev`
+ the object markers the model sees) with every box question's target drawn in green (answered
right) or red (wrong), the wrong answer's box in yellow; per-task/per-split tables; a latency
histogram; the mapping rate over the replay; for a few misses, marked keyframes with the target's
box projected in red; the table of every answer. Images are embedded as base64 PNG, drawn with
numpy/OpenCV (no plotting library needed). No rclpy.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np
from PIL import Image

from ..core.bev import BevImage, render_bev
from ..core.geometry import project_points
from ..core.markers import draw_bev_markers, mark_frame, prepare_instance_samples
from ..core.types import Keyframe, OrientedBox3D, SceneSnapshot

logger = logging.getLogger(__name__)

GREEN = (40, 200, 60)
RED = (230, 40, 40)
YELLOW = (250, 210, 30)
ORANGE = (245, 140, 20)
INK = (40, 40, 40)
#: Box edges as corner-index pairs of :meth:`OrientedBox3D.corners` (sx, sy, sz loops, z fastest).
_BOX_EDGES = ((0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7))


def png_data_url(image: np.ndarray) -> str:
    """``data:image/png;base64,...`` of an (H, W, 3) uint8 RGB image."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _box_from_json(d: Mapping[str, Any]) -> OrientedBox3D:
    return OrientedBox3D(tuple(d["center"]), tuple(d["size"]), float(d.get("yaw", 0.0)))  # type: ignore[arg-type]


def _footprint_px(bev: BevImage, box: OrientedBox3D) -> np.ndarray:
    corners = box.corners()[::2, :2]  # z-bottom corners: (-,-), (-,+), (+,-), (+,+)
    quad = corners[[0, 1, 3, 2]]
    return np.round(bev.world_to_px(quad)).astype(np.int32)


def draw_bev_results(snapshot: SceneSnapshot, rows: Sequence[Mapping[str, Any]], size_px: int = 768) -> np.ndarray:
    """The marked BEV with every box question's target: green when all its questions were answered
    right, red when all were wrong, orange when mixed, labelled ``hits/questions``; the boxes that
    wrong answers gave are drawn thin in yellow."""
    bev = render_bev(snapshot, size_px=size_px)
    image, _ = draw_bev_markers(bev, snapshot)
    image = np.ascontiguousarray(image)
    targets: dict[tuple, list[bool]] = {}
    boxes: dict[tuple, OrientedBox3D] = {}
    for row in rows:
        if not row.get("targets") or row.get("hit") is None:
            continue
        if not row["hit"]:
            for b in row.get("boxes", [])[:3]:
                cv2.polylines(image, [_footprint_px(bev, _box_from_json(b))], True, YELLOW, 1, cv2.LINE_AA)
        for t in row["targets"]:
            box = _box_from_json(t)
            key = tuple(round(float(v), 3) for v in (*box.center, *box.size, box.yaw))
            targets.setdefault(key, []).append(bool(row["hit"]))
            boxes[key] = box
    for key, hits in targets.items():
        n_hit = sum(hits)
        color = GREEN if n_hit == len(hits) else (RED if n_hit == 0 else ORANGE)
        quad = _footprint_px(bev, boxes[key])
        cv2.polylines(image, [quad], True, color, 2, cv2.LINE_AA)
        label = f"{n_hit}/{len(hits)}"
        x, y = int(quad[:, 0].min()), max(12, int(quad[:, 1].min()) - 4)
        cv2.putText(image, label, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 3, cv2.LINE_AA)
        cv2.putText(image, label, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1, cv2.LINE_AA)
    return image


def _draw_box_in_frame(image: np.ndarray, keyframe: Keyframe, box: OrientedBox3D, color: tuple[int, int, int]) -> bool:
    """Project the box's 12 edges into the (possibly resized) frame image; False when it is behind the camera."""
    uv, z = project_points(box.corners(), keyframe.intrinsics, keyframe.T_world_camera)
    if np.any(z <= 0.05):
        return False
    sx = image.shape[1] / keyframe.intrinsics.width
    sy = image.shape[0] / keyframe.intrinsics.height
    pts = np.round(np.stack([(uv[:, 0] + 0.5) * sx - 0.5, (uv[:, 1] + 0.5) * sy - 0.5], axis=1)).astype(np.int32)
    for a, b in _BOX_EDGES:
        cv2.line(image, tuple(int(v) for v in pts[a]), tuple(int(v) for v in pts[b]), color, 2, cv2.LINE_AA)
    return True


def frames_showing(snapshot: SceneSnapshot, box: OrientedBox3D, n: int = 3) -> list[Keyframe]:
    """Up to ``n`` keyframes whose view contains the box centre, nearest first, spread over time."""
    scored = []
    for kf in snapshot.keyframes:
        uv, z = project_points(np.asarray(box.center)[None, :], kf.intrinsics, kf.T_world_camera)
        u, v = uv[0]
        if z[0] > 0.1 and 0 <= u < kf.intrinsics.width and 0 <= v < kf.intrinsics.height:
            scored.append((float(z[0]), kf))
    scored.sort(key=lambda t: t[0])
    picked: list[Keyframe] = []
    for _, kf in scored:
        if all(abs(kf.stamp_s - p.stamp_s) > 1.0 for p in picked) or len(scored) <= n:
            picked.append(kf)
        if len(picked) == n:
            break
    return picked


def miss_frames(snapshot: SceneSnapshot, row: Mapping[str, Any], n: int = 3, image_size: int = 320,
                samples: Any = None) -> list[np.ndarray]:
    """Marked keyframes of a missed box question: target box in red, the answer's box in yellow."""
    if not row.get("targets"):
        return []
    target = _box_from_json(row["targets"][0])
    samples = prepare_instance_samples(snapshot) if samples is None else samples
    out = []
    for kf in frames_showing(snapshot, target, n):
        img, _ = mark_frame(kf, snapshot, samples=samples, image_size=image_size)
        img = np.ascontiguousarray(img)
        for b in row.get("boxes", [])[:1]:
            _draw_box_in_frame(img, kf, _box_from_json(b), YELLOW)
        _draw_box_in_frame(img, kf, target, RED)
        out.append(img)
    return out


def _axes(width: int, height: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    canvas = np.full((height, width, 3), 255, np.uint8)
    left, top, right, bottom = 56, 16, width - 16, height - 40
    cv2.line(canvas, (left, bottom), (right, bottom), INK, 1)
    cv2.line(canvas, (left, top), (left, bottom), INK, 1)
    return canvas, (left, top, right, bottom)


def _text(img: np.ndarray, s: str, org: tuple[int, int], scale: float = 0.4) -> None:
    cv2.putText(img, s, org, cv2.FONT_HERSHEY_SIMPLEX, scale, INK, 1, cv2.LINE_AA)


def histogram_image(values: Sequence[float], label: str, width: int = 560, height: int = 240,
                    bins: int = 20) -> np.ndarray:
    """A bar histogram of ``values`` with its axis labelled ``label``."""
    canvas, (left, top, right, bottom) = _axes(width, height)
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    if not len(v):
        _text(canvas, "no data", (left + 10, top + 20))
        return canvas
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        hi = lo + max(1e-3, abs(lo) * 0.1)
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    peak = max(1, int(counts.max()))
    bar_w = (right - left) / bins
    for i, c in enumerate(counts):
        x0 = int(left + i * bar_w + 1)
        x1 = int(left + (i + 1) * bar_w - 1)
        y0 = int(bottom - (bottom - top) * c / peak)
        cv2.rectangle(canvas, (x0, y0), (max(x0, x1), bottom - 1), (70, 130, 200), -1)
    for frac in (0.0, 0.5, 1.0):
        tick = f"{lo + frac * (hi - lo):.3g}"
        x = int(left + frac * (right - left)) - int(frac * 7 * len(tick))  # the last tick ends at the axis end
        _text(canvas, tick, (x, bottom + 16))
    _text(canvas, str(peak), (8, top + 8))
    _text(canvas, "0", (40, bottom))
    _text(canvas, label, (left + (right - left) // 2 - 40, bottom + 34))
    return canvas


def line_image(xs: Sequence[float], ys: Sequence[float], xlabel: str, ylabel: str, width: int = 560,
               height: int = 240) -> np.ndarray:
    """A line plot of ``ys`` over ``xs`` (both finite) with labelled axes."""
    canvas, (left, top, right, bottom) = _axes(width, height)
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    if len(x) < 2:
        _text(canvas, "not enough samples", (left + 10, top + 20))
        return canvas
    x0, x1 = float(x.min()), float(max(x.max(), x.min() + 1e-6))
    y1 = float(max(y.max(), 1e-6)) * 1.1
    px = left + (x - x0) / (x1 - x0) * (right - left)
    py = bottom - y / y1 * (bottom - top)
    pts = np.round(np.stack([px, py], axis=1)).astype(np.int32)
    cv2.polylines(canvas, [pts], False, (200, 90, 40), 2, cv2.LINE_AA)
    for frac in (0.0, 0.5, 1.0):
        label = f"{x0 + frac * (x1 - x0):.3g}"
        _text(canvas, label, (int(left + frac * (right - left)) - int(frac * 7 * len(label)), bottom + 16))
        _text(canvas, f"{frac * y1:.3g}", (6, int(bottom - frac * (bottom - top)) + 4))
    _text(canvas, xlabel, (left + (right - left) // 2 - 40, bottom + 34))
    _text(canvas, ylabel, (left + 6, top + 10))
    return canvas


def mapping_rate(timeline: Sequence[tuple[float, int]]) -> tuple[list[float], list[float]]:
    """``[(t_s, frames_integrated)]`` samples -> (times, frames/s between consecutive samples)."""
    ts, rates = [], []
    for (t0, n0), (t1, n1) in zip(timeline, timeline[1:]):
        if t1 > t0:
            ts.append(0.5 * (t0 + t1))
            rates.append((n1 - n0) / (t1 - t0))
    return ts, rates


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], classes: Optional[Sequence[str]] = None) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = []
    for i, r in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "" if v is None else str(v)


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3} tr.hit td:first-child{border-left:4px solid #28c83c}
tr.miss td:first-child{border-left:4px solid #e62828}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{background:#f6f8fa;border-radius:8px;padding:10px 14px}
.card b{font-size:20px;display:block} img{max-width:100%} .frames img{margin:2px;border:1px solid #ccc}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}
"""


def _headline(metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    cards = []
    keys = {"grounding": "acc@0.25", "multi_grounding": "f1@0.25", "qa": "EM", "spatial": "mra",
            "caption": "hit@0.25"}
    for task, m in metrics.get("tasks", {}).items():
        key = keys.get(task)
        overall = m["overall"]
        if key not in overall and task in ("qa", "spatial"):
            key = "mra" if "mra" in overall else "EM"
        if key in overall:
            cards.append((f"{task} {key} (n={int(overall['n'])})", f"{overall[key]:.3f}"))
    lat = metrics.get("latency", {})
    if lat:
        cards.append(("latency p50 / p95", f"{lat['p50_s']:.2f} / {lat['p95_s']:.2f} s"))
    counts = metrics.get("counts", {})
    cards.append(("asked / rejected / skipped",
                  f"{counts.get('asked', 0)} / {counts.get('rejected', 0)} / {counts.get('skipped', 0)}"))
    return cards


def build_report(
    metrics: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    snapshot: Optional[SceneSnapshot],
    timeline: Sequence[tuple[float, int]] = (),
    max_misses: int = 8,
    frames_per_miss: int = 3,
) -> tuple[str, dict[str, np.ndarray]]:
    """The HTML page and the images embedded in it (name -> RGB array, for tests and debugging)."""
    images: dict[str, np.ndarray] = {}
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>scene-vlm eval</title>"
             f"<style>{_CSS}</style></head><body>"]
    title = html.escape(f"scene-vlm eval: {metrics.get('source', '')}")
    sub = html.escape(f"backend {metrics.get('backend', '?')}, prompt profile {metrics.get('prompt_profile', '?')}, "
                      f"{metrics.get('mode', '?')} mode, query file {metrics.get('queries', '')} "
                      f"({metrics.get('query_format', '?')})")
    parts.append(f"<h1>{title}</h1><p>{sub}</p><div class='cards'>")
    parts += [f"<div class='card'>{html.escape(k)}<b>{html.escape(v)}</b></div>" for k, v in _headline(metrics)]
    parts.append("</div>")

    if snapshot is not None and not snapshot.is_empty:
        images["bev"] = draw_bev_results(snapshot, rows)
        parts.append("<h2>Scene (bird's-eye view)</h2><p class='legend'>target box:<span style='background:#28c83c'>"
                     "</span>answered right<span style='background:#e62828'></span>wrong"
                     "<span style='background:#f58c14'></span>some of its questions right"
                     "<span style='background:#fad21e'></span>a wrong answer's box; labels: questions answered "
                     "right / questions about that object; badges: the object IDs the model sees.</p>"
                     f"<img alt='BEV with results' src='{png_data_url(images['bev'])}'>")
    else:
        parts.append("<h2>Scene</h2><p>No scene snapshot was available for pictures.</p>")

    parts.append("<h2>Scores</h2>")
    for task, m in metrics.get("tasks", {}).items():
        keys = [k for k in m["overall"] if k != "n"]
        table_rows = [["overall", int(m["overall"]["n"]), *[m["overall"][k] for k in keys]]]
        table_rows += [[s, int(v["n"]), *[v.get(k) for k in keys]] for s, v in m["splits"].items()]
        parts.append(f"<h3>{html.escape(task)}</h3>" + _table(["split", "n", *keys], table_rows))
        parts.append("<p>error codes: " + html.escape(", ".join(f"{k} {v}" for k, v in m["error_codes"].items()))
                     + "</p>")
    bench = metrics.get("benchmark") or {}
    if bench:
        parts.append(f"<h3>Benchmark evaluator ({html.escape(str(bench.get('format')))})</h3><pre>"
                     + html.escape(json.dumps({k: v for k, v in bench.items() if k != "format"}, indent=1))
                     + "</pre>")
    if metrics.get("rejected") or metrics.get("skipped"):
        rej = [[k, v, "rejected", metrics.get("rejection_examples", {}).get(k, "")]
               for k, v in metrics.get("rejected", {}).items()]
        rej += [[k, v, "skipped", metrics.get("rejection_examples", {}).get(k, "")]
                for k, v in metrics.get("skipped", {}).items()]
        parts.append("<h3>Query records not asked</h3>" + _table(["reason", "count", "kind", "first example"], rej))

    latencies_ms = [1e3 * float(r["latency_s"]) for r in rows]
    images["latency"] = histogram_image(latencies_ms, "latency per query (ms)")
    parts.append(f"<h2>Latency</h2><img alt='latency histogram' src='{png_data_url(images['latency'])}'>")
    ts, rates = mapping_rate(timeline)
    parts.append("<h2>Mapping rate over the replay</h2>")
    if len(ts) >= 2:
        images["mapping_rate"] = line_image(ts, rates, "time since start (s)", "frames integrated / s")
        parts.append(f"<img alt='mapping rate' src='{png_data_url(images['mapping_rate'])}'>")
    mapping = metrics.get("mapping", {})
    if mapping:
        parts.append("<p>" + html.escape(", ".join(f"{k} {_fmt(v)}" for k, v in mapping.items()
                                                   if not isinstance(v, (dict, list)))) + "</p>")

    misses = [(k, r) for k, r in enumerate(rows) if r.get("hit") is False and r.get("targets")]
    if snapshot is not None and snapshot.keyframes and misses:
        parts.append(f"<h2>Misses ({len(misses)}; first {min(len(misses), max_misses)} shown)</h2>"
                     "<p>Marked keyframes that see the target: target box red, the answer's box yellow.</p>")
        samples = prepare_instance_samples(snapshot)
        for k, r in misses[:max_misses]:
            frames = miss_frames(snapshot, r, frames_per_miss, samples=samples)
            parts.append(f"<h3>#{k + 1} {html.escape(r['question'][:160])}</h3><p>answer: "
                         f"{html.escape(r['answer'][:200] or '(none)')} &middot; {html.escape(r['error_code'])}</p>")
            if not frames:
                parts.append("<p>No keyframe sees the target.</p>")
            for j, f in enumerate(frames):
                images[f"miss_{k + 1}_{j}"] = f
            parts.append("<div class='frames'>" + "".join(
                f"<img alt='frame' src='{png_data_url(f)}'>" for f in frames) + "</div>")

    header = ["#", "id", "task", "split", "question", "answer", "error", "IoU", "latency s"]
    table_rows = [[k + 1, r["id"], r["task"], r.get("split"), r["question"][:120], r["answer"][:80],
                   r["error_code"], r.get("iou"), r["latency_s"]] for k, r in enumerate(rows)]
    classes = ["hit" if r.get("hit") else ("miss" if r.get("hit") is False else "") for r in rows]
    parts.append("<h2>Answers</h2>" + _table(header, table_rows, classes))
    parts.append("</body></html>")
    return "".join(parts), images


def write_report(
    path: Path, metrics: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], snapshot: Optional[SceneSnapshot],
    timeline: Sequence[tuple[float, int]] = (),
) -> dict[str, np.ndarray]:
    """Write ``report.html`` to ``path``; returns the embedded images by name."""
    page, images = build_report(metrics, rows, snapshot, timeline)
    Path(path).write_text(page, encoding="utf-8")
    return images
