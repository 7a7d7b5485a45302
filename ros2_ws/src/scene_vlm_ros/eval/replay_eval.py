"""Evaluation of questions against a mapped scene: query files in, answers and scores out (no rclpy).

``scene-vlm eval`` (:mod:`scene_vlm_ros.commands.eval_cmd`) maps a source, then asks every query
through one callable (offline: the node's :class:`~scene_vlm_ros.vlm.engine.QueryEngine` on the
snapshot; live: ``/scene_query`` of a running node) and scores the answers here. This module holds
the pieces that do not depend on how a question is asked:

- :func:`load_queries`: three query-file formats into one :class:`EvalQuery` list, rejecting each
  malformed record with a counted reason instead of failing the whole file:

  1. a plain list a user writes: ``{"id", "question", "task", "targets": [{"center": [x, y, z],
     "size": [dx, dy, dz], "yaw": rad}]}`` (boxes in the map/odom frame of the source, metres) or
     ``"answer"`` (a string, a number, or a list of acceptable strings); optional ``"split"`` and
     ``"situation"``;
  2. our generated ``X.queries.json`` (:mod:`scene_vlm_ros.datasets.questions`), targets by id into
     the ground-truth table;
  3. a benchmark annotation file (ScanRefer, Multi3DRefer, ScanQA, SQA3D, Scan2Cap through
     :mod:`scene_vlm_ros.datasets.benchmarks`), targets by ScanNet object id into the ground-truth
     table, filtered to the evaluated scene.

- :func:`score_row`: one answer against its query (Acc@IoU, F1@IoU, exact match, MRA);
- :func:`aggregate`: ``metrics.json`` (per task and split, counts, error codes, rejections, latency).
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..core.geometry import box_iou
from ..core.types import GroundTruthObject, Instance, OrientedBox3D
from ..vlm.engine import MAX_QUESTION_CHARS, ErrorCode, QueryRequest, QueryResult
from ..vlm.types import Task
from .query_metrics import first_number

#: Tasks a query file may name (``auto`` is not accepted: scoring needs to know what was asked).
QUERY_TASKS = ("grounding", "multi_grounding", "qa", "caption", "spatial")
IOU_THRESHOLDS = (0.25, 0.5)


class QueryFileError(ValueError):
    """The query file as a whole is unusable (missing, not JSON, no records, unknown layout)."""


class QueryRecordError(ValueError):
    """One record is malformed; ``reason`` is a short key counted in ``metrics.json``."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class EvalQuery:
    """One question with what it is scored against (world = the source's map/odom frame, metres).

    ``targets`` are the ground-truth boxes (grounding: one; multi-grounding: zero or more;
    caption: the object to describe). ``answers`` are acceptable texts (QA, caption references);
    ``value`` a numeric answer scored by MRA. ``split`` is the benchmark split (ScanRefer
    unique/multiple, Multi3DRefer eval_type, SQA3D question type, the generator's family, or the
    user's own). ``question`` is what is sent (SQA3D: the situation then the question).
    """

    query_id: str
    question: str
    task: str
    targets: tuple[OrientedBox3D, ...] = ()
    answers: tuple[str, ...] = ()
    value: Optional[float] = None
    split: Optional[str] = None
    source_format: str = "user"
    target_ids: tuple[int, ...] = ()


@dataclass
class QueryLoad:
    """Result of :func:`load_queries`: the usable queries and why the others were not used.

    ``rejected``: malformed records by reason; ``skipped``: well-formed records that cannot be
    asked here (another scene, a camera-frame question); ``examples``: the first message per reason.
    """

    queries: list[EvalQuery]
    source_format: str
    rejected: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    n_records: int = 0

    def reject(self, reason: str, message: str, *, skipped: bool = False) -> None:
        (self.skipped if skipped else self.rejected)[reason] += 1
        self.examples.setdefault(reason, message)


# ---------------------------------------------------------------------------------------------
# Query files
# ---------------------------------------------------------------------------------------------


