"""Writing a prompt to disk: the marked BEV, the marked frames and the messages as JSON.

``scene-vlm map`` calls :func:`write_prompt_artifacts` so users can see exactly what the model is
shown; the files are also handy for the README and for debugging a wrong answer.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..core.frame_selection import DEFAULT_N_FRAMES
from ..core.types import SceneSnapshot
from .prompts import build_prompt
from .types import Task

logger = logging.getLogger(__name__)


def _save_png(image: np.ndarray, path: Path) -> None:
    Image.fromarray(np.ascontiguousarray(image)).save(path)


def write_prompt_artifacts(
    snapshot: SceneSnapshot,
    out_dir: str | Path,
    question: str = "Describe the scene.",
    task: Task = Task.GROUNDING,
    n_frames: int = DEFAULT_N_FRAMES,
    image_size: int = 512,
    object_id: int = -1,
) -> dict[str, Any]:
    """Build the prompt of ``question`` and write it under ``out_dir``.

    Files: ``bev.png`` (marked BEV), ``bev_raw.png`` (without markers), ``frames/frame_XX_kfYYYYYY.png``
    (marked frames, prompt order) and ``prompt.json`` (the messages with each image replaced by its
    file name relative to ``out_dir``, plus frame ids, marker placements and timings).
    Returns ``{"out_dir", "bev", "bev_raw", "frames", "prompt_json", "frame_ids", "timings_ms"}`` (paths as str).
    """
    out = Path(out_dir)
    frames_dir = out / "frames"
    frames_dir.mkdir(parents=True, exist_ok=True)
    bundle = build_prompt(
        snapshot, question, task, n_frames=n_frames, object_id=object_id, image_size=image_size
    )

    bev_path = out / "bev.png"
    _save_png(bundle.bev_image, bev_path)
    raw_path = out / "bev_raw.png"
    _save_png(bundle.bev.image, raw_path)
    frame_paths = []
    for k, (kid, img) in enumerate(zip(bundle.frame_ids, bundle.marked_frames)):
        p = frames_dir / f"frame_{k:02d}_kf{kid:06d}.png"
        _save_png(img, p)
        frame_paths.append(p)

    names = [str(p.relative_to(out)) for p in frame_paths] + [str(bev_path.relative_to(out))]
    messages_json = []
    img_iter = iter(names)
    for msg in bundle.messages:
        content = []
        for part in msg["content"]:
            if part.get("type") == "image":
                content.append({"type": "image", "image": next(img_iter)})
            else:
                content.append(dict(part))
        messages_json.append({"role": msg["role"], "content": content})

    doc = {
        "task": bundle.task.value,
        "question": question,
        "text": bundle.text,
        "messages": messages_json,
        "frame_ids": bundle.frame_ids,
        "bev": {
            "size_px": bundle.bev.size_px,
            "bev_px_per_m": bundle.bev.bev_px_per_m,
            "origin_xy_m": [float(v) for v in bundle.bev.origin_xy_m],
            "floor_z_m": bundle.bev.floor_z_m,
            "height_cut_m": bundle.bev.height_cut_m,
            "markers": [{"instance_id": p.instance_id, "uv": list(p.uv)} for p in bundle.bev_placements],
        },
        "frame_markers": {
            str(kid): [{"instance_id": p.instance_id, "uv": list(p.uv), "depth_m": p.depth_m} for p in pl]
            for kid, pl in bundle.frame_placements.items()
        },
        "timings_ms": bundle.timings_ms,
    }
    prompt_path = out / "prompt.json"
    prompt_path.write_text(json.dumps(doc, indent=2))
    logger.info("wrote prompt artifacts (%d frames + BEV) to %s", len(frame_paths), out)
    return {
        "out_dir": str(out),
        "bev": str(bev_path),
        "bev_raw": str(raw_path),
        "frames": [str(p) for p in frame_paths],
        "prompt_json": str(prompt_path),
        "frame_ids": list(bundle.frame_ids),
        "timings_ms": dict(bundle.timings_ms),
    }
