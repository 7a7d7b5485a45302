"""On-disk layout of a built data set (deterministic: the same scans and seed give the same bytes).

::

    <output_dir>/
      build_config.yaml                  the resolved BuildDataConfig
      manifest.json                      counts merged over every part built so far
      manifests/part-<i>-of-<n>.json     what one ``--shard i/n`` run built (counts, drops, scenes)
      shards/<source>/<scene_id>.jsonl   one JSON sample per line, in a fixed order
      images/<ab>/<sha256>.png           every image once, named by the SHA-256 of its pixels+shape

A shard is one scene, so the files do not depend on how many machines built the set: ``--shard
i/n`` builds the scenes whose position in the sorted scene list is ``i`` modulo ``n``. A sample
references its images by content hash; the same marked frame shared by many questions of a
scene is stored once.

A sample (one JSON object, keys sorted)::

    {"id", "source", "scene_id", "task", "family",
     "messages": [{"role", "content": [{"type": "image", "image": <hash>} | {"type": "text", "text"}]}],
     "answer": str | null,                 # null: reconstruction-only sample
     "target_instance_ids": [int],         # snapshot instance IDs (the robot's), never dataset IDs
     "frame_ids": [int],                   # keyframe IDs shown, in prompt order
     "view_targets": [<hash>],             # raw (unmarked) frames, square view_target_px
     "bev_target": <hash>,                 # raw (unmarked) BEV, square bev_target_px
     "recon": bool,                        # reconstruction losses apply (false for grounding)
     "prompt_profile", "format_version"}
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

SHARDS_DIR = "shards"
IMAGES_DIR = "images"
MANIFEST = "manifest.json"
PARTS_DIR = "manifests"
BUILD_CONFIG = "build_config.yaml"


class DataFormatError(ValueError):
    """A data directory is not a build-data output, or a sample/image in it is corrupt."""


def image_key(image: np.ndarray) -> str:
    """SHA-256 of an (H, W, 3) uint8 image's shape and pixels (the image's file name)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    h = hashlib.sha256()
    h.update(repr(image.shape).encode())
    h.update(image.tobytes())
    return h.hexdigest()


def image_path(root: Path, key: str) -> Path:
    return Path(root) / IMAGES_DIR / key[:2] / f"{key}.png"


def write_image(root: Path, image: np.ndarray) -> str:
    """Store ``image`` (lossless PNG, fixed settings) unless already there; return its key."""
    from PIL import Image

    key = image_key(image)
    path = image_path(root, key)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), mode="RGB").save(buf, format="PNG",
                                                                                      compress_level=6)
        tmp = path.with_suffix(".png.part")
        tmp.write_bytes(buf.getvalue())
        tmp.replace(path)
    return key


def read_image(root: Path, key: str) -> np.ndarray:
    """The (H, W, 3) uint8 image stored under ``key`` (DataFormatError when missing or corrupt)."""
    from PIL import Image

    path = image_path(root, key)
    if not path.is_file():
        raise DataFormatError(f"{root}: image {key} is missing ({path}); the data set is incomplete")
    with Image.open(path) as im:
        image = np.array(im.convert("RGB"), dtype=np.uint8)
    if image_key(image) != key:
        raise DataFormatError(f"{path}: content does not match its hash; the file is corrupt")
    return image


def dumps_sample(sample: dict[str, Any]) -> str:
    """One canonical JSON line (sorted keys, no spaces): equal samples give equal bytes."""
    return json.dumps(sample, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def shard_path(root: Path, source: str, scene_id: str) -> Path:
    return Path(root) / SHARDS_DIR / source / f"{scene_id}.jsonl"


def list_shards(root: Path) -> list[Path]:
    """Every shard file of a data directory, sorted (DataFormatError when it is not one)."""
    root = Path(root)
    if not (root / SHARDS_DIR).is_dir():
        raise DataFormatError(
            f"{root} is not a build-data output (no {SHARDS_DIR}/ directory); run `scene-vlm-train build-data` first"
        )
    return sorted((root / SHARDS_DIR).rglob("*.jsonl"))


def read_samples(root: Path) -> list[dict[str, Any]]:
    """All samples of a data directory in shard order (DataFormatError on a bad line)."""
    out = []
    for path in list_shards(root):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataFormatError(f"{path}:{n}: not a JSON sample ({exc})") from exc
    return out


def sample_messages(root: Path, sample: dict[str, Any]) -> list[dict[str, Any]]:
    """The sample's chat messages with image keys replaced by the images (the ``vlm/types.py`` format)."""
    out = []
    for m in sample["messages"]:
        parts = []
        for part in m["content"]:
            if part["type"] == "image":
                parts.append({"type": "image", "image": read_image(root, part["image"])})
            else:
                parts.append(dict(part))
        out.append({"role": m["role"], "content": parts})
    return out
