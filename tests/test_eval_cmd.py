"""``scene-vlm eval``: a user's bag + a hand-written query file -> metrics.json, answers.jsonl, report.html;
the transformers backend end to end with the tiny model; thousands of malformed query records and
files rejected with counted reasons; ``--live`` (a node in another process) equals offline on grounding.
"""

from __future__ import annotations

import base64
import io
import json
import math
import random
import re

import numpy as np
import pytest
from PIL import Image

from scene_vlm_ros.commands.eval_cmd import EvalInputError, main, parse_args, run_eval
from scene_vlm_ros.commands.make_bag import make_bag
from scene_vlm_ros.eval.replay_eval import QueryFileError, load_queries, parse_user_record

KNOWN_ERROR_CODES = {"SUCCESS", "INVALID_REQUEST", "NO_MAP_YET", "NO_MATCH", "BUSY", "TIMEOUT",
                     "MODEL_UNAVAILABLE", "MODEL_ERROR"}


@pytest.fixture(scope="module")
def user_bag(tmp_path_factory):
    """A small synthetic robot bag (40 frames, 320x240) with its ground truth beside it."""
    out = tmp_path_factory.mktemp("evalbag") / "room"
    make_bag(source="synthetic", seed=1, frames=40, out=out, width=320, height=240, progress=False)
    gt = json.loads(out.with_name("room.gt.json").read_text())["objects"]
    return out, gt


def _box(obj: dict) -> dict:
    return {"center": obj["center"], "size": obj["size"], "yaw": obj["yaw"]}


def _unique_objects(gt: list[dict]) -> list[dict]:
    labels = [o["label"] for o in gt]
    return [o for o in gt if labels.count(o["label"]) == 1]


@pytest.fixture(scope="module")
def user_queries(user_bag, tmp_path_factory):
    """What a user writes by hand: boxes in the bag's odom frame (read off their own ground truth)."""
    _bag, gt = user_bag
    target = _unique_objects(gt)[0]
    other = next(o for o in gt if o["object_id"] != target["object_id"]
                 and np.linalg.norm(np.subtract(o["center"], target["center"])) > 1.0)
    absent = next(w for w in ("refrigerator", "toilet", "piano") if all(w not in o["label"] for o in gt))
    queries = [
        {"id": "hit", "question": f"where is the {target['label']}?", "task": "grounding",
         "targets": [_box(target)], "split": "easy"},
        # The user's box is another object's: the (right) answer must count as a miss.
        {"id": "miss", "question": f"the {target['label']}", "task": "grounding", "targets": [_box(other)],
         "split": "hard"},
        {"id": "none", "question": f"are there any {absent}s?", "task": "multi_grounding", "targets": []},
        {"id": 7, "question": "What colour is the bed?", "task": "qa", "answer": ["pink", "red"]},
        {"id": "nan-box", "question": "the chair", "task": "grounding",
         "targets": [{"center": [float("nan"), 0, 0], "size": [1, 1, 1]}]},
        {"id": "hit", "question": "duplicate id", "task": "grounding", "targets": [_box(target)]},
    ]
    path = tmp_path_factory.mktemp("q") / "my_queries.json"
    path.write_text(json.dumps(queries))  # json writes NaN as the bare token many tools emit
    return path, target, other


def _png(data_url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url))).convert("RGB"))


def _color_pixels(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 30) -> int:
    return int(np.all(np.abs(img.astype(int) - np.asarray(rgb)) <= tol, axis=2).sum())


@pytest.fixture(scope="module")
def offline_run(user_bag, user_queries, tmp_path_factory):
    """``scene-vlm eval BAG --queries my_queries.json --out DIR`` (offline, fallback backend)."""
    bag, _gt = user_bag
    out = tmp_path_factory.mktemp("offline") / "eval"
    assert main([str(bag), "--queries", str(user_queries[0]), "--out", str(out), "--no-progress"]) == 0
    return out