def _finite_vector(raw: Any, name: str, where: str, positive: bool = False) -> tuple[float, float, float]:
    if not isinstance(raw, (list, tuple)) or len(raw) != 3:
        raise QueryRecordError("bad_box", f"{where}: {name} must be a list of 3 numbers, got {raw!r:.60}")
    out = []
    for v in raw:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            raise QueryRecordError("bad_box", f"{where}: {name} must hold finite numbers, got {raw!r:.60}")
        if positive and float(v) <= 0:
            raise QueryRecordError("bad_box", f"{where}: {name} must be > 0 along every axis, got {raw!r:.60}")
        out.append(float(v))
    return out[0], out[1], out[2]


def parse_box(raw: Any, where: str) -> OrientedBox3D:
    """``{"center": [x, y, z], "size": [dx, dy, dz], "yaw": rad}`` (metres, yaw optional) -> box."""
    if not isinstance(raw, dict):
        raise QueryRecordError("bad_box", f"{where}: a target must be an object with center/size, got {raw!r:.60}")
    if "center" not in raw or "size" not in raw:
        raise QueryRecordError("bad_box", f"{where}: a target needs 'center' and 'size' (has {sorted(raw)})")
    yaw = raw.get("yaw", 0.0)
    if isinstance(yaw, bool) or not isinstance(yaw, (int, float)) or not math.isfinite(float(yaw)):
        raise QueryRecordError("bad_box", f"{where}: yaw must be a finite number (radians), got {yaw!r:.40}")
    return OrientedBox3D(_finite_vector(raw["center"], "center", where),
                         _finite_vector(raw["size"], "size", where, positive=True), float(yaw))


def _check_question(question: Any, where: str, task: str) -> str:
    if not isinstance(question, str):
        raise QueryRecordError("bad_question", f"{where}: 'question' must be a string, got {type(question).__name__}")
    if task != "caption" and not question.strip():
        raise QueryRecordError("bad_question", f"{where}: 'question' is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise QueryRecordError("bad_question", f"{where}: question has {len(question)} characters "
                                               f"(the service accepts {MAX_QUESTION_CHARS})")
    if "\x00" in question:
        raise QueryRecordError("bad_question", f"{where}: question contains a NUL character")
    return question


def _record_id(raw: dict, where: str) -> str:
    if "id" not in raw:
        raise QueryRecordError("missing_id", f"{where}: missing 'id'")
    rid = raw["id"]
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or (isinstance(rid, str) and not rid.strip()):
        raise QueryRecordError("bad_id", f"{where}: 'id' must be a non-empty string or an integer, got {rid!r:.40}")
    if isinstance(rid, str) and any(ord(c) < 32 for c in rid):
        raise QueryRecordError("bad_id", f"{where}: 'id' contains control characters: {rid!r:.40}")
    return str(rid)


def _answers(raw: Any, where: str) -> tuple[tuple[str, ...], Optional[float]]:
    """``answer`` as (texts, numeric value or None)."""
    if isinstance(raw, bool):
        raise QueryRecordError("bad_answer", f"{where}: 'answer' must be a string, number or list of strings")
    if isinstance(raw, (int, float)):
        if not math.isfinite(float(raw)):
            raise QueryRecordError("bad_answer", f"{where}: numeric 'answer' must be finite, got {raw!r}")
        return (str(raw),), float(raw)
    if isinstance(raw, str):
        if not raw.strip():
            raise QueryRecordError("bad_answer", f"{where}: 'answer' is empty")
        return (raw,), None
    if isinstance(raw, list) and raw and all(isinstance(a, str) and a.strip() for a in raw):
        return tuple(raw), None
    raise QueryRecordError("bad_answer", f"{where}: 'answer' must be a string, number or non-empty list of "
                                         f"strings, got {raw!r:.60}")


