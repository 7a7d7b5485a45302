"""Benchmark annotation readers on the real shared records and on hand-written fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scene_vlm_ros.datasets.benchmarks import (
    BenchmarkFormatError,
    Multi3DReferRecord,
    ScanQARecord,
    ScanReferRecord,
    SQA3DRecord,
    load_benchmark,
    load_multi3drefer,
    load_scan2cap,
    load_scanqa,
    load_scanrefer,
    load_sqa3d,
    read_scannet_label_map,
    scanrefer_splits,
    sniff_benchmark,
    sqa3d_question_type,
)

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"


def _raw(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


# ------------------------------------------------------------------ real shared records


def test_scanqa_real_records(formats_dir: Path) -> None:
    path = formats_dir / "scanqa_v1.0_val_first200.json"
    raw = _raw(path)
    records = load_scanqa(path)
    assert len(records) == len(raw) == 200
    assert all(isinstance(r, ScanQARecord) for r in records)
    for r, x in zip(records, raw):
        assert r.question_id == x["question_id"] and r.scene_id == x["scene_id"]
        assert list(r.answers) == x["answers"] and list(r.object_ids) == x["object_ids"]
        assert list(r.object_names) == x["object_names"]
    assert sniff_benchmark(path) == "scanqa"
    assert load_benchmark("auto", path) == records


def test_scanrefer_rekeyed_real_records(formats_dir: Path) -> None:
    path = formats_dir / "scanrefer_val_rekeyed_sample.json"
    raw = _raw(path)
    records = load_scanrefer(path)
    assert len(records) == 300
    for r, x in zip(records, raw):
        assert isinstance(r, ScanReferRecord)
        assert (r.scene_id, r.object_id, r.description, r.program) == (
            x["scan_id"], x["target_id"], x["caption"], x["program"]
        )
        # the re-keyed form has no class name: no split without the scenes' object lists
        assert r.object_name is None and r.split is None
    assert sniff_benchmark(path) == "scanrefer"


def test_scanrefer_rekeyed_split_from_scene_labels(formats_dir: Path) -> None:
    path = formats_dir / "scanrefer_val_rekeyed_sample.json"
    first = load_scanrefer(path)[0]
    # a made-up object list for that scene: the target's class twice -> multiple
    labels = {first.scene_id: {first.object_id: "chair", 10_000: "chair", 10_001: "desk"}}
    again = load_scanrefer(path, scene_labels=labels)[0]
    assert again.split == "multiple"
    labels = {first.scene_id: {first.object_id: "chair", 10_001: "desk"}}
    assert load_scanrefer(path, scene_labels=labels)[0].split == "unique"


def test_scan2cap_groups_descriptions_per_object(formats_dir: Path) -> None:
    path = formats_dir / "scanrefer_val_rekeyed_sample.json"
    raw = _raw(path)
    caps = load_scan2cap(path)
    expected: dict[tuple[str, int], list[str]] = {}
    for x in raw:
        expected.setdefault((x["scan_id"], x["target_id"]), []).append(x["caption"])
    assert {(c.scene_id, c.object_id): list(c.captions) for c in caps} == expected
    assert len(caps) == len(expected) < len(raw)  # some objects have several descriptions
    assert load_benchmark("scan2cap", path) == caps


def test_sqa3d_join_real_records(formats_dir: Path) -> None:
    qpath = formats_dir / "sqa3d_test_questions_first200.json"
    apath = formats_dir / "sqa3d_test_annotations_first200.json"
    questions = {q["question_id"]: q for q in _raw(qpath)["questions"]}
    annotations = {a["question_id"]: a for a in _raw(apath)["annotations"]}
    records = load_sqa3d(qpath, apath)
    assert len(records) == 200
    for r in records:
        assert isinstance(r, SQA3DRecord)
        q, a = questions[r.question_id], annotations[r.question_id]
        assert r.situation == q["situation"] and r.question == q["question"]
        assert list(r.answers) == [x["answer"] for x in a["answers"]]
        assert r.position_m == (a["position"]["x"], a["position"]["y"], a["position"]["z"])
        assert r.rotation_xyzw == tuple(a["rotation"][k] for k in ("_x", "_y", "_z", "_w"))
    types = {r.question_type for r in records}
    assert types == {"what", "is", "how", "can", "which", "other"}
    # either file of the pair finds its partner and gives the same records
    assert sniff_benchmark(qpath) == sniff_benchmark(apath) == "sqa3d"
    assert load_benchmark("auto", qpath) == records
    assert load_benchmark("auto", apath) == records


def test_sqa3d_questions_only(formats_dir: Path, tmp_path: Path) -> None:
    qpath = tmp_path / "questions_only.json"
    qpath.write_text((formats_dir / "sqa3d_test_questions_first200.json").read_text())
    records = load_benchmark("sqa3d", qpath)
    assert len(records) == 200 and all(r.answers == () and r.position_m is None for r in records)


def test_sqa3d_missing_annotation_is_named(formats_dir: Path, tmp_path: Path) -> None:
    ann = _raw(formats_dir / "sqa3d_test_annotations_first200.json")
    dropped = ann["annotations"].pop(5)["question_id"]
    apath = tmp_path / "ann.json"
    apath.write_text(json.dumps(ann))
    with pytest.raises(BenchmarkFormatError, match=rf"question_id={dropped}.*no annotation"):
        load_sqa3d(formats_dir / "sqa3d_test_questions_first200.json", apath)


# ------------------------------------------------------------------ hand-written fixtures


def test_sqa3d_question_type_is_the_benchmark_prefix_rule() -> None:
    assert sqa3d_question_type("  What is on my left?") == "what"
    assert sqa3d_question_type("Is the door open?") == "is"
    assert sqa3d_question_type("Isn't the lamp on?") == "is"  # prefix, like the benchmark code
    assert sqa3d_question_type("How many chairs?") == "how"
    assert sqa3d_question_type("Can I sit here?") == "can"
    assert sqa3d_question_type("Which way is the door?") == "which"
    assert sqa3d_question_type("Are there two sinks?") == "other"
    assert sqa3d_question_type("Where is the sofa?") == "other"


def test_multi3drefer_fixture() -> None:
    path = FIXTURES / "multi3drefer_hand_written.json"
    records = load_multi3drefer(path)
    assert [r.eval_type for r in records] == ["zt_w_d", "zt_wo_d", "st_w_d", "st_wo_d", "mt", "mt"]
    assert all(isinstance(r, Multi3DReferRecord) for r in records)
    assert [r.is_zero_target for r in records] == [True, True, False, False, False, False]
    assert records[4].object_ids == (4, 5, 6) and records[4].ann_id == "4"
    assert sniff_benchmark(path) == "multi3drefer"
    assert load_benchmark("auto", path) == records


def test_scanrefer_original_form_and_split() -> None:
    path = FIXTURES / "scanrefer_original_hand_written.json"
    records = load_scanrefer(path)
    by_key = {(r.scene_id, r.object_id, r.ann_id): r for r in records}
    assert by_key[("scene0011_00", 4, "0")].tokens[:3] == ("the", "brown", "chair")
    # the annotation set's classes: two annotated chairs in scene0011_00, one in scene0015_00
    assert {k: r.split for k, r in by_key.items()} == {
        ("scene0011_00", 4, "0"): "multiple",
        ("scene0011_00", 4, "1"): "multiple",
        ("scene0011_00", 5, "0"): "multiple",
        ("scene0011_00", 15, "0"): "unique",
        ("scene0011_00", 3, "0"): "unique",
        ("scene0015_00", 2, "0"): "unique",
        ("scene0015_00", 1, "0"): "unique",
    }


def test_scanrefer_split_prefers_scene_object_list() -> None:
    records = load_scanrefer(FIXTURES / "scanrefer_original_hand_written.json")
    # scene0015_00's own object list has a second chair (never annotated): its chair becomes multiple
    scene_labels = {"scene0015_00": {1: "desk", 2: "chair", 8: "chair"}}
    splits = scanrefer_splits(records, scene_labels=scene_labels)
    got = {(r.scene_id, r.object_id): s for r, s in zip(records, splits)}
    assert got[("scene0015_00", 2)] == "multiple" and got[("scene0015_00", 1)] == "unique"
    assert got[("scene0011_00", 15)] == "unique"  # other scenes still use the annotation set


def test_scanrefer_split_with_label_map(tmp_path: Path) -> None:
    tsv = tmp_path / "scannetv2-labels.combined.tsv"
    header = ["id", "raw_category", "category", "count", "nyuId", "nyu40id", "eigen13id", "nyu40class"]
    rows = [
        ["1", "dining table", "table", "5", "1", "7", "1", "table"],
        ["2", "coffee table", "table", "5", "1", "7", "1", "table"],
        ["3", "chair", "chair", "5", "1", "5", "1", "chair"],
        ["4", "piano", "piano", "5", "1", "39", "1", "otherfurniture"],
    ]
    tsv.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n")
    label_map = read_scannet_label_map(tsv)
    assert label_map == {"dining table": "table", "coffee table": "table", "chair": "chair", "piano": "others"}
    records = [
        ScanReferRecord("s", 1, "d", object_name="dining_table"),
        ScanReferRecord("s", 2, "d", object_name="coffee_table"),
        ScanReferRecord("s", 3, "d", object_name="chair"),
        ScanReferRecord("s", 4, "d", object_name="piano"),
        ScanReferRecord("s", 5, "d", object_name="bookcase_of_unknown_kind"),
    ]
    # both tables map to "table"; piano and the unknown name both count as "others"
    assert scanrefer_splits(records, label_map=label_map) == ["multiple", "multiple", "unique", "multiple", "multiple"]
    assert scanrefer_splits(records) == ["unique"] * 5  # raw names: all distinct


# ------------------------------------------------------------------ malformed input


@pytest.mark.parametrize(
    ("content", "kind", "message"),
    [
        ("{not json", "scanqa", r"bad\.json: not valid JSON"),
        ('{"a": 1}', "scanqa", r"expected a JSON list"),
        ("[1, 2]", "scanqa", r"record 0 is a int"),
        (
            '[{"question_id": "q1", "scene_id": "s"}]',
            "scanqa",
            r"record 0 \(question_id='q1'\): missing field 'question'",
        ),
        (
            '[{"question_id": "q", "scene_id": "s", "question": "?", "answers": "yes"}]',
            "scanqa",
            r"field 'answers' must be a list",
        ),
        (
            '[{"scene_id": "s", "object_id": "x7", "object_name": "c", "ann_id": "0", "description": "d"}]',
            "scanrefer",
            r"field 'object_id' must be an integer id, got 'x7'",
        ),
        (
            '[{"scene_id": "s", "object_ids": [1], "object_name": "c", "ann_id": 3, "description": "d",'
            ' "eval_type": "zt"}]',
            "multi3drefer",
            r"record 0 \(ann_id=3\): eval_type 'zt' is not one of",
        ),
        (
            '[{"scene_id": "s", "object_ids": [1], "object_name": "c", "ann_id": 3, "description": "d",'
            ' "eval_type": "zt_w_d"}]',
            "multi3drefer",
            r"zero-target eval_type 'zt_w_d' with object_ids \[1\]",
        ),
        (
            '[{"scene_id": "s", "object_ids": [1], "object_name": "c", "ann_id": 3, "description": "d",'
            ' "eval_type": "mt"}]',
            "multi3drefer",
            r"multi-target eval_type 'mt' with 1 object id",
        ),
        ('[{"foo": 1}]', "auto", r"match none of"),
        ("[]", "auto", r"empty list"),
        ('{"questions": 3}', "sqa3d", r"expected a JSON list of records, got int"),
        ('{"foo": []}', "sqa3d", r"not an SQA3D questions or annotations file"),
    ],
)
def test_malformed_files_name_file_and_record(tmp_path: Path, content: str, kind: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(BenchmarkFormatError, match=message) as info:
        load_benchmark(kind, path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_file_and_unknown_kind_and_option(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_benchmark("auto", tmp_path / "nope.json")
    path = FIXTURES / "multi3drefer_hand_written.json"
    with pytest.raises(ValueError, match="unknown benchmark kind 'refer'"):
        load_benchmark("refer", path)
    with pytest.raises(ValueError, match=r"\['label_map'\] not understood by the multi3drefer reader"):
        load_benchmark("multi3drefer", path, label_map={})


def test_sqa3d_annotations_file_without_partner(tmp_path: Path) -> None:
    path = tmp_path / "only_annotations.json"
    path.write_text(json.dumps({"annotations": []}))
    with pytest.raises(BenchmarkFormatError, match="pass the questions file"):
        load_benchmark("auto", path)
