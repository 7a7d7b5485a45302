"""``scene-vlm-train build-data``: scans -> GPT4Scene-style samples rendered by the robot's own code.

For every scene: build its :class:`~scene_vlm_ros.core.types.SceneSnapshot` with
:mod:`scene_vlm_ros.datasets.snapshot_builder`, turn each annotation into an :class:`Item` (task,
question, answer in terms of the dataset's object IDs), then :func:`render_item`:

1. target objects -> the snapshot instances matched at IoU >= ``iou_threshold`` (Chat-Scene's
   rule); a target without one is dropped and counted (``no_instance_iou``);
2. the prompt is :func:`scene_vlm_ros.vlm.prompts.build_prompt` with no candidate IDs, exactly as
   the node calls it, so frame selection never sees the answer;
3. a question that refers to frames ("between frame 3 and frame 17") is kept only when every one
   of them is shown, and the references are rewritten to their position in the prompt
   ("frame 1" = the first image); otherwise it is dropped (``frame_not_shown``);
4. the answer is :func:`~scene_vlm_ros.vlm.prompts.format_target` over the *instance* IDs; any
   ``<OBJ###>`` in free-text answers is remapped the same way (``answer_object_unmatched`` when it
   cannot be).

Sources: synthetic rooms with their generated questions, benchmark annotations over ScanNet scans
(read with :mod:`scene_vlm_ros.datasets.benchmarks`), vision-only scans (reconstruction-only samples).
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from scene_vlm_ros.core.frame_selection import select_frames
from scene_vlm_ros.core.markers import prepare_instance_samples
from scene_vlm_ros.datasets.snapshot_builder import BuiltScene, SnapshotBuildParams, build_snapshot
from scene_vlm_ros.vlm.prompts import build_prompt, format_target, get_profile, obj_token
from scene_vlm_ros.vlm.types import Task

from .. import SAMPLE_FORMAT_VERSION
from ..config import BenchmarkSource, BuildDataConfig, save_config
from . import store

logger = logging.getLogger(__name__)

#: Why a sample was dropped (manifest keys).
DROP_NO_INSTANCE = "no_instance_iou"
DROP_FRAME_NOT_SHOWN = "frame_not_shown"
DROP_ANSWER_OBJECT = "answer_object_unmatched"
DROP_NO_ANSWER = "no_answer"
DROP_REASONS = (DROP_NO_INSTANCE, DROP_FRAME_NOT_SHOWN, DROP_ANSWER_OBJECT, DROP_NO_ANSWER)

#: Tasks whose samples skip the reconstruction losses (ROSS3D's code skips both on grounding).
GROUNDING_TASKS = (Task.GROUNDING, Task.MULTI_GROUNDING)
#: Text of reconstruction-only prompts (never supervised: the answer is None).
RECONSTRUCTION_QUESTION = "What is in this room?"

_FRAME_REF = re.compile(r"\bframe (\d+)\b")
_OBJ_REF = re.compile(r"<OBJ(\d+)>")


class AnnotationError(ValueError):
    """An annotation names a scene or an object that the scans do not have."""


@dataclass(frozen=True)
class Item:
    """One annotation before rendering, in the dataset's own object IDs.

    ``frame_refs``: sequence frame indices the question text names as ``frame <i>``;
    ``answer``: free text for QA/caption/spatial (may contain ``<OBJ###>`` of dataset IDs), None
    for grounding (built from ``target_object_ids``) and reconstruction-only items.
    """

    item_id: str
    task: Task
    question: str
    target_object_ids: tuple[int, ...] = ()
    answer: Optional[str] = None
    object_id: int = -1
    situation: Optional[str] = None
    frame_refs: tuple[int, ...] = ()
    family: str = ""
    reconstruction_only: bool = False


@dataclass
class SceneJob:
    """A scene to build: its source, id, and how to get its snapshot and items (lazily)."""

    source: str
    scene_id: str
    load: Callable[[], tuple[BuiltScene, list[Item]]]


@dataclass
class BuildStats:
    """Counts of one build (or part): kept per task and source, drops per reason."""

    per_task: Counter = field(default_factory=Counter)
    per_source: Counter = field(default_factory=Counter)
    drops: Counter = field(default_factory=Counter)
    scenes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": int(sum(self.per_task.values())),
            "per_task": dict(sorted(self.per_task.items())),
            "per_source": dict(sorted(self.per_source.items())),
            "drops": {r: int(self.drops.get(r, 0)) for r in DROP_REASONS},
            "scenes": sorted(self.scenes),
        }


# ------------------------------------------------------------------------------------------- rendering


def _resize_square(image: np.ndarray, side_px: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (side, side, 3) uint8, bicubic (deterministic Pillow resampling)."""
    from PIL import Image

    if image.shape[0] == side_px and image.shape[1] == side_px:
        return np.ascontiguousarray(image)
    return np.asarray(Image.fromarray(image, mode="RGB").resize((side_px, side_px), Image.Resampling.BICUBIC))


def _remap_obj_tokens(text: str, mapping: dict[int, int]) -> Optional[str]:
    """``<OBJ###>`` of dataset IDs -> instance IDs; None when one has no matched instance."""
    missing = [int(m) for m in _OBJ_REF.findall(text) if int(m) not in mapping]
    if missing:
        return None
    return _OBJ_REF.sub(lambda m: obj_token(mapping[int(m.group(1))]), text)


def default_frame_ids(built: BuiltScene, n_frames: int) -> list[int]:
    """Keyframe IDs the prompt shows for any question without candidates (what the node's prompts show)."""
    if n_frames <= 0:
        return []
    return select_frames(built.snapshot, n=n_frames, samples=prepare_instance_samples(built.snapshot))


def render_item(
    item: Item, built: BuiltScene, cfg: BuildDataConfig, source: str, scene_id: str, root: Path
) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    """One item -> ``(sample, None)`` with its images stored under ``root``, or ``(None, drop_reason)``."""
    profile = get_profile(cfg.prompt_profile)
    n_frames = profile.n_frames if cfg.n_frames is None else cfg.n_frames
    image_size = profile.image_size_px if cfg.image_size_px is None else cfg.image_size_px
    mapping = built.instance_of_object
    task = Task(item.task)

    targets: list[int] = []
    if task in GROUNDING_TASKS or task == Task.CAPTION:
        wanted = list(item.target_object_ids) + ([item.object_id] if task == Task.CAPTION else [])
        if any(int(o) not in mapping for o in wanted):
            return None, DROP_NO_INSTANCE
        targets = [mapping[int(o)] for o in item.target_object_ids]
    object_id = mapping[item.object_id] if task == Task.CAPTION else -1

    question = item.question
    if item.frame_refs:
        shown = default_frame_ids(built, n_frames)
        kf = [built.keyframe_of_frame.get(int(f)) for f in item.frame_refs]
        if any(k is None or k not in shown for k in kf):
            return None, DROP_FRAME_NOT_SHOWN
        position = {int(f): shown.index(k) + 1 for f, k in zip(item.frame_refs, kf)}  # type: ignore[arg-type]
        question = _FRAME_REF.sub(lambda m: f"frame {position.get(int(m.group(1)), -1)}", question)
        if "frame -1" in question:  # the text names a frame the record did not list
            return None, DROP_FRAME_NOT_SHOWN

    if item.reconstruction_only:
        answer = None
    elif task in GROUNDING_TASKS:
        answer = format_target(task, targets)
    else:
        if item.answer is None or not item.answer.strip():
            return None, DROP_NO_ANSWER
        remapped = _remap_obj_tokens(item.answer, mapping)
        if remapped is None:
            return None, DROP_ANSWER_OBJECT
        answer = format_target(task, [], remapped)

    bundle = build_prompt(
        built.snapshot, question, task, n_frames=n_frames, object_id=object_id, situation=item.situation,
        image_size=image_size, profile=profile,
    )
    if item.frame_refs and bundle.frame_ids != default_frame_ids(built, n_frames):
        return None, DROP_FRAME_NOT_SHOWN  # the frame positions written into the question would be wrong
    messages = []
    for m in bundle.messages:
        parts = []
        for part in m["content"]:
            if part["type"] == "image":
                parts.append({"type": "image", "image": store.write_image(root, part["image"])})
            else:
                parts.append({"type": "text", "text": part["text"]})
        messages.append({"role": m["role"], "content": parts})
    views = [
        store.write_image(root, _resize_square(built.snapshot.keyframe(k).color_rgb, cfg.view_target_px))  # type: ignore[union-attr]
        for k in bundle.frame_ids
    ]
    sample = {
        "id": f"{source}/{scene_id}/{item.item_id}",
        "source": source,
        "scene_id": scene_id,
        "task": "reconstruction" if item.reconstruction_only else task.value,
        "family": item.family,
        "question": question,
        "object_id": int(object_id),
        "situation": item.situation,
        "messages": messages,
        "answer": answer,
        "target_instance_ids": [int(t) for t in targets],
        "frame_ids": [int(k) for k in bundle.frame_ids],
        "view_targets": views,
        "bev_target": store.write_image(root, _resize_square(bundle.bev.image, cfg.bev_target_px)),
        "recon": task not in GROUNDING_TASKS,
        "prompt_profile": profile.name,
        "format_version": SAMPLE_FORMAT_VERSION,
    }
    return sample, None


# ------------------------------------------------------------------------------------------- sources


def _snapshot_params(cfg: BuildDataConfig) -> SnapshotBuildParams:
    return SnapshotBuildParams(iou_threshold=cfg.iou_threshold)


def _synthetic_items(built: BuiltScene, layout: Any, frames: Sequence[Any], seed: int, cfg: BuildDataConfig,
                     max_per_task: int) -> list[Item]:
    from scene_vlm_ros.datasets.questions import generate_questions

    profile = get_profile(cfg.prompt_profile)
    n_frames = profile.n_frames if cfg.n_frames is None else cfg.n_frames
    # Camera questions are asked only about frames the robot's prompt shows (selected without any
    # question in mind), so they can be answered from the images.
    shown_frames = {f for f, k in built.keyframe_of_frame.items() if k in set(default_frame_ids(built, n_frames))}
    poses = {int(f.frame_index): f.T_world_camera for f in frames if int(f.frame_index) in shown_frames}
    records = generate_questions(layout.objects, layout.size, poses, frames[0].intrinsics, seed=seed,
                                 max_per_task=max_per_task)
    items = []
    for r in records:
        task = Task(r["task"])
        question = _name_camera_frame(r["question"], r["frame_ids"])
        refs = tuple(int(f) for f in r["frame_ids"])
        items.append(Item(
            item_id=r["id"], task=task, question=question, target_object_ids=tuple(r["target_ids"]),
            answer=None if task in GROUNDING_TASKS else str(r["answer"]), frame_refs=refs, family=r["family"],
        ))
    return items


def _name_camera_frame(question: str, frame_ids: Sequence[int]) -> str:
    """Name the frame of a question asked from one camera ("closest to the camera" -> "... in frame 7").

    A generated camera question refers to the camera of its frame; in a prompt of several frames
    that is ambiguous, so the frame is named (and later renumbered to its position in the prompt).
    """
    if len(frame_ids) == 1 and not _FRAME_REF.search(question):
        return re.sub(r"\bthe camera\b", f"the camera in frame {int(frame_ids[0])}", question, count=1)
    return question


def synthetic_scene(seed: int, n_frames: int, width: int, height: int, cfg: BuildDataConfig
                    ) -> tuple[BuiltScene, Any, list[Any]]:
    """The synthetic room of ``seed``: its built snapshot, layout and rendered frames (one loop)."""
    from scene_vlm_ros.datasets.snapshot_builder import build_snapshot_from_synthetic
    from scene_vlm_ros.datasets.synthetic import generate_layout

    layout = generate_layout(seed)
    built, frames = build_snapshot_from_synthetic(layout, n_frames, width, height, seed=seed, mode=cfg.instances,
                                                  params=_snapshot_params(cfg))
    return built, layout, frames


def _reconstruction_items(n: int) -> list[Item]:
    return [Item(item_id=f"recon-{k:03d}", task=Task.QA, question=RECONSTRUCTION_QUESTION, reconstruction_only=True,
                 family="reconstruction") for k in range(n)]


def _benchmark_item(kind: str, rec: Any, index: int) -> list[Item]:
    """Items of one benchmark record (dataset object IDs)."""
    name = type(rec).__name__
    if name == "ScanReferRecord":
        return [Item(f"{kind}-{index:06d}", Task.GROUNDING, rec.description, (int(rec.object_id),), family=kind)]
    if name == "Multi3DReferRecord":
        return [Item(f"{kind}-{index:06d}", Task.MULTI_GROUNDING, rec.description,
                     tuple(int(o) for o in rec.object_ids), family=kind)]
    if name == "ScanQARecord":
        answer = rec.answers[0] if rec.answers else None
        return [Item(f"{kind}-{index:06d}", Task.QA, rec.question, answer=answer, family=kind)]
    if name == "SQA3DRecord":
        answer = rec.answers[0] if rec.answers else None
        return [Item(f"{kind}-{index:06d}", Task.QA, rec.question, answer=answer, situation=rec.situation,
                     family=kind)]
    if name == "Scan2CapRecord":
        return [Item(f"{kind}-{index:06d}-{k}", Task.CAPTION, "", answer=c, object_id=int(rec.object_id),
                     family=kind) for k, c in enumerate(rec.captions)]
    raise AnnotationError(f"{kind}: unsupported record type {name}")


def _record_objects(item: Item) -> list[int]:
    return list(item.target_object_ids) + ([item.object_id] if item.task == Task.CAPTION else [])


def _benchmark_jobs(src: BenchmarkSource, cfg: BuildDataConfig) -> list[SceneJob]:
    from scene_vlm_ros.datasets.benchmarks import load_benchmark, sniff_benchmark

    kind = sniff_benchmark(Path(src.annotations)) if src.kind == "auto" else src.kind
    records = load_benchmark(kind, src.annotations)
    by_scene: dict[str, list[Item]] = {}
    for i, rec in enumerate(records):
        by_scene.setdefault(str(rec.scene_id), []).extend(_benchmark_item(kind, rec, i))
    wanted = set(src.scenes) if src.scenes else set(by_scene)
    scans_dir = Path(src.scans_dir)
    jobs = []
    for scene_id in sorted(by_scene):
        if scene_id not in wanted:
            continue
        scan_dir = scans_dir / scene_id
        if not scan_dir.is_dir():
            raise AnnotationError(
                f"{src.annotations}: annotations name scene {scene_id!r}, but {scan_dir} does not exist; "
                f"export that scan there or restrict the source with `scenes:`"
            )
        items = by_scene[scene_id]

        def load(scan_dir: Path = scan_dir, items: list[Item] = items, scene_id: str = scene_id
                 ) -> tuple[BuiltScene, list[Item]]:
            from scene_vlm_ros.datasets.scannet import ScanNetScan

            scan = ScanNetScan(scan_dir, frame_step=src.frame_step, max_frames=src.max_frames)
            objects = scan.ground_truth_objects()
            known = {o.object_id for o in objects}
            for it in items:
                unknown = [o for o in _record_objects(it) if o not in known]
                if unknown:
                    raise AnnotationError(
                        f"{src.annotations}: record {it.item_id} names object(s) {unknown} that scene {scene_id} "
                        f"does not have (its objects: {min(known, default=-1)}..{max(known, default=-1)}); "
                        "the annotation belongs to another ScanNet version or scene"
                    )
            built = build_snapshot(scan.frames(), objects, mode=cfg.instances, params=_snapshot_params(cfg))
            return built, items

        jobs.append(SceneJob(kind, scene_id, load))
    return jobs


def scene_jobs(cfg: BuildDataConfig) -> list[SceneJob]:
    """Every scene of the configured sources, in a fixed order (synthetic, benchmarks, vision-only)."""
    jobs: list[SceneJob] = []
    if cfg.synthetic is not None:
        syn = cfg.synthetic
        for seed in syn.seeds:
            def load(seed: int = int(seed)) -> tuple[BuiltScene, list[Item]]:
                built, layout, frames = synthetic_scene(seed, syn.n_frames, syn.width, syn.height, cfg)
                return built, _synthetic_items(built, layout, frames, seed, cfg, syn.max_questions_per_task)

            jobs.append(SceneJob("synthetic", f"synthetic-{int(seed):05d}", load))
    for src in cfg.benchmarks:
        jobs.extend(_benchmark_jobs(src, cfg))
    if cfg.vision_only is not None:
        vo = cfg.vision_only
        for seed in vo.synthetic_seeds:
            def load_vo(seed: int = int(seed)) -> tuple[BuiltScene, list[Item]]:
                built, _, _ = synthetic_scene(seed, vo.n_frames, vo.width, vo.height, cfg)
                return built, _reconstruction_items(vo.samples_per_scan)

            jobs.append(SceneJob("vision_only", f"synthetic-{int(seed):05d}", load_vo))
        for scan_dir in vo.scan_dirs:
            def load_scan(scan_dir: str = scan_dir) -> tuple[BuiltScene, list[Item]]:
                from scene_vlm_ros.datasets.snapshot_builder import build_snapshot_from_scannet

                built = build_snapshot_from_scannet(scan_dir, mode="reconstruction", frame_step=vo.frame_step,
                                                    max_frames=vo.max_frames, params=_snapshot_params(cfg))
                return built, _reconstruction_items(vo.samples_per_scan)

            jobs.append(SceneJob("vision_only", Path(scan_dir).name, load_scan))
    return jobs


# ------------------------------------------------------------------------------------------- driver


def parse_shard(spec: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with 0 <= i < n (ValueError otherwise)."""
    try:
        i_s, n_s = spec.split("/")
        i, n = int(i_s), int(n_s)
    except ValueError as exc:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {spec!r}") from exc
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {spec}: need 0 <= i < n")
    return i, n


def build_scene(job: SceneJob, cfg: BuildDataConfig, root: Path, stats: BuildStats) -> Path:
    """Render every item of one scene into its shard file; returns the shard path."""
    built, items = job.load()
    lines = []
    for item in items:
        sample, reason = render_item(item, built, cfg, job.source, job.scene_id, root)
        if sample is None:
            stats.drops[reason] += 1
            continue
        stats.per_task[sample["task"]] += 1
        stats.per_source[job.source] += 1
        lines.append(store.dumps_sample(sample))
    path = store.shard_path(root, job.source, job.scene_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".jsonl.part")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    tmp.replace(path)
    stats.scenes.append(f"{job.source}/{job.scene_id}")
    return path


def _iter_progress(jobs: Sequence[SceneJob], enabled: bool) -> Iterator[SceneJob]:
    from tqdm import tqdm

    yield from tqdm(jobs, desc="build-data", unit="scene", disable=not enabled)


def run_build(cfg: BuildDataConfig, shard: tuple[int, int] = (0, 1), progress: bool = True) -> dict[str, Any]:
    """Build the scenes of part ``shard`` = (i, n); write shards, the part manifest and the merged manifest."""
    cfg.validate()
    root = Path(cfg.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    save_config(cfg, root / store.BUILD_CONFIG)
    i, n = shard
    jobs = scene_jobs(cfg)
    mine = [job for k, job in enumerate(jobs) if k % n == i]
    stats = BuildStats()
    for job in _iter_progress(mine, progress):
        build_scene(job, cfg, root, stats)
    profile = get_profile(cfg.prompt_profile)
    part = {
        "part": f"{i}/{n}",
        **stats.to_json(),
        "n_frames": profile.n_frames if cfg.n_frames is None else cfg.n_frames,
        "image_size_px": profile.image_size_px if cfg.image_size_px is None else cfg.image_size_px,
        "prompt_profile": profile.name,
        "view_target_px": cfg.view_target_px,
        "bev_target_px": cfg.bev_target_px,
        "instances": cfg.instances,
        "iou_threshold": cfg.iou_threshold,
        "seed": cfg.seed,
        "format_version": SAMPLE_FORMAT_VERSION,
    }
    parts_dir = root / store.PARTS_DIR
    parts_dir.mkdir(exist_ok=True)
    (parts_dir / f"part-{i:05d}-of-{n:05d}.json").write_text(json.dumps(part, indent=1, sort_keys=True) + "\n")
    manifest = merge_manifests(root)
    logger.info("build-data part %d/%d: %d samples, drops %s", i, n, part["samples"], part["drops"])
    return manifest


def merge_manifests(root: Path) -> dict[str, Any]:
    """Sum every part manifest under ``root`` into ``manifest.json`` (and return it)."""
    parts = [json.loads(p.read_text()) for p in sorted((Path(root) / store.PARTS_DIR).glob("part-*.json"))]
    if not parts:
        raise store.DataFormatError(f"{root}: no part manifests; nothing was built")
    merged: dict[str, Any] = {k: parts[0][k] for k in (
        "n_frames", "image_size_px", "prompt_profile", "view_target_px", "bev_target_px", "instances",
        "iou_threshold", "seed", "format_version")}
    for key in ("per_task", "per_source", "drops"):
        total: Counter = Counter()
        for p in parts:
            total.update(p[key])
        merged[key] = dict(sorted(total.items()))
    merged["samples"] = int(sum(p["samples"] for p in parts))
    merged["scenes"] = sorted(s for p in parts for s in p["scenes"])
    merged["parts"] = sorted(p["part"] for p in parts)
    (Path(root) / store.MANIFEST).write_text(json.dumps(merged, indent=1, sort_keys=True) + "\n")
    return merged