def parse_user_record(raw: Any, index: int) -> EvalQuery:
    """A record of a user's plain query list (see the module docstring); QueryRecordError when malformed."""
    where = f"record {index}"
    if not isinstance(raw, dict):
        raise QueryRecordError("not_an_object", f"{where}: expected a JSON object, got {type(raw).__name__}")
    qid = _record_id(raw, where)
    where = f"record {index} (id {qid})"
    task = raw.get("task")
    if task not in QUERY_TASKS:
        raise QueryRecordError("bad_task", f"{where}: 'task' must be one of {QUERY_TASKS}, got {task!r:.40}")
    question = _check_question(raw.get("question"), where, task)
    targets: tuple[OrientedBox3D, ...] = ()
    if "targets" in raw:
        if not isinstance(raw["targets"], list):
            raise QueryRecordError("bad_box", f"{where}: 'targets' must be a list of boxes")
        targets = tuple(parse_box(t, f"{where} target {k}") for k, t in enumerate(raw["targets"]))
    answers: tuple[str, ...] = ()
    value = None
    if "answer" in raw:
        answers, value = _answers(raw["answer"], where)
    if task in ("grounding", "caption") and len(targets) != 1:
        raise QueryRecordError("bad_targets", f"{where}: task {task} needs exactly one target box, got {len(targets)}")
    if task == "multi_grounding" and "targets" not in raw:
        raise QueryRecordError("bad_targets", f"{where}: multi_grounding needs 'targets' (an empty list for none)")
    if task in ("qa", "spatial") and not answers:
        raise QueryRecordError("missing_answer", f"{where}: task {task} needs 'answer'")
    split = raw.get("split")
    if split is not None and not isinstance(split, str):
        raise QueryRecordError("bad_split", f"{where}: 'split' must be a string")
    situation = raw.get("situation")
    if situation is not None:
        if not isinstance(situation, str):
            raise QueryRecordError("bad_question", f"{where}: 'situation' must be a string")
        question = _check_question(f"{situation.strip()} {question.strip()}", where, task)
    return EvalQuery(qid, question, task, targets, answers, value, split, "user")


def parse_generated_record(raw: Any, index: int, gt_by_id: Mapping[int, GroundTruthObject]) -> EvalQuery:
    """A record of our ``X.queries.json``; targets resolved through the ground-truth table."""
    from ..datasets.questions import RECORD_KEYS

    where = f"record {index}"
    if not isinstance(raw, dict):
        raise QueryRecordError("not_an_object", f"{where}: expected a JSON object, got {type(raw).__name__}")
    missing = [k for k in RECORD_KEYS if k not in raw]
    if missing:
        raise QueryRecordError("missing_field", f"{where}: missing {missing}")
    qid = _record_id(raw, where)
    where = f"record {index} (id {qid})"
    task = raw["task"]
    if task not in QUERY_TASKS:
        raise QueryRecordError("bad_task", f"{where}: unknown task {task!r:.40}")
    question = _check_question(raw["question"], where, task)
    ids = raw["target_ids"]
    if not isinstance(ids, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in ids):
        raise QueryRecordError("bad_targets", f"{where}: 'target_ids' must be a list of integers")
    if raw["frame_ids"]:
        raise QueryRecordError("camera_frame_question", f"{where}: asks about camera frames {raw['frame_ids']!r:.40}, "
                                                        "which /scene_query cannot carry")
    unknown = [i for i in ids if i not in gt_by_id]
    if unknown and task in ("grounding", "multi_grounding"):
        raise QueryRecordError("unknown_target_id", f"{where}: target ids {unknown} are not in the ground truth")
    value = raw.get("value")
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not math.isfinite(float(value))):
        raise QueryRecordError("bad_answer", f"{where}: 'value' must be a finite number or null")
    answer = raw["answer"]
    answers = (str(answer),) if isinstance(answer, (str, int, float)) and not isinstance(answer, bool) else ()
    return EvalQuery(qid, question, task, tuple(gt_by_id[i].box for i in ids if i in gt_by_id), answers,
                     None if value is None else float(value), raw.get("family") if isinstance(raw.get("family"), str)
                     else None, "generated", tuple(ids))


