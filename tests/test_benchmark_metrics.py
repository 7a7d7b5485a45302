"""Benchmark metrics against hand-computed values, and the caption metrics against the reference
pycocoevalcap scorers (golden numbers in tests/fixtures/benchmarks/caption_golden.json, regenerated
by make_caption_golden.py beside it)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from scene_vlm_ros.core.types import OrientedBox3D
from scene_vlm_ros.eval import query_metrics
from scene_vlm_ros.eval.benchmark_metrics import (
    answer_match,
    grounding_accuracy,
    mean_relative_accuracy,
    multi3drefer_f1,
    normalize_answer,
    numeric_mra,
    qa_metrics,
    scan2cap_metrics,
    target_f1,
    to_box,
)
from scene_vlm_ros.eval.caption_metrics import CaptionScorerError, caption_scores, java_available

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"
needs_java = pytest.mark.skipif(not java_available(), reason="no 'java' on PATH (scripts/setup.d/30-java.sh)")
FAST_SCORERS = ("BLEU", "ROUGE-L", "CIDEr")  # no METEOR JVM (several seconds) where it adds nothing


def cube(x: float, y: float = 0.0, z: float = 0.0, yaw: float = 0.0) -> OrientedBox3D:
    return OrientedBox3D((x, y, z), (1.0, 1.0, 1.0), yaw)


# ------------------------------------------------------------------ boxes


def test_box_forms_are_one_box() -> None:
    ref = OrientedBox3D((1.0, 2.0, 0.5), (2.0, 1.0, 1.0))
    assert to_box({"center": [1, 2, 0.5], "size": [2, 1, 1]}) == ref
    assert to_box([[0, 1.5, 0], [2, 2.5, 1]]) == ref
    assert to_box(ref.corners()) == ref
    assert to_box({"center": [0, 0, 0], "size": [1, 1, 1], "yaw": 0.3}).yaw == 0.3


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([0, 0, 0, 1, 1, 1], r"\(2, 3\) bounds"),
        ([[1, 0, 0], [0, 1, 1]], "min <= max"),
        ({"center": [0, 0], "size": [1, 1, 1]}, "3 numbers"),
        ({"center": [0, 0, float("nan")], "size": [1, 1, 1]}, "non-finite"),
        ({"size": [1, 1, 1]}, "'center' and 'size'"),
        ("box", "not a box"),
    ],
)
def test_bad_boxes_are_refused(bad, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        to_box(bad)


# ------------------------------------------------------------------ grounding (ScanRefer)


def test_grounding_accuracy_unique_multiple_by_hand() -> None:
    targets = [cube(0), cube(10), cube(20), cube(30), cube(40)]
    predictions = [
        cube(0),  # IoU 1
        cube(10.5),  # IoU 0.5 / 1.5 = 1/3
        None,  # no answer: 0
        cube(30.2),  # IoU 0.8 / 1.2 = 2/3
        cube(42),  # 0
    ]
    splits = ["unique", "multiple", "multiple", "unique", None]
    out = grounding_accuracy(predictions, targets, splits)
    assert out["ious"] == pytest.approx([1.0, 1 / 3, 0.0, 2 / 3, 0.0])
    assert out["overall"] == pytest.approx({"acc@0.25": 3 / 5, "acc@0.5": 2 / 5, "n": 5})
    assert out["unique"] == pytest.approx({"acc@0.25": 1.0, "acc@0.5": 1.0, "n": 2})
    assert out["multiple"] == pytest.approx({"acc@0.25": 0.5, "acc@0.5": 0.0, "n": 2})
    json.dumps(out)  # plain types only
    # without splits: overall only; an empty split is None, not a made-up number
    assert set(grounding_accuracy(predictions, targets)) == {"overall", "ious"}
    only_unique = grounding_accuracy([cube(0)], [cube(0)], ["unique"])
    assert only_unique["multiple"] == {"acc@0.25": None, "acc@0.5": None, "n": 0}


def test_grounding_box_conventions_differ_on_rotated_boxes() -> None:
    # a unit cube and the same cube turned 45 degrees about z
    target, pred = cube(0), cube(0, yaw=math.pi / 4)
    overlap = 2 * math.sqrt(2) - 2  # octagon: square and rotated square, same centre
    oriented = grounding_accuracy([pred], [target], convention="oriented")["ious"][0]
    aabb = grounding_accuracy([pred], [target], convention="aabb")["ious"][0]
    assert oriented == pytest.approx(overlap / (2 - overlap))  # 0.707
    assert aabb == pytest.approx(1 / 2)  # the turned cube's bounds are sqrt(2) x sqrt(2) x 1
    with pytest.raises(ValueError, match="unknown box convention"):
        grounding_accuracy([pred], [target], convention="obb")


def test_grounding_input_errors() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        grounding_accuracy([cube(0)], [cube(0), cube(1)])
    with pytest.raises(ValueError, match="split must be one of"):
        grounding_accuracy([cube(0)], [cube(0)], ["easy"])
    with pytest.raises(ValueError, match="thresholds must be in"):
        grounding_accuracy([cube(0)], [cube(0)], thresholds=(0.0,))


# ------------------------------------------------------------------ Multi3DRefer


def test_multi3drefer_f1_by_hand() -> None:
    predictions = [
        [cube(0), cube(3.5)],  # mt: IoU 1 and 1/3 -> TP@0.25 = 2, TP@0.5 = 1 of 2 + 2 boxes
        [cube(0), cube(10)],  # st_w_d: one hit, one extra -> 2 * 1 / 3
        [],  # zt_w_d: nothing predicted for a zero-target description -> 1
        [cube(0)],  # zt_wo_d: something predicted -> 0
        [],  # st_wo_d: nothing predicted for a real target -> 0
    ]
    targets = [[cube(0), cube(3)], [cube(0)], [], [], [cube(0)]]
    eval_types = ["mt", "st_w_d", "zt_w_d", "zt_wo_d", "st_wo_d"]
    out = multi3drefer_f1(predictions, targets, eval_types)
    assert [p["f1@0.25"] for p in out["per_item"]] == pytest.approx([1.0, 2 / 3, 1.0, 0.0, 0.0])
    assert [p["f1@0.5"] for p in out["per_item"]] == pytest.approx([0.5, 2 / 3, 1.0, 0.0, 0.0])
    assert out["overall"] == pytest.approx({"f1@0.25": (1 + 2 / 3 + 1) / 5, "f1@0.5": (0.5 + 2 / 3 + 1) / 5, "n": 5})
    assert out["mt"] == pytest.approx({"f1@0.25": 1.0, "f1@0.5": 0.5, "n": 1})
    assert out["zt_w_d"]["f1@0.5"] == 1.0 and out["zt_wo_d"]["f1@0.5"] == 0.0
    json.dumps(out)


def bar(lo: float, hi: float) -> OrientedBox3D:
    """A 1 x 1 cross-section box spanning [lo, hi] along x: IoU reduces to interval IoU."""
    return OrientedBox3D(((lo + hi) / 2, 0.0, 0.0), (hi - lo, 1.0, 1.0))


def test_multi3drefer_matching_maximises_total_iou() -> None:
    g1, g2 = bar(0.0, 2.0), bar(0.8, 2.8)
    p1, p2 = bar(0.2, 2.2), bar(-0.5, 1.5)
    # IoU(p1,g1) = 1.8/2.2 = 0.818, IoU(p1,g2) = 1.4/2.6 = 0.538,
    # IoU(p2,g1) = 1.5/2.5 = 0.6,   IoU(p2,g2) = 0.7/3.3 = 0.212.
    # Greedy (best pair first) would match p1-g1, p2-g2: one TP at 0.5. Hungarian on the IoU sum
    # (0.538 + 0.6 > 0.818 + 0.212) matches p1-g2, p2-g1: two TP at 0.5, none at 0.7.
    scores = target_f1([p1, p2], [g1, g2], thresholds=(0.5, 0.7))
    assert scores == pytest.approx({0.5: 1.0, 0.7: 0.0})


def test_zero_target_rule() -> None:
    assert target_f1([], []) == {0.25: 1.0, 0.5: 1.0}
    assert target_f1([cube(0)], []) == {0.25: 0.0, 0.5: 0.0}
    # the eval type decides, whatever boxes come with it
    assert target_f1([], [cube(0)], zero_target=True) == {0.25: 1.0, 0.5: 1.0}
    with pytest.raises(ValueError, match="item 0: a description that is not zero-target"):
        multi3drefer_f1([[]], [[]], ["st_w_d"])
    with pytest.raises(ValueError, match="eval_type 'zt' is not one of"):
        multi3drefer_f1([[]], [[]], ["zt"])


def test_query_metrics_shares_f1_and_mra() -> None:
    # query_metrics (the synthetic-bag scorer) uses the same implementations, oriented IoU
    assert query_metrics.mean_relative_accuracy is mean_relative_accuracy
    assert query_metrics.multi_grounding_f1([cube(0), cube(3.5)], [cube(0), cube(3)], 0.5) == pytest.approx(0.5)
    assert query_metrics.multi_grounding_f1([], [], 0.5) == 1.0


# ------------------------------------------------------------------ QA (ScanQA, SQA3D)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("The Brown Chair.", "brown chair"),
        ("2", "two"),
        ("none", "zero"),
        ("10 chairs", "ten chairs"),
        ("Backwards!", "backward"),
        ("a  tv  ", "TV"),
        ("mat2", "mat"),
        ("it's on the letf", "it's on left"),
        ("in a box", "in box"),
        ("1.5", "fifteen"),  # the benchmark's own quirk: '.' is dropped before numbers become words
    ],
)
def test_normalize_answer(raw: str, clean: str) -> None:
    assert normalize_answer(raw) == clean


def test_answer_match_em_and_refined() -> None:
    assert answer_match("brown", ["dark brown", "brown"]) == (1.0, 1.0)
    assert answer_match("Two", ["2"]) == (1.0, 1.0)
    assert answer_match("dark brown chair", ["dark brown"]) == (0.0, 1.0)
    assert answer_match("blackboard", ["black board"]) == (0.0, 1.0)  # spaces removed both ways
    assert answer_match("white", ["black"]) == (0.0, 0.0)
    assert answer_match("", ["brown"]) == (0.0, 0.0)
    assert answer_match("?!", ["brown"]) == (0.0, 0.0)  # empty after normalisation


def test_qa_metrics_per_question_type_by_hand() -> None:
    predictions = ["brown", "yes", "the left", "3"]
    answers = [["dark brown", "brown"], ["no"], ["left side"], ["three"]]
    types = ["what", "is", "what", "other"]
    out = qa_metrics(predictions, answers, types, caption_scorers=())
    assert [p["EM"] for p in out["per_item"]] == [1.0, 0.0, 0.0, 1.0]
    assert [p["EM-R"] for p in out["per_item"]] == [1.0, 0.0, 1.0, 1.0]
    assert out["overall"] == {"EM": 0.5, "EM-R": 0.75, "n": 4}
    assert out["what"] == {"EM": 0.5, "EM-R": 1.0, "n": 2}
    assert out["is"] == {"EM": 0.0, "EM-R": 0.0, "n": 1}
    assert out["other"] == {"EM": 1.0, "EM-R": 1.0, "n": 1}
    with pytest.raises(ValueError, match="answers 1 must be a non-empty list"):
        qa_metrics(["a", "b"], [["a"], "b"], caption_scorers=())


@needs_java
def test_qa_metrics_caption_scores_by_hand() -> None:
    # one word each: corpus BLEU-1 = 1 correct of 2 candidate words (lengths equal: no penalty)
    out = qa_metrics(["Brown.", "two"], [["brown"], ["3"]], caption_scorers=FAST_SCORERS)
    assert out["overall"]["BLEU-1"] == pytest.approx(0.5, abs=1e-6)
    assert out["overall"]["ROUGE-L"] == pytest.approx(0.5)
    assert out["overall"]["EM"] == 0.5
    assert "METEOR" not in out["overall"]


# ------------------------------------------------------------------ caption metrics


@pytest.fixture(scope="module")
def caption_set() -> dict:
    return json.loads((FIXTURES / "caption_set.json").read_text())


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads((FIXTURES / "caption_golden.json").read_text())


@needs_java
def test_caption_scores_match_reference_scorers(caption_set: dict, golden: dict) -> None:
    out = caption_scores(caption_set["candidates"], caption_set["references"])
    assert out["n"] == len(caption_set["candidates"])
    assert set(out["corpus"]) == set(golden["corpus"])
    for name, value in golden["corpus"].items():
        assert out["corpus"][name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    for name, values in golden["per_item"].items():
        assert out["per_item"][name] == pytest.approx(values, rel=1e-9, abs=1e-12), name
    # hand-checkable items: "red chair near the door" vs "red chair near the window"
    assert out["per_item"]["BLEU-1"][0] == pytest.approx(4 / 5, abs=1e-6)
    assert out["per_item"]["BLEU-2"][0] == pytest.approx(math.sqrt(4 / 5 * 3 / 4), abs=1e-6)
    assert out["per_item"]["ROUGE-L"][0] == pytest.approx(4 / 5)  # LCS 4 of 5 both ways
    # an exact copy scores 1, an empty caption 0
    assert [out["per_item"][f"BLEU-{k}"][1] for k in (1, 2, 3, 4)] == pytest.approx([1.0] * 4, abs=1e-6)
    assert out["per_item"]["ROUGE-L"][1] == 1.0
    assert all(out["per_item"][m][-1] == 0.0 for m in out["per_item"])


@needs_java
def test_scan2cap_m_at_k_iou(caption_set: dict, golden: dict) -> None:
    n = len(caption_set["candidates"])
    gt_boxes = [cube(10 * i) for i in range(n)]
    pred_boxes = [cube(0), cube(10.5), None, cube(30), cube(40.2), cube(55), cube(60)]
    ious = [1.0, 1 / 3, 0.0, 1.0, 2 / 3, 0.0, 1.0]
    out = scan2cap_metrics(
        caption_set["candidates"], pred_boxes, gt_boxes, caption_set["references"], caption_scorers=FAST_SCORERS
    )
    assert out["ious"] == pytest.approx(ious)
    assert out["n"] == n
    for metric in ("CIDEr", "BLEU-4", "ROUGE-L"):
        per = golden["per_item"][metric]
        at_025 = sum(p for p, iou in zip(per, ious) if iou >= 0.25) / n
        at_05 = sum(p for p, iou in zip(per, ious) if iou >= 0.5) / n
        assert out["m@0.25"][metric] == pytest.approx(at_025, rel=1e-9), metric
        assert out["m@0.5"][metric] == pytest.approx(at_05, rel=1e-9), metric
    assert out["m@0.5"]["CIDEr"] < out["m@0.25"]["CIDEr"] < golden["corpus"]["CIDEr"]


def test_caption_scores_input_errors() -> None:
    with pytest.raises(ValueError, match="2 candidates but 1 reference"):
        caption_scores(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="references 0 must be a non-empty list"):
        caption_scores(["a"], [[]])
    with pytest.raises(ValueError, match="scorers must be a non-empty subset"):
        caption_scores(["a"], [["a"]], scorers=("SPICE",))


def test_caption_scores_without_java_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no java anywhere
    with pytest.raises(CaptionScorerError, match="'java' executable on PATH.*default-jre-headless"):
        caption_scores(["a chair"], [["a chair"]])


def test_caption_scores_with_failing_java_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "java"
    fake.write_text("#!/bin/sh\necho 'Error: could not create the Java Virtual Machine.' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    with pytest.raises(CaptionScorerError, match="PTB tokenizer \\(java\\) returned"):
        caption_scores(["a chair", "a table"], [["a chair"], ["the table"]])


# ------------------------------------------------------------------ SPAR numeric answers


@pytest.mark.parametrize(
    ("pred", "truth", "expected"),
    [
        (10.0, 10.0, 1.0),
        (9.0, 10.0, 0.8),  # rel 0.10 < 1 - t for t = 0.50 .. 0.85 (8 of 10)
        (6.0, 10.0, 0.2),  # rel 0.40 < 0.50, 0.45 only
        (5.0, 10.0, 0.0),  # rel 0.50 is not < 0.50
        (-9.0, -10.0, 0.8),
        (0.0, 0.0, 1.0),
        (1.0, 0.0, 0.0),
        (float("nan"), 3.0, 0.0),
    ],
)
def test_mean_relative_accuracy(pred: float, truth: float, expected: float) -> None:
    assert mean_relative_accuracy(pred, truth) == pytest.approx(expected)


def test_numeric_mra() -> None:
    out = numeric_mra([9.0, None, 6.0], [10.0, 3.0, 10.0])
    assert out["per_item"] == pytest.approx([0.8, 0.0, 0.2])
    assert out["mra"] == pytest.approx((0.8 + 0.0 + 0.2) / 3)
    assert (out["n"], out["unanswered"]) == (3, 1)
    assert numeric_mra([], [])["mra"] is None


# ------------------------------------------------------------------ readers + metrics on the real records


def test_scanqa_real_answers_score_as_exact_matches(formats_dir: Path) -> None:
    from scene_vlm_ros.datasets.benchmarks import load_benchmark

    records = load_benchmark("auto", formats_dir / "scanqa_v1.0_val_first200.json")
    answers = [list(r.answers) for r in records]
    # an answer dressed up ("The ...", capitals, full stop) is still an exact match after normalisation
    dressed = [f"The {r.answers[0].capitalize()}." for r in records]
    out = qa_metrics(dressed, answers, caption_scorers=())
    assert out["overall"] == {"EM": 1.0, "EM-R": 1.0, "n": len(records)}
    # answering every question with another question's answer scores far lower
    shifted = [records[(i + 7) % len(records)].answers[0] for i in range(len(records))]
    assert qa_metrics(shifted, answers, caption_scorers=())["overall"]["EM"] < 0.5


def test_sqa3d_real_records_per_question_type(formats_dir: Path) -> None:
    from scene_vlm_ros.datasets.benchmarks import load_benchmark

    records = load_benchmark("auto", formats_dir / "sqa3d_test_questions_first200.json")
    types = [r.question_type for r in records]
    predictions = [r.answers[0] if r.question_type != "what" else "" for r in records]
    out = qa_metrics(predictions, [list(r.answers) for r in records], types, caption_scorers=())
    assert out["what"] == {"EM": 0.0, "EM-R": 0.0, "n": types.count("what")}
    for t in ("is", "how", "can", "which", "other"):
        assert out[t] == {"EM": 1.0, "EM-R": 1.0, "n": types.count(t)}
    assert out["overall"]["EM"] == pytest.approx(1 - types.count("what") / len(records))