def test_user_bag_and_hand_written_queries(offline_run, user_queries):
    _qpath, target, _other = user_queries
    out = offline_run

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["query_format"] == "user" and metrics["mode"] == "offline" and metrics["backend"] == "fallback"
    assert metrics["counts"] == {"records": 6, "asked": 4, "rejected": 2, "skipped": 0}
    assert metrics["rejected"] == {"bad_box": 1, "duplicate_id": 1}
    assert "finite" in metrics["rejection_examples"]["bad_box"]
    g = metrics["tasks"]["grounding"]
    assert g["overall"]["n"] == 2 and g["overall"]["acc@0.25"] == 0.5
    assert g["splits"]["easy"]["acc@0.25"] == 1.0 and g["splits"]["hard"]["acc@0.25"] == 0.0
    assert metrics["tasks"]["multi_grounding"]["overall"]["f1@0.25"] == 1.0, "zero-target rule: 'No.' scores 1"
    assert metrics["tasks"]["qa"]["error_codes"] == {"MODEL_UNAVAILABLE": 1}, "the fallback cannot do QA"
    assert sum(metrics["error_codes"].values()) == 4
    # The node's default integration-rate policy (15 Hz of sensor time) applies offline too.
    mapping = metrics["mapping"]
    assert mapping["frames_read"] == 40 and mapping["frames_integrated"] >= 20
    assert mapping["frames_integrated"] + mapping["frames_skipped_by_rate_policy"] == 40
    assert metrics["instance_recall"]["0.25"] > 0.5

    rows = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    by_id = {r["id"]: r for r in rows}
    assert set(by_id) == {"hit", "miss", "none", "7"}
    assert by_id["hit"]["hit"] is True and by_id["hit"]["iou"] >= 0.25 and by_id["hit"]["error_code"] == "SUCCESS"
    assert by_id["hit"]["boxes"][0]["label"] == target["label"]
    assert by_id["miss"]["hit"] is False and by_id["miss"]["iou"] < 0.25
    assert by_id["miss"]["boxes"] == by_id["hit"]["boxes"], "same question, same answer; only the target differs"
    for r in rows:
        assert set(r) >= {"question", "answer", "boxes", "iou", "latency_s", "error_code"}
        assert r["latency_s"] >= 0 and r["error_code"] in KNOWN_ERROR_CODES

    page = (out / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "Misses (1;" in page and "Latency" in page
    assert "Mapping rate over the replay" in page and "bad_box" in page
    urls = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(urls) >= 3, "BEV, latency histogram, and at least one frame of the miss"
    bev = _png(urls[0])
    assert bev.shape == (768, 768, 3)
    from scene_vlm_ros.eval.report import GREEN, RED

    # One target answered right (green outline), one wrong (red outline).
    assert _color_pixels(bev, GREEN, 10) > 50 and _color_pixels(bev, RED, 10) > 50


def test_report_renders_in_a_browser(offline_run, tmp_path):
    """The page as a person sees it: headless Chromium renders it with its embedded images decoded."""
    import shutil
    import subprocess

    browser = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    if browser is None:
        pytest.skip("no headless Chromium (apt-get install chromium-headless-shell)")
    shot = tmp_path / "report.png"
    subprocess.run([browser, "--no-sandbox", "--disable-gpu", "--headless", f"--screenshot={shot}",
                    "--window-size=1200,1400", (offline_run / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    page = np.asarray(Image.open(shot).convert("RGB"))
    # The BEV (a dark-bordered 768 px picture) is painted: plenty of non-white pixels in the top half.
    top = page[: page.shape[0] // 2]
    assert (top.sum(axis=2) < 300).mean() > 0.05


def test_generated_queries_through_the_cli(user_bag, tmp_path):
    from typer.testing import CliRunner

    from scene_vlm_ros.cli import app

    bag, _gt = user_bag
    out = tmp_path / "gen"
    res = CliRunner().invoke(app, ["eval", str(bag), "--out", str(out), "--no-progress", "--limit", "12"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["query_format"] == "generated" and metrics["counts"]["asked"] == 12
    assert metrics["skipped"].get("camera_frame_question", 0) > 0, "frame-relative questions are counted, not asked"
    assert metrics["tasks"]["grounding"]["overall"]["n"] > 0

    bad = tmp_path / "bad.json"
    bad.write_text('[{"id": 1, "question": "x", "task": "grounding", "targets": [')
    res = CliRunner().invoke(app, ["eval", str(bag), "--queries", str(bad), "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "not valid JSON" in res.output
    assert not (tmp_path / "bad" / "metrics.json").exists()


def test_seven_scenes_folder(kitchen_dir, tmp_path):
    """A 7-Scenes folder as SOURCE (the real kitchen slice): mapped offline, asked, reported."""
    q = tmp_path / "kitchen.json"
    q.write_text(json.dumps([
        {"id": "piano", "question": "are there any pianos?", "task": "multi_grounding", "targets": []},
        {"id": "far", "question": "the table", "task": "grounding",
         "targets": [{"center": [50.0, 50.0, 0.5], "size": [1.0, 1.0, 1.0]}]},
    ]))
    out = tmp_path / "k"
    assert main([str(kitchen_dir), "--queries", str(q), "--out", str(out), "--max-frames", "15",
                 "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["source_kind"] == "7scenes" and m["mapping"]["frames_read"] == 15
    assert m["tasks"]["grounding"]["overall"]["acc@0.25"] == 0.0, "a target 50 m away cannot be hit"
    assert sum(m["error_codes"].values()) == 2 and (out / "report.html").stat().st_size > 10_000


def test_input_errors_are_clear(user_bag, tmp_path):
    bag, _gt = user_bag
    q = tmp_path / "q.json"
    q.write_text(json.dumps([{"id": 1, "question": "the bed", "task": "grounding",
                              "targets": [{"center": [0, 0, 0], "size": [1, 1, 1]}]}]))
    cases = [
        ([str(tmp_path / "nope"), "--queries", str(q)], "does not exist"),
        ([str(bag), "--queries", str(q), "--backend", "transformers"], "needs --model-path"),
        ([str(bag), "--queries", str(q), "--backend", "transformers", "--model-path", str(tmp_path)],
         "backend transformers"),
        ([str(bag), "--queries", str(q), "--prompt-profile", "gpt5"], "unknown prompt profile"),
        ([str(bag), "--queries", str(q), "--topics", "colour=/x"], "--topics"),
        ([str(bag), "--queries", str(q), "--gt", str(tmp_path / "missing.gt.json")], "ground-truth file not found"),
        ([str(bag.parent / "room.gt.json"), "--queries", str(q)], "not a rosbag2 bag"),
    ]
    for argv, message in cases:
        with pytest.raises(EvalInputError, match=message):
            run_eval(parse_args([*argv, "--out", str(tmp_path / "o"), "--no-progress"]))


def test_transformers_backend_end_to_end(user_bag, tmp_path):
    """The tiny random Qwen2-VL through the real loading, the gpt4scene prompt, generation and parsing."""
    pytest.importorskip("transformers")
    from scene_vlm_ros.vlm.backends.tiny import build_tiny_qwen2vl

    bag, _gt = user_bag
    ckpt = build_tiny_qwen2vl(tmp_path / "tiny")
    out = tmp_path / "tf"
    code = main([str(bag), "--out", str(out), "--backend", "transformers", "--model-path", str(ckpt),
                 "--device", "cpu", "--prompt-profile", "gpt4scene", "--n-frames", "2", "--limit", "3",
                 "--max-frames", "20", "--no-progress"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backend"] == "transformers" and metrics["prompt_profile"] == "gpt4scene"
    rows = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    # A random model answers nonsense; the path is what is tested: it answered (no load/templating error).
    assert all(r["error_code"] in ("SUCCESS", "NO_MATCH") for r in rows), [r["error_msg"] for r in rows]
    assert all(isinstance(r["answer"], str) for r in rows)


def test_benchmark_files_on_a_bag(user_bag, tmp_path):
    """ScanRefer and Multi3DRefer files about the bag's scene, targets by object id into its ground
    truth; the benchmark evaluators' numbers land in metrics.json["benchmark"]."""
    bag, gt = user_bag
    labels = [o["label"] for o in gt]
    scanrefer = [{"scene_id": "room", "object_id": str(o["object_id"]), "object_name": o["label"],
                  "ann_id": "0", "description": f"this is the {o['label']}. it is in the room."} for o in gt]
    scanrefer.append({**scanrefer[0], "scene_id": "scene0000_00"})  # another scene: skipped, counted
    (tmp_path / "sr.json").write_text(json.dumps(scanrefer))
    out = tmp_path / "sr"
    assert main([str(bag), "--queries", str(tmp_path / "sr.json"), "--scene-id", "room", "--out", str(out),
                 "--prompt-profile", "gpt4scene", "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["query_format"] == "scanrefer" and m["skipped"] == {"other_scene": 1}
    bench = m["benchmark"]["aabb"]
    assert bench["overall"]["n"] == len(gt)
    n_multiple = sum(labels.count(x) > 1 for x in labels)
    assert bench["multiple"]["n"] == n_multiple and bench["unique"]["n"] == len(gt) - n_multiple
    # The per-row scores and the benchmark evaluator agree (same IoU convention).
    assert bench["overall"]["acc@0.25"] == pytest.approx(m["tasks"]["grounding"]["overall"]["acc_aabb@0.25"])
    assert set(m["tasks"]["grounding"]["splits"]) <= {"unique", "multiple"}

    present = gt[0]["label"]
    m3d = [{"scene_id": "room", "object_ids": [o["object_id"] for o in gt if o["label"] == present],
            "object_name": present, "ann_id": "1", "description": f"the {present}s",
            "eval_type": "mt" if labels.count(present) > 1 else "st_wo_d"},
           {"scene_id": "room", "object_ids": [], "object_name": "piano", "ann_id": "2",
            "description": "the pianos", "eval_type": "zt_wo_d"}]
    (tmp_path / "m3d.json").write_text(json.dumps(m3d))
    out = tmp_path / "m3d"
    assert main([str(bag), "--queries", str(tmp_path / "m3d.json"), "--scene-id", "room", "--out", str(out),
                 "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["benchmark"]["aabb"]["zt_wo_d"] == {"f1@0.25": 1.0, "f1@0.5": 1.0, "n": 1}, "zero-target rule"
    assert m["benchmark"]["aabb"]["overall"]["n"] == 2

    # A benchmark file the reader refuses: one clear file-level error naming the record.
    (tmp_path / "bad_sr.json").write_text(json.dumps([{**scanrefer[0], "object_id": "seven"}]))
    with pytest.raises(EvalInputError, match="record 0.*object_id"):
        run_eval(parse_args([str(bag), "--queries", str(tmp_path / "bad_sr.json"), "--out", str(tmp_path / "x"),
                             "--no-progress"]))


# ---------------------------------------------------------------------------------------------
# Fuzzing the query files
# ---------------------------------------------------------------------------------------------

VALID = {"id": "q", "question": "the red chair", "task": "grounding",
         "targets": [{"center": [1.0, 2.0, 0.5], "size": [0.5, 0.5, 1.0], "yaw": 0.3}]}
GARBAGE = [None, True, 3, -1.5, float("nan"), float("inf"), "", "x" * 3000, "\x00", [], [1, 2], {}, {"a": 1},
           [[1, 2, 3]], ["a", "b", "c"]]


def _invalid_mutations(rng: random.Random) -> list[tuple[str, dict]]:
    """(expected reason family, record) pairs that are all malformed by construction."""
    out: list[tuple[str, dict]] = []
    for field in ("id", "question", "task", "targets"):
        r = json.loads(json.dumps(VALID))
        del r[field]
        out.append((field, r))
    for g in GARBAGE:
        for field in ("id", "question", "task", "targets"):
            if field == "id" and (isinstance(g, int) and not isinstance(g, bool) or (isinstance(g, str) and g.strip()
                                                                                   and g != "\x00")):
                continue  # ints and non-empty strings are valid ids
            r = json.loads(json.dumps(VALID))
            r[field] = g
            out.append((field, r))
        for key in ("center", "size"):
            for k in range(3):
                r = json.loads(json.dumps(VALID))
                r["targets"][0][key][k] = g
                if isinstance(g, (int, float)) and not isinstance(g, bool) and math.isfinite(g) and (
                        key == "center" or g > 0):
                    continue  # still a valid number
                out.append(("box", r))
        r = json.loads(json.dumps(VALID))
        r["targets"][0]["yaw"] = g
        if not (isinstance(g, (int, float)) and not isinstance(g, bool) and math.isfinite(g)):
            out.append(("box", r))
    for _ in range(1500):
        r = json.loads(json.dumps(VALID))
        kind = rng.randrange(6)
        if kind == 0:
            r["targets"][0]["size"][rng.randrange(3)] = -rng.random()
        elif kind == 1:
            r["targets"][0]["center"] = [rng.random() for _ in range(rng.choice([0, 1, 2, 4, 5]))]
        elif kind == 2:
            r["targets"] = [] if rng.random() < 0.5 else r["targets"] * rng.randint(2, 4)  # grounding needs 1
        elif kind == 3:
            r["task"] = rng.choice(["GROUNDING", "auto", "ground", "", "qa "])
        elif kind == 4:
            r = {"id": f"qa{rng.random()}", "question": "how many chairs?", "task": rng.choice(["qa", "spatial"]),
                 "answer": rng.choice([None, True, "", [], [1], {"a": 1}, float("nan")])}
        else:
            r["question"] = rng.choice(["  ", "\x00bad", "y" * 2001, 5, None])
        out.append(("random", r))
    return out


def test_fuzz_malformed_records_are_rejected_and_counted(tmp_path):
    rng = random.Random(0)
    bad = _invalid_mutations(rng)
    assert len(bad) > 1500
    good = [{**VALID, "id": f"good{i}"} for i in range(50)]
    records = [r for _, r in bad] + good
    rng.shuffle(records)
    # Give every bad record a unique id where it has a usable one, so duplicates are not what rejects them.
    for i, r in enumerate(records):
        if isinstance(r, dict) and r.get("id") == "q":
            r["id"] = f"bad{i}"
    path = tmp_path / "fuzz.json"
    path.write_text(json.dumps(records))
    load = load_queries(path)
    assert load.n_records == len(records)
    assert len(load.queries) == len(good) and {q.query_id for q in load.queries} == {g["id"] for g in good}
    assert sum(load.rejected.values()) == len(bad)
    known = {"not_an_object", "missing_id", "bad_id", "bad_task", "bad_question", "bad_box", "bad_targets",
             "missing_answer", "bad_answer", "bad_split", "duplicate_id"}
    assert set(load.rejected) <= known, load.rejected
    assert all(load.examples[k] for k in load.rejected), "each reason comes with a readable example"
    # Each record on its own gives a QueryRecordError with a reason, never another exception.
    for _, r in bad[:300]:
        with pytest.raises(ValueError) as info:
            parse_user_record(r, 0)
        assert getattr(info.value, "reason", None) in known


def test_fuzz_malformed_files_fail_cleanly(tmp_path, user_bag):
    rng = random.Random(1)
    valid_text = json.dumps([VALID])
    payloads: list[bytes] = [b"", b"null", b"3", b'"text"', b"{}", b"[]", b'{"questions": 5}', b"\xff\xfe\x00",
                             b'[{"scene_id": "scene0000_00", "object_id": "x", "description": 5}]',
                             b'[{"question_id": 1, "scene_id": "s", "question": 3}]']
    for _ in range(600):
        cut = rng.randrange(1, len(valid_text) - 1)
        payloads.append(valid_text[:cut].encode())  # truncated
        blob = bytearray(valid_text.encode())
        for _ in range(3):
            blob[rng.randrange(len(blob))] = rng.randrange(256)
        payloads.append(bytes(blob))  # corrupted bytes
    n_file_errors = n_loaded = 0
    for i, data in enumerate(payloads):
        p = tmp_path / f"f{i}.json"
        p.write_bytes(data)
        try:
            load = load_queries(p)
        except QueryFileError as exc:
            assert str(p) in str(exc)
            n_file_errors += 1
            continue
        n_loaded += 1
        assert len(load.queries) + sum(load.rejected.values()) + sum(load.skipped.values()) == load.n_records
    assert n_file_errors > 600 and n_file_errors + n_loaded == len(payloads)
    # The command turns the same files into exit status 2 and a message, not a traceback.
    bag, _gt = user_bag
    assert main([str(bag), "--queries", str(tmp_path / "f0.json"), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 2


# ---------------------------------------------------------------------------------------------
# Live: a node in another process, the bag replayed onto its topics
# ---------------------------------------------------------------------------------------------


@pytest.mark.ros
def test_live_equals_offline_on_grounding(user_bag, user_queries, offline_run, tmp_path):
    pytest.importorskip("rclpy")
    bag, _gt = user_bag
    qpath, _target, _other = user_queries
    offline, live = offline_run, tmp_path / "live"
    assert main([str(bag), "--queries", str(qpath), "--out", str(live), "--live", "--rate", "0.25",
                 "--no-progress"]) == 0
    m_off = json.loads((offline / "metrics.json").read_text())
    m_live = json.loads((live / "metrics.json").read_text())
    assert m_live["mode"] == "live"
    # Same rate policy on both paths, and nothing lost on the way through DDS and the synchroniser.
    assert m_live["mapping"]["frames_integrated"] == m_off["mapping"]["frames_integrated"], json.dumps(
        m_live["mapping"])
    for key in ("acc@0.25", "acc@0.5"):
        assert m_live["tasks"]["grounding"]["overall"][key] == m_off["tasks"]["grounding"]["overall"][key]
    rows_off = {r["id"]: r for r in map(json.loads, (offline / "answers.jsonl").read_text().splitlines())}
    rows_live = {r["id"]: r for r in map(json.loads, (live / "answers.jsonl").read_text().splitlines())}
    for qid, r in rows_off.items():
        if r["task"] == "grounding":
            assert rows_live[qid]["hit"] == r["hit"]
            assert rows_live[qid]["boxes"][0]["label"] == r["boxes"][0]["label"]
            assert rows_live[qid]["iou"] == pytest.approx(r["iou"], abs=0.15)
    assert (live / "report.html").is_file() and m_live["latency"]["n"] == 4