def _benchmark_queries(records: Sequence[Any], kind: str, gt_by_id: Mapping[int, GroundTruthObject],
                       scene_id: Optional[str], load: QueryLoad) -> None:
    """Benchmark records of ``scene_id`` (all when None) into queries; targets must be in ``gt_by_id``."""
    box_tasks = {"scanrefer": "grounding", "multi3drefer": "multi_grounding", "scan2cap": "caption"}
    for i, r in enumerate(records):
        if scene_id is not None and r.scene_id != scene_id:
            load.reject("other_scene", f"record {i}: scene {r.scene_id} is not the evaluated scene {scene_id}",
                        skipped=True)
            continue
        if kind in box_tasks:
            ids = tuple(r.object_ids) if kind == "multi3drefer" else (int(r.object_id),)
            unknown = [t for t in ids if t not in gt_by_id]
            if unknown:
                load.reject("unknown_target_id", f"record {i}: object ids {unknown} of scene {r.scene_id} are not "
                                                 "in the ground truth (give --gt or a ScanNet scan with annotations)")
                continue
            boxes = tuple(gt_by_id[t].box for t in ids)
        else:
            ids, boxes = (), ()
        if kind == "scanrefer":
            q = EvalQuery(f"{r.scene_id}/{r.object_id}/{r.ann_id}", r.description, "grounding", boxes, (), None,
                          r.split, kind, ids)
        elif kind == "multi3drefer":
            q = EvalQuery(f"{r.scene_id}/{r.ann_id}", r.description, "multi_grounding", boxes, (), None,
                          r.eval_type, kind, ids)
        elif kind == "scan2cap":
            q = EvalQuery(f"{r.scene_id}/{r.object_id}", "", "caption", boxes, tuple(r.captions), None, None,
                          kind, ids)
        elif kind == "scanqa":
            q = EvalQuery(str(r.question_id), r.question, "qa", (), tuple(r.answers), None, None, kind,
                          tuple(r.object_ids))
        else:  # sqa3d: the situation goes first, as in the SQA3D prompt template
            q = EvalQuery(str(r.question_id), f"{r.situation.strip()} {r.question.strip()}", "qa", (),
                          tuple(r.answers), None, r.question_type, kind)
        try:
            _check_question(q.question, f"record {i}", q.task)
        except QueryRecordError as exc:
            load.reject(exc.reason, str(exc))
            continue
        load.queries.append(q)


def _looks_like_ours(data: list) -> Optional[str]:
    """``"generated"`` / ``"user"`` for our own list formats, None for anything else."""
    dicts = [r for r in data if isinstance(r, dict)]
    if not dicts:
        return "user" if data else None
    if any("target_ids" in r and "family" in r for r in dicts):
        return "generated"
    if any("task" in r or "targets" in r or "id" in r for r in dicts):
        return "user"
    return None


