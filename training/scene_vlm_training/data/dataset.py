"""Reading a build-data output for training: samples -> model inputs, batches, a resumable order.

Every sample goes through :func:`scene_vlm_ros.vlm.model_inputs.build_training_inputs`, the same
conversion the node's backend uses (plus the answer), at the image cap the data was built with.
The order of samples is a pure function of (seed, epoch, rank): micro-batch ``k`` of a rank is
always the same samples, so a resumed run sees exactly what an uninterrupted one would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scene_vlm_ros.vlm.model_inputs import IGNORE_INDEX, build_training_inputs

from . import store


def read_manifest(root: str | Path) -> dict[str, Any]:
    """``manifest.json`` of a build-data output (DataFormatError when absent or empty)."""
    path = Path(root) / store.MANIFEST
    if not path.is_file():
        raise store.DataFormatError(f"{root} is not a build-data output (no {store.MANIFEST}); "
                                    "run `scene-vlm-train build-data` first")
    manifest = json.loads(path.read_text())
    if int(manifest.get("samples", 0)) < 1:
        raise store.DataFormatError(f"{root}: the manifest lists no samples (see its 'drops')")
    return manifest


class SampleDataset(torch.utils.data.Dataset):
    """Samples of a build-data output as model inputs.

    Item keys: ``input_ids``/``attention_mask``/``labels``/``mm_token_type_ids`` (L,),
    ``pixel_values`` (P, D), ``image_grid_thw`` (I, 3) with I = frames + 1 (the BEV last),
    ``view_targets`` (F, 3, S, S) uint8 raw frames, ``bev_target`` (3, S', S') uint8 raw BEV,
    ``recon`` bool, ``task``, ``id``.
    """

    def __init__(self, root: str | Path, processor: Any, image_token_id: int, video_token_id: int) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        self.samples = store.read_samples(self.root)
        self.processor = processor
        self.image_token_id, self.video_token_id = int(image_token_id), int(video_token_id)
        self.max_image_side_px = int(self.manifest["image_size_px"])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        messages = store.sample_messages(self.root, s)
        inputs = build_training_inputs(
            self.processor, messages, s["answer"], max_image_side_px=self.max_image_side_px,
            image_token_id=self.image_token_id, video_token_id=self.video_token_id,
        )
        views = np.stack([store.read_image(self.root, k) for k in s["view_targets"]])  # (F, S, S, 3)
        bev = store.read_image(self.root, s["bev_target"])
        n_images = int(inputs["image_grid_thw"].shape[0])
        if n_images != len(s["frame_ids"]) + 1:
            raise store.DataFormatError(f"sample {s['id']}: {n_images} images but {len(s['frame_ids'])} frames + BEV")
        return {
            "input_ids": inputs["input_ids"][0], "attention_mask": inputs["attention_mask"][0],
            "labels": inputs["labels"][0], "mm_token_type_ids": inputs["mm_token_type_ids"][0],
            "pixel_values": inputs["pixel_values"], "image_grid_thw": inputs["image_grid_thw"],
            "view_targets": torch.from_numpy(views).permute(0, 3, 1, 2).contiguous(),
            "bev_target": torch.from_numpy(bev).permute(2, 0, 1).contiguous(),
            "recon": bool(s["recon"]), "task": s["task"], "id": s["id"],
        }


def collate(items: list[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Right-pad the token tensors to (B, L_max); concatenate images; keep per-sample lists."""
    length = max(int(it["input_ids"].shape[0]) for it in items)

    def pad(key: str, value: int) -> torch.Tensor:
        out = torch.full((len(items), length), value, dtype=items[0][key].dtype)
        for b, it in enumerate(items):
            out[b, : it[key].shape[0]] = it[key]
        return out

    return {
        "input_ids": pad("input_ids", pad_token_id), "attention_mask": pad("attention_mask", 0),
        "labels": pad("labels", IGNORE_INDEX), "mm_token_type_ids": pad("mm_token_type_ids", 0),
        "pixel_values": torch.cat([it["pixel_values"] for it in items]),
        "image_grid_thw": torch.cat([it["image_grid_thw"] for it in items]),
        "image_counts": [int(it["image_grid_thw"].shape[0]) for it in items],
        "view_targets": [it["view_targets"] for it in items],
        "bev_target": torch.stack([it["bev_target"] for it in items]),
        "recon": [it["recon"] for it in items], "task": [it["task"] for it in items], "id": [it["id"] for it in items],
    }


class ResumableOrder:
    """Micro-batch ``k`` of rank ``rank`` -> sample indices, a pure function of (seed, k).

    Each epoch is a permutation drawn from ``default_rng([seed, epoch])``; rank r takes every
    ``world``-th sample of it, in micro-batches of ``micro_batch_size`` (a last partial batch is
    dropped so all ranks step together).
    """

    def __init__(self, n_samples: int, micro_batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.mbs, self.seed, self.rank, self.world = n_samples, micro_batch_size, seed, rank, world
        self.per_epoch = (n_samples // world) // micro_batch_size
        if self.per_epoch < 1:
            raise ValueError(f"{n_samples} samples cannot fill one micro-batch of {micro_batch_size} on {world} "
                             "rank(s); build more data or lower micro_batch_size")

    def batch(self, k: int) -> list[int]:
        epoch, j = divmod(int(k), self.per_epoch)
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        mine = perm[self.rank :: self.world]
        return [int(i) for i in mine[j * self.mbs : (j + 1) * self.mbs]]


class MicroBatchSampler(torch.utils.data.Sampler):
    """Yields the index lists of micro-batches ``start, start + 1, ...`` of a :class:`ResumableOrder`.

    Used as a DataLoader ``batch_sampler`` so worker processes prepare the next micro-batches while
    the model trains; starting at ``start`` = step x accumulation resumes the exact order.
    """

    def __init__(self, order: ResumableOrder, start: int = 0) -> None:
        self.order, self.start = order, int(start)

    def __iter__(self):  # noqa: ANN204 - an infinite iterator of index lists
        k = self.start
        while True:
            yield self.order.batch(k)
            k += 1
