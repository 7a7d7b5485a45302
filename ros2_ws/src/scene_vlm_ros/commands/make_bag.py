"""``scene-vlm make-bag``: turn a synthetic scene or a real RGB-D sequence into a rosbag2 bag.

Outputs, for ``--out bags/room0``:

- ``bags/room0/`` the rosbag2 bag (MCAP or sqlite3; topics in :mod:`scene_vlm_ros.bag.topics`);
- ``bags/room0.gt.json`` ground-truth objects in the ``map`` frame (synthetic; ScanNet when annotated);
- ``bags/room0.queries.json`` verified questions with answers (synthetic), whose ``frame_ids``
  index the bag's image frames in order (0 = the first image), as :func:`read_bag` numbers them.

Poses: a synthetic bag carries the simulated odometry (``--drift`` makes it drift away from the
true poses; ground truth stays in the true ``map`` frame). A real sequence's camera poses become
odometry through the extrinsic ``T_base_camera_optical = T_LINK_OPTICAL``: ``base_link`` coincides
with ``camera_link`` (REP-103 axes at the camera centre) and ``camera_link -> optical`` is the
standard fixed rotation, so ``T_odom_base = T_world_camera @ inv(T_LINK_OPTICAL)`` and reading the
bag back gives the dataset's camera poses exactly. 7-Scenes is gravity-aligned first so that
``odom`` is z up.

Stamps: the source's stamps (frame number / 30 Hz) are offset by :data:`START_STAMP_NS`, a
realistic epoch time, because a zero stamp means "latest" to tf2 and confuses ``ros2 bag`` tools.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer

from ..bag.messages import seconds_to_ns
from ..bag.reader import base_pose_from_camera
from ..bag.writer import STORAGE_PLUGINS, T_LINK_OPTICAL, BagWriter

logger = logging.getLogger(__name__)

SOURCES = ("synthetic", "7scenes", "scannet")
#: 2023-11-14T22:13:20Z: added to every source stamp (see the module docstring).
START_STAMP_NS = 1_700_000_000 * 1_000_000_000


class MakeBagError(ValueError):
    """Invalid make-bag arguments (unknown source, missing dataset directory, ...)."""


def sidecar_paths(out: Path) -> tuple[Path, Path]:
    """``(X.gt.json, X.queries.json)`` beside the bag directory ``X``."""
    out = Path(out)
    return out.parent / f"{out.name}.gt.json", out.parent / f"{out.name}.queries.json"


def _progress(enabled: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        disable=not enabled, transient=False,
    )


def _write_synthetic(
    out: Path, seed: int, layout_path: Optional[Path], n_frames: int, storage: str, width: int, height: int,
    drift: bool, trajectory: str, loop: bool, overwrite: bool, progress: bool,
) -> dict:
    # Imported here: the renderer pulls in Open3D, which the real-data paths do not need.
    from ..datasets.questions import generate_questions, write_questions
    from ..datasets.render import generate_sequence
    from ..datasets.synthetic import generate_layout, load_layout, write_ground_truth

    layout = load_layout(layout_path) if layout_path is not None else generate_layout(seed)
    sequence: Iterator[Any] = iter(
        generate_sequence(layout, n_frames, width, height, trajectory=trajectory, drift=drift, seed=seed,
                          **({"speed_mps": None} if loop else {}))
    )
    first = next(sequence, None)
    if first is None:
        raise MakeBagError("the synthetic sequence produced no frames")
    T_base_optical = np.asarray(first.T_base_camera_optical, dtype=np.float64)
    custom = {
        "scene_vlm.source": "synthetic", "scene_vlm.seed": str(seed), "scene_vlm.drift": str(bool(drift)),
        "scene_vlm.layout": str(layout_path) if layout_path else f"generated(seed={seed})",
        "scene_vlm.trajectory": trajectory, "scene_vlm.loop": str(bool(loop)),
    }
    camera_poses: dict[int, np.ndarray] = {}
    intrinsics = first.frame.intrinsics
    n = 0
    with BagWriter(out, T_base_optical, storage, with_instances=True, overwrite=overwrite,
                   custom_data=custom) as writer, _progress(progress) as bar:
        task = bar.add_task(f"synthetic seed {seed}", total=n_frames)
        for sf in itertools.chain([first], sequence):
            if not np.allclose(sf.T_base_camera_optical, T_base_optical, atol=1e-9):
                # /tf_static holds one extrinsic for the whole bag; a moving camera mount cannot be written.
                raise MakeBagError("the synthetic camera extrinsic changes over the sequence; /tf_static cannot")
            stamp = START_STAMP_NS + seconds_to_ns(sf.frame.stamp_s)
            writer.write_odometry(stamp, sf.T_odom_base)
            writer.write_frame(sf.frame, stamp)
            camera_poses[n] = np.asarray(sf.frame.T_world_camera, dtype=np.float64)
            n += 1
            bar.advance(task)
        counts = dict(writer.counts)
    gt_path, queries_path = sidecar_paths(out)
    write_ground_truth(layout, gt_path)
    questions = generate_questions(layout.objects, layout.size, camera_poses, intrinsics, seed=seed)
    write_questions(questions, queries_path)
    return {"frames": n, "topics": counts, "gt": str(gt_path), "queries": str(queries_path),
            "n_objects": len(layout.objects), "n_queries": len(questions)}


def _write_real(
    out: Path, source: str, dataset_dir: Path, n_frames: int, storage: str, frame_step: int, overwrite: bool,
    progress: bool,
) -> dict:
    gt_objects = None
    if source == "7scenes":
        from ..datasets.seven_scenes import load_seven_scenes

        seq: Any = load_seven_scenes(dataset_dir, gravity_align=True, frame_step=frame_step, max_frames=n_frames)
    else:
        from ..datasets.scannet import ScanNetScan

        seq = ScanNetScan(dataset_dir, frame_step=frame_step, max_frames=n_frames)
        gt_objects = seq.ground_truth_objects() if seq.has_ground_truth else None
    custom = {"scene_vlm.source": source, "scene_vlm.dataset_dir": str(dataset_dir)}
    n = 0
    with BagWriter(out, T_LINK_OPTICAL, storage, with_instances=False, overwrite=overwrite,
                   custom_data=custom) as writer, _progress(progress) as bar:
        task = bar.add_task(f"{source} {Path(dataset_dir).name}", total=len(seq))
        for frame in seq.frames():
            stamp = START_STAMP_NS + seconds_to_ns(frame.stamp_s)
            writer.write_odometry(stamp, base_pose_from_camera(frame.T_world_camera, T_LINK_OPTICAL))
            writer.write_frame(frame, stamp)
            n += 1
            bar.advance(task)
        counts = dict(writer.counts)
    result: dict = {"frames": n, "topics": counts, "gt": None, "queries": None}
    if gt_objects:
        import json

        gt_path, _ = sidecar_paths(out)
        lo = np.min([o.box.aabb()[0] for o in gt_objects], axis=0)
        hi = np.max([o.box.aabb()[1] for o in gt_objects], axis=0)
        gt = {"frame_id": "map", "room": {"size": [float(v) for v in hi - lo]},
              "objects": [o.to_json() for o in gt_objects]}
        gt_path.write_text(json.dumps(gt, indent=2), encoding="utf-8")
        result.update(gt=str(gt_path), n_objects=len(gt_objects))
    return result


def make_bag(
    source: Annotated[str, typer.Option(help="synthetic | 7scenes | scannet")] = "synthetic",
    seed: Annotated[int, typer.Option(help="Synthetic scene seed (layout, trajectory, questions).")] = 0,
    layout: Annotated[Optional[Path], typer.Option(help="Synthetic layout JSON instead of a generated one.")] = None,
    frames: Annotated[int, typer.Option(help="Number of frames (synthetic) or at most this many (real).")] = 300,
    out: Annotated[
        Optional[Path], typer.Option(help="Bag directory (default: bags/synthetic_seed<N> or bags/<source>_<dir>).")
    ] = None,
    storage: Annotated[str, typer.Option(help="rosbag2 storage: mcap | sqlite3.")] = "mcap",
    dataset_dir: Annotated[
        Optional[Path], typer.Option(help="Sequence directory for --source 7scenes / scannet.")
    ] = None,
    width: Annotated[int, typer.Option(help="Synthetic image width (px).")] = 640,
    height: Annotated[int, typer.Option(help="Synthetic image height (px).")] = 480,
    drift: Annotated[bool, typer.Option(help="Synthetic odometry drifts away from the true poses.")] = False,
    trajectory: Annotated[str, typer.Option(help="Synthetic camera path (see datasets.render).")] = "walkthrough",
    loop: Annotated[
        bool,
        typer.Option(help="Synthetic: fit one whole loop of the room into the frames, so every object is seen "
                          "(--no-loop: walk at 0.3 m/s and see only part of the room)."),
    ] = True,
    frame_step: Annotated[int, typer.Option(help="Real sources: keep every n-th frame.")] = 1,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing bag directory.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> dict:
    """Write a rosbag2 bag (plus ground truth and questions for synthetic scenes); returns a summary dict.

    The summary has ``bag``, ``storage``, ``frames``, ``topics`` (message counts), ``gt`` and
    ``queries`` (paths or None), ``start_stamp_ns`` and, when known, ``n_objects`` / ``n_queries``.
    """
    if source not in SOURCES:
        raise MakeBagError(f"unknown source {source!r}; use one of {', '.join(SOURCES)}")
    if storage not in STORAGE_PLUGINS:
        raise MakeBagError(f"unknown storage {storage!r}; use one of {', '.join(sorted(STORAGE_PLUGINS))}")
    if frames < 1:
        raise MakeBagError(f"--frames must be >= 1, got {frames}")
    if frame_step < 1:
        raise MakeBagError(f"--frame-step must be >= 1, got {frame_step}")
    if source == "synthetic":
        if width < 16 or height < 16:
            raise MakeBagError(f"image size {width}x{height} is too small (>= 16x16)")
        if layout is not None and not Path(layout).is_file():
            raise MakeBagError(f"layout file not found: {layout}")
        out = Path(out) if out is not None else Path("bags") / f"synthetic_seed{seed}"
    else:
        if dataset_dir is None:
            raise MakeBagError(f"--source {source} needs --dataset-dir DIR (the sequence directory)")
        if not Path(dataset_dir).is_dir():
            raise MakeBagError(f"dataset directory not found: {dataset_dir}")
        out = Path(out) if out is not None else Path("bags") / f"{source}_{Path(dataset_dir).name}"
    if source == "synthetic":
        result = _write_synthetic(out, seed, layout, frames, storage, width, height, drift, trajectory, loop,
                                  overwrite, progress)
    else:
        result = _write_real(out, source, Path(dataset_dir), frames, storage, frame_step, overwrite,  # type: ignore[arg-type]
                             progress)
    result.update(bag=str(out), storage=storage, source=source, start_stamp_ns=START_STAMP_NS)
    logger.info("make-bag: %s", result)
    if progress:
        from rich.console import Console

        extra = "".join(f", {k} {result[k]}" for k in ("gt", "queries") if result.get(k))
        Console(stderr=True).print(f"wrote {result['frames']} frames to {out} ({storage}){extra}", highlight=False)
    return result