def load_queries(
    path: Path,
    gt_objects: Optional[Sequence[GroundTruthObject]] = None,
    scene_id: Optional[str] = None,
    benchmark: str = "auto",
) -> QueryLoad:
    """Read a query file (any of the three formats in the module docstring).

    Args:
        path: the JSON file.
        gt_objects: ground truth of the evaluated scene (generated and benchmark files refer to it by id).
        scene_id: benchmark records of other scenes are skipped (None: keep all).
        benchmark: ``auto`` or a benchmark kind (``scan2cap`` must be named: it reads a ScanRefer file).

    Raises:
        QueryFileError: the file is missing, not JSON, empty, of no known layout, or a benchmark
            file whose reader refuses it (the reader's message names the record).
    """
    path = Path(path)
    if not path.is_file():
        raise QueryFileError(f"query file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise QueryFileError(f"{path}: not valid JSON ({exc})") from exc
    gt_by_id = {o.object_id: o for o in (gt_objects or [])}
    kind = _looks_like_ours(data) if isinstance(data, list) and benchmark == "auto" else None
    if kind is not None:
        load = QueryLoad([], kind, n_records=len(data))
        seen: set[str] = set()
        for i, raw in enumerate(data):
            try:
                q = parse_generated_record(raw, i, gt_by_id) if kind == "generated" else parse_user_record(raw, i)
            except QueryRecordError as exc:
                load.reject(exc.reason, str(exc), skipped=exc.reason == "camera_frame_question")
                continue
            if q.query_id in seen:
                load.reject("duplicate_id", f"record {i}: id {q.query_id!r} was used before")
                continue
            seen.add(q.query_id)
            load.queries.append(q)
        if not data:
            raise QueryFileError(f"{path}: the query list is empty")
        return load
    return _load_benchmark_file(path, gt_by_id, scene_id, benchmark)


def _load_benchmark_file(path: Path, gt_by_id: Mapping[int, GroundTruthObject], scene_id: Optional[str],
                         benchmark: str) -> QueryLoad:
    from ..datasets.benchmarks import BenchmarkFormatError, load_benchmark, sniff_benchmark

    try:
        kind = sniff_benchmark(path) if benchmark == "auto" else benchmark
        options: dict[str, Any] = {}
        if kind == "scanrefer" and gt_by_id and scene_id is not None:
            options["scene_labels"] = {scene_id: {i: o.label for i, o in gt_by_id.items()}}
        records = load_benchmark(kind, path, **options)
    except (BenchmarkFormatError, ValueError) as exc:
        raise QueryFileError(f"{path}: neither our query list ({{id, question, task, targets|answer}}) nor a "
                             f"readable benchmark file: {exc}") from exc
    load = QueryLoad([], kind, n_records=len(records))
    _benchmark_queries(records, kind, gt_by_id, scene_id, load)
    return load


# ---------------------------------------------------------------------------------------------
# Asking and scoring
# ---------------------------------------------------------------------------------------------

Ask = Callable[[QueryRequest], QueryResult]


def caption_object(query: EvalQuery, instances: Sequence[Instance]) -> tuple[int, float]:
    """The instance to caption for a caption query: the best-IoU match of its target (id, IoU); (-1, 0) if none."""
    if not query.targets or not instances:
        return -1, 0.0
    ious = [box_iou(i.box, query.targets[0]) for i in instances]
    k = int(np.argmax(ious))
    return (instances[k].instance_id, float(ious[k])) if ious[k] > 0 else (-1, 0.0)


def score_row(query: EvalQuery, answer: str, boxes: Sequence[OrientedBox3D], error_code: int,
              caption_iou: float = 0.0) -> dict[str, float]:
    """Scores of one answer, each in [0, 1], with the benchmark metrics' own per-item functions
    (:mod:`scene_vlm_ros.eval.benchmark_metrics`). A failed request predicts nothing.

    Grounding: ``iou`` (oriented boxes, ours) and ``iou_aabb`` (axis-aligned, ScanRefer's
    convention) with ``acc@k`` / ``acc_aabb@k``; multi-grounding: ``f1@k`` / ``f1_aabb@k``
    (Hungarian matching, zero-target rule); QA: ``EM`` and ``EM-R`` (refined) against any
    reference, or ``mra`` for a numeric answer; caption: ``caption_iou`` and ``hit@k`` (the IoU
    gate of m@kIoU; the caption metrics themselves are corpus-level, see :func:`benchmark_scores`).
    """
    from .benchmark_metrics import answer_match, box_iou_fn, mean_relative_accuracy, target_f1

    ok = error_code in (int(ErrorCode.SUCCESS), int(ErrorCode.NO_MATCH))
    pred = list(boxes) if ok else []
    out: dict[str, float] = {}
    if query.task == "grounding":
        for suffix, convention in (("", "oriented"), ("_aabb", "aabb")):
            iou = float(box_iou_fn(convention)(pred[0], query.targets[0])) if pred else 0.0
            out[f"iou{suffix}"] = iou
            for t in IOU_THRESHOLDS:
                out[f"acc{suffix}@{t:g}"] = float(iou >= t)
        return out
    if query.task == "multi_grounding":
        for suffix, convention in (("", "oriented"), ("_aabb", "aabb")):
            f1 = target_f1(pred, list(query.targets), IOU_THRESHOLDS, iou=box_iou_fn(convention))
            out.update({f"f1{suffix}@{t:g}": f1[t] for t in IOU_THRESHOLDS})
        return out
    if query.task == "caption":
        return {"caption_iou": caption_iou, **{f"hit@{t:g}": float(ok and caption_iou >= t) for t in IOU_THRESHOLDS}}
    if query.value is not None:
        got = first_number(answer) if ok else None
        return {"mra": mean_relative_accuracy(got, query.value) if got is not None else 0.0}
    em, em_refined = answer_match(answer if ok else "", list(query.answers))
    return {"EM": em, "EM-R": em_refined}


def answer_query(query: EvalQuery, ask: Ask, instances: Sequence[Instance], timeout_s: float) -> dict[str, Any]:
    """Ask one query and score it; the ``answers.jsonl`` row (JSON-able)."""
    object_id, cap_iou = caption_object(query, instances) if query.task == "caption" else (-1, 0.0)
    t0 = time.monotonic()
    if query.task == "caption" and object_id < 0:
        result = QueryResult(ErrorCode.NO_MATCH, "no instance of the map overlaps the object to caption")
    else:
        result = ask(QueryRequest(query.question, Task(query.task), object_id=object_id, timeout_s=timeout_s))
    latency = result.latency_s or (time.monotonic() - t0)
    boxes = [i.box for i in result.instances]
    scores = score_row(query, result.answer, boxes, int(result.error_code), cap_iou)
    return {
        "id": query.query_id, "task": query.task, "split": query.split, "question": query.question,
        "answer": result.answer, "error_code": ErrorCode(int(result.error_code)).name, "error_msg": result.error_msg,
        "latency_s": float(latency),
        "boxes": [i.to_json() for i in result.instances],
        "targets": [{"center": list(b.center), "size": list(b.size), "yaw": b.yaw} for b in query.targets],
        "target_ids": list(query.target_ids), "references": list(query.answers), "value": query.value,
        "caption_object_id": object_id if query.task == "caption" else None,
        "caption_box": next((i.to_json() for i in instances if i.instance_id == object_id), None)
        if query.task == "caption" else None,
        "iou": scores.get("iou", scores.get("caption_iou")), "scores": scores, "hit": is_hit(query.task, scores),
    }


def is_hit(task: str, scores: Mapping[str, float]) -> Optional[bool]:
    """The one pass/fail a report colours a query by: Acc@0.25, F1@0.25 = 1, EM, MRA >= 0.5, hit@0.25."""
    for key, passing in (("acc@0.25", 1.0), ("f1@0.25", 1.0), ("EM", 1.0), ("mra", 0.5), ("hit@0.25", 1.0)):
        if key in scores:
            return bool(scores[key] >= passing)
    return None


def _mean_scores(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    keys = sorted({k for r in rows for k in r["scores"]})
    out = {k: float(np.mean([r["scores"][k] for r in rows if k in r["scores"]])) for k in keys}
    out["n"] = float(len(rows))
    return out


def latency_summary(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / mean / max of latencies (s); empty dict without any."""
    if not len(latencies_s):
        return {}
    a = np.asarray(latencies_s, dtype=np.float64)
    return {"p50_s": float(np.percentile(a, 50)), "p95_s": float(np.percentile(a, 95)),
            "mean_s": float(a.mean()), "max_s": float(a.max()), "n": float(len(a))}


BENCHMARK_FORMATS = ("scanrefer", "multi3drefer", "scanqa", "sqa3d", "scan2cap")


def _box_or_none(d: Optional[Mapping[str, Any]]) -> Optional[OrientedBox3D]:
    if not d:
        return None
    return OrientedBox3D(tuple(d["center"]), tuple(d["size"]), float(d.get("yaw", 0.0)))  # type: ignore[arg-type]


def benchmark_scores(rows: Sequence[Mapping[str, Any]], source_format: str,
                     caption_metrics: bool = True) -> dict[str, Any]:
    """The benchmark evaluators' corpus numbers (:mod:`scene_vlm_ros.eval.benchmark_metrics`) for a
    benchmark query file: ScanRefer Acc@k overall/unique/multiple (axis-aligned IoU, the benchmark's
    convention, and oriented), Multi3DRefer F1@k per eval_type, ScanQA/SQA3D EM, refined EM and the
    caption metrics (per question type for SQA3D), Scan2Cap m@kIoU. Caption metrics need Java: when
    they cannot run, ``caption_metrics_error`` says why and the other numbers stay.
    """
    from . import benchmark_metrics as bm
    from .caption_metrics import CaptionScorerError

    if source_format not in BENCHMARK_FORMATS or not rows:
        return {}
    scorers: tuple[str, ...] = bm.CAPTION_SCORERS if caption_metrics else ()
    out: dict[str, Any] = {"format": source_format}
    boxes = [_box_or_none(r["boxes"][0]) if r["boxes"] and r["error_code"] in ("SUCCESS", "NO_MATCH") else None
             for r in rows]
    targets = [[_box_or_none(t) for t in r["targets"]] for r in rows]
    try:
        if source_format == "scanrefer":
            splits = [r["split"] if r["split"] in bm.GROUNDING_SPLITS else None for r in rows]
            for convention in bm.BOX_CONVENTIONS:
                res = bm.grounding_accuracy(boxes, [t[0] for t in targets], splits, convention=convention)
                res.pop("ious")
                out[convention] = res
        elif source_format == "multi3drefer":
            preds = [[_box_or_none(b) for b in r["boxes"]] if r["error_code"] in ("SUCCESS", "NO_MATCH") else []
                     for r in rows]
            for convention in bm.BOX_CONVENTIONS:
                res = bm.multi3drefer_f1(preds, targets, [r["split"] for r in rows], convention=convention)
                res.pop("per_item")
                out[convention] = res
        elif source_format in ("scanqa", "sqa3d"):
            answered = [r for r in rows if r["references"]]
            if answered:
                types = [r["split"] for r in answered] if source_format == "sqa3d" else None
                res = bm.qa_metrics([r["answer"] for r in answered], [r["references"] for r in answered], types,
                                    caption_scorers=scorers)
                res.pop("per_item")
                out.update(res)
        else:  # scan2cap: one caption per ground-truth object
            if scorers:
                res = bm.scan2cap_metrics([r["answer"] for r in rows], [_box_or_none(r["caption_box"]) for r in rows],
                                          [t[0] for t in targets], [r["references"] for r in rows],
                                          convention="aabb", caption_scorers=scorers)
                res.pop("per_item")
                res.pop("ious")
                out.update(res)
    except CaptionScorerError as exc:
        out["caption_metrics_error"] = str(exc)
    return out


def aggregate(rows: Sequence[Mapping[str, Any]], load: QueryLoad, caption_metrics: bool = True) -> dict[str, Any]:
    """``metrics.json``'s scores: per task (overall and per split), counts, error codes, rejections."""
    by_task: dict[str, list] = defaultdict(list)
    for r in rows:
        by_task[r["task"]].append(r)
    tasks: dict[str, Any] = {}
    for task, trs in sorted(by_task.items()):
        splits: dict[str, list] = defaultdict(list)
        for r in trs:
            if r.get("split"):
                splits[str(r["split"])].append(r)
        tasks[task] = {
            "overall": _mean_scores(trs),
            "splits": {s: _mean_scores(srs) for s, srs in sorted(splits.items())},
            "error_codes": dict(Counter(r["error_code"] for r in trs)),
        }
    return {
        "tasks": tasks,
        "counts": {"records": load.n_records, "asked": len(rows), "rejected": int(sum(load.rejected.values())),
                   "skipped": int(sum(load.skipped.values()))},
        "error_codes": dict(Counter(r["error_code"] for r in rows)),
        "rejected": dict(load.rejected), "skipped": dict(load.skipped), "rejection_examples": dict(load.examples),
        "latency": latency_summary([r["latency_s"] for r in rows]),
        "query_format": load.source_format,
        "benchmark": benchmark_scores(rows, load.source_format, caption_metrics),
    }
