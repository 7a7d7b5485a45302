"""build-data: samples are the robot's own prompts, answers name the robot's instance IDs, the
recipe's drop rules hold, and the output is deterministic and shardable."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scene_vlm_training", reason="install the training package: pip install -e training/")

from scene_vlm_training.config import BuildDataConfig, from_dict  # noqa: E402
from scene_vlm_training.data import store  # noqa: E402
from scene_vlm_training.data.build import (  # noqa: E402
    DROP_FRAME_NOT_SHOWN,
    DROP_NO_INSTANCE,
    Item,
    default_frame_ids,
    render_item,
    run_build,
    synthetic_scene,
)

from scene_vlm_ros.vlm.parsing import instances_for, parse_answer  # noqa: E402
from scene_vlm_ros.vlm.prompts import build_prompt  # noqa: E402
from scene_vlm_ros.vlm.types import Task  # noqa: E402

SYN = {"seeds": [0, 4], "n_frames": 40, "width": 160, "height": 120, "max_questions_per_task": 5}


def _cfg(out: Path, **extra: object) -> BuildDataConfig:
    return from_dict(BuildDataConfig, {"output_dir": str(out), "n_frames": 4, "image_size_px": 96,
                                       "view_target_px": 32, "bev_target_px": 32, "synthetic": SYN, **extra})


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("data") / "full"
    manifest = run_build(_cfg(out), progress=False)
    return out, manifest


def _scene(seed: int, cfg: BuildDataConfig):  # noqa: ANN202
    return synthetic_scene(seed, SYN["n_frames"], SYN["width"], SYN["height"], cfg)[0]


def test_samples_are_exactly_what_build_prompt_gives_the_robot(built: tuple[Path, dict]) -> None:
    root, _ = built
    cfg = _cfg(root)
    scene = _scene(0, cfg)
    samples = [s for s in store.read_samples(root) if s["scene_id"] == "synthetic-00000"]
    assert len(samples) >= 10
    for s in samples:
        bundle = build_prompt(scene.snapshot, s["question"], Task(s["task"]), n_frames=4, image_size=96,
                              object_id=s["object_id"], situation=s["situation"], profile="default")
        messages = store.sample_messages(root, s)
        assert [m["role"] for m in messages] == [m["role"] for m in bundle.messages]
        for got, want in zip(messages, bundle.messages):
            assert len(got["content"]) == len(want["content"])
            for a, b in zip(got["content"], want["content"]):
                assert a["type"] == b["type"]
                if a["type"] == "image":
                    assert np.array_equal(a["image"], b["image"])
                else:
                    assert a["text"] == b["text"]
        assert s["frame_ids"] == bundle.frame_ids


def test_answers_round_trip_to_the_matched_instances(built: tuple[Path, dict]) -> None:
    root, _ = built
    cfg = _cfg(root)
    scene = _scene(0, cfg)
    inverse = {iid: oid for oid, iid in scene.instance_of_object.items()}
    # Robot IDs are numbered in order of first sight, not copied from the dataset's object IDs.
    assert any(oid != iid for oid, iid in scene.instance_of_object.items())
    checked = 0
    for s in store.read_samples(root):
        if s["scene_id"] != "synthetic-00000" or s["task"] not in ("grounding", "multi_grounding"):
            continue
        parsed = parse_answer(s["answer"], Task(s["task"]), scene.snapshot)
        assert [i.instance_id for i in instances_for(parsed, scene.snapshot)] == s["target_instance_ids"]
        assert not parsed.unknown_ids
        for iid in s["target_instance_ids"]:  # each answer instance is its object's matched instance
            assert scene.match_iou[inverse[iid]] >= 0.75
        checked += 1
    assert checked >= 5


def test_frame_selection_never_sees_the_answer(built: tuple[Path, dict]) -> None:
    root, _ = built
    scene = _scene(0, _cfg(root))
    shown = default_frame_ids(scene, 4)
    for s in store.read_samples(root):
        if s["scene_id"] == "synthetic-00000" and s["task"] != "caption":
            assert s["frame_ids"] == shown  # the same frames whatever the target


def test_frame_references_are_renumbered_or_dropped(built: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = built
    cfg = _cfg(tmp_path)
    scene = _scene(0, cfg)
    shown = default_frame_ids(scene, 4)
    hidden = next(f for f in sorted(scene.keyframe_of_frame) if scene.keyframe_of_frame[f] not in shown)
    q = f"How far did the camera move between frame {shown[0]} and frame {shown[2]}?"
    sample, reason = render_item(Item("a", Task.SPATIAL, q, answer="1.00 m", frame_refs=(shown[0], shown[2])),
                                 scene, cfg, "synthetic", "s", tmp_path)
    assert reason is None and "between frame 1 and frame 3?" in sample["question"]
    q = f"How far did the camera move between frame {shown[0]} and frame {hidden}?"
    sample, reason = render_item(Item("b", Task.SPATIAL, q, answer="1.00 m", frame_refs=(shown[0], hidden)),
                                 scene, cfg, "synthetic", "s", tmp_path)
    assert sample is None and reason == DROP_FRAME_NOT_SHOWN
    for s in store.read_samples(root):
        numbers = [int(n) for n in re.findall(r"\bframe (\d+)\b", s["question"])]
        assert all(1 <= n <= len(s["frame_ids"]) for n in numbers), s["question"]


def test_targets_without_a_matching_instance_are_dropped_and_counted(built: tuple[Path, dict],
                                                                       tmp_path: Path) -> None:
    root, manifest = built
    cfg = _cfg(tmp_path)
    scene = _scene(0, cfg)
    unseen = [oid for oid, iou in scene.match_iou.items() if iou < 0.75]
    assert unseen, "seed 0 has objects the camera never sees"
    sample, reason = render_item(Item("x", Task.GROUNDING, "the thing", (unseen[0],)), scene, cfg, "synthetic", "s",
                                 tmp_path)
    assert sample is None and reason == DROP_NO_INSTANCE
    assert manifest["drops"][DROP_NO_INSTANCE] >= 1
    assert set(manifest["drops"]) == {"no_instance_iou", "frame_not_shown", "answer_object_unmatched", "no_answer"}


def test_manifest_counts_and_settings(built: tuple[Path, dict]) -> None:
    root, manifest = built
    samples = store.read_samples(root)
    assert manifest["samples"] == len(samples)
    by_task: dict[str, int] = {}
    for s in samples:
        by_task[s["task"]] = by_task.get(s["task"], 0) + 1
    assert manifest["per_task"] == by_task and manifest["per_source"] == {"synthetic": len(samples)}
    assert (manifest["n_frames"], manifest["image_size_px"], manifest["prompt_profile"]) == (4, 96, "default")
    assert all(not s["recon"] for s in samples if s["task"] in ("grounding", "multi_grounding"))
    assert all(s["recon"] for s in samples if s["task"] in ("qa", "spatial"))


def test_builds_are_byte_identical_and_shards_partition_the_scenes(built: tuple[Path, dict],
                                                                    tmp_path: Path) -> None:
    root, manifest = built
    again = tmp_path / "again"
    run_build(_cfg(again), progress=False)
    files = sorted(p.relative_to(root) for p in (root / "shards").rglob("*.jsonl"))
    assert files == sorted(p.relative_to(again) for p in (again / "shards").rglob("*.jsonl"))
    for f in files:
        assert (root / f).read_bytes() == (again / f).read_bytes()
    parts = tmp_path / "parts"
    run_build(_cfg(parts), shard=(1, 2), progress=False)
    assert [p.name for p in (parts / "shards" / "synthetic").iterdir()] == ["synthetic-00004.jsonl"]
    merged = run_build(_cfg(parts), shard=(0, 2), progress=False)
    assert merged["samples"] == manifest["samples"] and merged["per_task"] == manifest["per_task"]
    assert merged["parts"] == ["0/2", "1/2"]
    for f in files:
        assert (parts / f).read_bytes() == (root / f).read_bytes()


def test_cli_build_data_reports_bad_shard_and_missing_sources(tmp_path: Path) -> None:
    from scene_vlm_training.cli import main

    cfg = tmp_path / "b.yaml"
    cfg.write_text(json.dumps({"output_dir": str(tmp_path / "o")}))
    assert main(["build-data", "--config", str(cfg)]) == 2
    cfg.write_text(json.dumps({"output_dir": str(tmp_path / "o"), "synthetic": {"seeds": [0]}}))
    assert main(["build-data", "--config", str(cfg), "--shard", "3/2"]) == 2


def test_resumable_order_splits_ranks_and_repeats_per_seed() -> None:
    from scene_vlm_training.data.dataset import ResumableOrder

    ranks = [ResumableOrder(10, 2, seed=3, rank=r, world=2) for r in range(2)]
    assert ranks[0].per_epoch == 2
    epoch0 = [i for r in ranks for k in range(2) for i in r.batch(k)]
    assert len(set(epoch0)) == 8 and set(epoch0) <= set(range(10))  # disjoint ranks, last partial dropped
    assert ranks[0].batch(2) != ranks[0].batch(0) or ranks[0].batch(3) != ranks[0].batch(1)  # new epoch order
    assert ResumableOrder(10, 2, seed=3, rank=1, world=2).batch(5) == ranks[1].batch(5)
    with pytest.raises(ValueError, match="cannot fill one micro-batch"):
        ResumableOrder(3, 2, seed=0, rank=0, world=2)


def test_gpt4scene_profile_samples_match_its_prompts(tmp_path: Path) -> None:
    cfg = from_dict(BuildDataConfig, {"output_dir": str(tmp_path), "prompt_profile": "gpt4scene", "n_frames": 3,
                                      "view_target_px": 32, "bev_target_px": 32,
                                      "synthetic": {**SYN, "seeds": [0], "max_questions_per_task": 2}})
    manifest = run_build(cfg, progress=False)
    assert (manifest["prompt_profile"], manifest["image_size_px"], manifest["n_frames"]) == ("gpt4scene", 512, 3)
    scene = _scene(0, cfg)
    for s in store.read_samples(tmp_path):
        assert [m["role"] for m in s["messages"]] == ["user"]  # GPT4Scene sends no system turn
        bundle = build_prompt(scene.snapshot, s["question"], Task(s["task"]), n_frames=3, profile="gpt4scene")
        assert s["messages"][0]["content"][-1]["text"] == bundle.text
        assert s["frame_ids"] == bundle.frame_ids
