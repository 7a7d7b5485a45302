"""Readers for the standard 3D-language benchmark annotation files (no ROS, no ScanNet scans needed).

One reader per benchmark, each into small frozen records; a sniffer picks the reader from the
file's content so that a user can pass any of these files.

Public API (kept small and stable; the training package imports it)::

    load_benchmark(kind, path, **options) -> list[record]   # kind: "auto" or a name in BENCHMARK_KINDS
    sniff_benchmark(path) -> str                            # "scanrefer" | "multi3drefer" | "scanqa" | "sqa3d"
    load_scanrefer(path, scene_labels=None, label_map=None) -> list[ScanReferRecord]
    load_scan2cap(path) -> list[Scan2CapRecord]
    load_multi3drefer(path) -> list[Multi3DReferRecord]
    load_scanqa(path) -> list[ScanQARecord]
    load_sqa3d(questions_path, annotations_path=None) -> list[SQA3DRecord]
    scanrefer_splits(records, scene_labels=None, label_map=None) -> list[str | None]
    read_scannet_label_map(tsv_path) -> dict[str, str]      # raw category -> ScanRefer's 18 classes
    sqa3d_question_type(question) -> str                    # what | is | how | can | which | other
    BenchmarkFormatError                                    # a ValueError naming the file and record

Formats (the field names are the benchmarks' own):

- **ScanRefer**: a JSON list of ``{scene_id, object_id, object_name, ann_id, description, token}``
  (``object_id``/``ann_id`` are strings in the released files), or the re-keyed form
  ``{scan_id, target_id, caption, program}`` that one zero-shot grounding repository uses (no class
  name, no ann_id: ``object_name`` and ``ann_id`` are then None and ``program`` is kept).
- **Multi3DRefer**: a JSON list of ``{scene_id, object_ids[], object_name, ann_id, description,
  eval_type}`` with ``eval_type`` in :data:`MULTI3DREFER_EVAL_TYPES` (zero-target types carry an
  empty ``object_ids``).
- **ScanQA**: a JSON list of ``{question_id, scene_id, question, answers[], object_ids[],
  object_names[]}``; the test splits lack ``answers`` (and ``test_wo_obj`` the object fields): those
  become empty tuples.
- **SQA3D**: a questions file ``{"questions": [{question_id, scene_id, situation,
  alternative_situation[], question}]}`` and an annotations file ``{"annotations": [{question_id,
  scene_id, answers: [{answer}], position: {x, y, z}, rotation: {_x, _y, _z, _w}, ...}]}`` joined on
  ``question_id``. Given one of the two, :func:`load_benchmark` looks for its partner beside it
  (``questions`` <-> ``annotations`` / ``sqa_annotations`` in the file name).
- **Scan2Cap**: ScanRefer's file read as captions: one record per annotated object with all its
  descriptions as reference captions. A ScanRefer file sniffs as ``"scanrefer"``; ask for
  ``"scan2cap"`` explicitly.

ScanRefer's unique/multiple split is computed the benchmark's way (ScanRefer's
``lib/dataset.py``): a description is *multiple* when its target's class occurs more than once in
the scene, *unique* otherwise. Where the class comes from, in order:

1. ``scene_labels`` (``{scene_id: {object_id: label}}``, e.g. from
   :meth:`scene_vlm_ros.datasets.scannet.ScanNetScan.ground_truth_objects`): the scene's own object
   list, counting every object of the scene, annotated or not;
2. otherwise the annotation set itself (what ScanRefer's code does): the distinct annotated
   ``object_id`` of each scene with their ``object_name``. This needs the original field names;
   the re-keyed form carries no class, so its split is None unless ``scene_labels`` is given.

Labels are compared after ``_`` -> space and lower-casing; with ``label_map`` (raw ScanNet category
-> class, e.g. :func:`read_scannet_label_map` of ``scannetv2-labels.combined.tsv``, which gives
ScanRefer's exact 18 classes) they are mapped first, unknown names counting as ``"others"`` as in
ScanRefer.
"""

from __future__ import annotations

import csv
import inspect
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, TypeVar, Union

from .seven_scenes import DatasetFormatError

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]

BENCHMARK_KINDS = ("scanrefer", "scan2cap", "multi3drefer", "scanqa", "sqa3d")
MULTI3DREFER_EVAL_TYPES = ("zt_w_d", "zt_wo_d", "st_w_d", "st_wo_d", "mt")
#: Zero-target eval types of Multi3DRefer (the description refers to nothing in the scene).
MULTI3DREFER_ZERO_TARGET_TYPES = ("zt_w_d", "zt_wo_d")
SQA3D_QUESTION_TYPES = ("what", "is", "how", "can", "which", "other")
#: ScanRefer's 18 evaluation classes (its ``ScannetDatasetConfig.type2class``); the rest are "others".
SCANREFER_CLASSES = (
    "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture", "counter",
    "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink", "bathtub", "others",
)  # fmt: skip


class BenchmarkFormatError(DatasetFormatError):
    """A benchmark annotation file is not valid JSON or a record lacks/mistypes a field."""


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScanReferRecord:
    """One ScanRefer description of one target object.

    ``object_name``/``ann_id``/``tokens`` are None in the re-keyed form, ``program`` is None in the
    original form. ``split`` is ``"unique"``, ``"multiple"`` or None (class unknown, see module doc).
    """

    scene_id: str
    object_id: int
    description: str
    object_name: Optional[str] = None
    ann_id: Optional[str] = None
    tokens: Optional[tuple[str, ...]] = None
    program: Optional[str] = None
    split: Optional[str] = None


@dataclass(frozen=True)
class Multi3DReferRecord:
    """One Multi3DRefer description; ``object_ids`` is empty for the zero-target eval types."""

    scene_id: str
    object_ids: tuple[int, ...]
    object_name: str
    ann_id: str
    description: str
    eval_type: str

    @property
    def is_zero_target(self) -> bool:
        return self.eval_type in MULTI3DREFER_ZERO_TARGET_TYPES


@dataclass(frozen=True)
class ScanQARecord:
    """One ScanQA question; ``answers``/``object_ids``/``object_names`` are empty where the split
    does not release them (test)."""

    question_id: str
    scene_id: str
    question: str
    answers: tuple[str, ...] = ()
    object_ids: tuple[int, ...] = ()
    object_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class SQA3DRecord:
    """One SQA3D situated question with its annotation.

    ``position_m`` is the agent's position (x, y, z) and ``rotation_xyzw`` its orientation
    quaternion, both in the benchmark's ScanNet scene frame as released (None without the
    annotations file). ``question_type`` is derived from the question's first word the way
    SQA3D's evaluation does (:func:`sqa3d_question_type`).
    """

    question_id: int
    scene_id: str
    situation: str
    question: str
    question_type: str
    answers: tuple[str, ...] = ()
    alternative_situations: tuple[str, ...] = ()
    position_m: Optional[tuple[float, float, float]] = None
    rotation_xyzw: Optional[tuple[float, float, float, float]] = None


@dataclass(frozen=True)
class Scan2CapRecord:
    """One Scan2Cap object: its ScanRefer descriptions are the reference captions (file order)."""

    scene_id: str
    object_id: int
    object_name: Optional[str]
    captions: tuple[str, ...]
    ann_ids: tuple[Optional[str], ...]

    @property
    def key(self) -> str:
        """Scan2Cap's corpus key ``scene_id|object_id|object_name``."""
        return f"{self.scene_id}|{self.object_id}|{self.object_name or ''}"


BenchmarkRecord = Union[ScanReferRecord, Multi3DReferRecord, ScanQARecord, SQA3DRecord, Scan2CapRecord]

# ---------------------------------------------------------------------------------------------
# Field access with errors that name the file and the record
# ---------------------------------------------------------------------------------------------

T = TypeVar("T")


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"benchmark annotation file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BenchmarkFormatError(f"{path}: not valid JSON ({exc})") from exc


class _Record:
    """One raw JSON record of a file, with typed getters whose errors say where the problem is."""

    def __init__(self, path: Path, index: int, raw: Any, id_field: str = "") -> None:
        self.path = path
        self.index = index
        if not isinstance(raw, dict):
            raise BenchmarkFormatError(f"{path}: record {index} is a {type(raw).__name__}, expected an object")
        self.raw = raw
        self.where = f"{path}: record {index}"
        if id_field and id_field in raw:
            self.where += f" ({id_field}={raw[id_field]!r})"

    def error(self, message: str) -> BenchmarkFormatError:
        return BenchmarkFormatError(f"{self.where}: {message}")

    def _get(self, key: str, required: bool) -> Any:
        if key not in self.raw:
            if required:
                raise self.error(f"missing field {key!r} (has {sorted(self.raw)})")
            return None
        return self.raw[key]

    def text(self, key: str, required: bool = True) -> Optional[str]:
        value = self._get(key, required)
        if value is None and not required:
            return None
        if not isinstance(value, str):
            raise self.error(f"field {key!r} must be a string, got {value!r}")
        return value

    def integer(self, key: str, required: bool = True) -> Optional[int]:
        value = self._get(key, required)
        if value is None and not required:
            return None
        return self._as_int(key, value)

    def _as_int(self, key: str, value: Any) -> int:
        # ScanRefer stores ids as strings ("34"); accept ints and integral strings only.
        if isinstance(value, bool):
            raise self.error(f"field {key!r} must be an integer id, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise self.error(f"field {key!r} must be an integer id, got {value!r}")

    def id_text(self, key: str, required: bool = True) -> Optional[str]:
        """An identifier that files store as int or str (ann_id): returned as str."""
        value = self._get(key, required)
        if value is None and not required:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise self.error(f"field {key!r} must be a string or integer id, got {value!r}")
        return str(value)

    def list_of(self, key: str, kind: Callable[[str, Any], T], required: bool = True) -> tuple[T, ...]:
        value = self._get(key, required)
        if value is None and not required:
            return ()
        if not isinstance(value, list):
            raise self.error(f"field {key!r} must be a list, got {type(value).__name__}")
        return tuple(kind(f"{key}[{i}]", v) for i, v in enumerate(value))

    def str_item(self, key: str, value: Any) -> str:
        if not isinstance(value, str):
            raise self.error(f"{key} must be a string, got {value!r}")
        return value

    def number(self, container: str, key: str) -> float:
        block = self._get(container, True)
        if not isinstance(block, dict) or key not in block:
            raise self.error(f"field {container!r} must be an object with {key!r}, got {block!r}")
        value = block[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(f"{container}.{key} must be a number, got {value!r}")
        return float(value)


def _records(path: Path, data: Any, id_field: str, container: str = "") -> list[_Record]:
    if container:
        if not isinstance(data, dict) or container not in data:
            raise BenchmarkFormatError(f"{path}: expected a JSON object with a {container!r} list")
        data = data[container]
    if not isinstance(data, list):
        raise BenchmarkFormatError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return [_Record(path, i, raw, id_field) for i, raw in enumerate(data)]


# ---------------------------------------------------------------------------------------------
# ScanRefer and Scan2Cap
# ---------------------------------------------------------------------------------------------


def _scanrefer_record(rec: _Record) -> ScanReferRecord:
    if "scan_id" in rec.raw:  # the re-keyed form
        return ScanReferRecord(
            scene_id=rec.text("scan_id"),
            object_id=rec.integer("target_id"),
            description=rec.text("caption"),
            program=rec.text("program", required=False),
        )
    tokens = rec.list_of("token", rec.str_item, required=False) if "token" in rec.raw else None
    return ScanReferRecord(
        scene_id=rec.text("scene_id"),
        object_id=rec.integer("object_id"),
        description=rec.text("description"),
        object_name=rec.text("object_name"),
        ann_id=rec.id_text("ann_id"),
        tokens=tokens,
    )


def read_scannet_label_map(tsv_path: PathLike) -> dict[str, str]:
    """Raw ScanNet category -> ScanRefer class, from ``scannetv2-labels.combined.tsv``.

    The class is the row's ``nyu40class`` when it is one of :data:`SCANREFER_CLASSES`, else
    ``"others"`` (ScanRefer's ``raw2label``).
    """
    path = Path(tsv_path)
    if not path.is_file():
        raise FileNotFoundError(f"ScanNet label map not found: {path}")
    classes = set(SCANREFER_CLASSES)
    out: dict[str, str] = {}
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if not header or "raw_category" not in header or "nyu40class" not in header:
            raise BenchmarkFormatError(f"{path}: expected a TSV header with raw_category and nyu40class")
        raw_col, nyu_col = header.index("raw_category"), header.index("nyu40class")
        for line_no, row in enumerate(reader, start=2):
            if len(row) <= max(raw_col, nyu_col):
                raise BenchmarkFormatError(f"{path}: line {line_no} has {len(row)} columns")
            out[row[raw_col]] = row[nyu_col] if row[nyu_col] in classes else "others"
    return out


def _label_key(name: str, label_map: Optional[Mapping[str, str]]) -> str:
    name = " ".join(name.split("_"))
    if label_map is not None:
        # ScanRefer looks the raw name up as written; fall back to lower case before "others".
        return label_map.get(name, label_map.get(name.lower(), "others"))
    return name.strip().lower()


def scanrefer_splits(
    records: Sequence[ScanReferRecord],
    scene_labels: Optional[Mapping[str, Mapping[int, str]]] = None,
    label_map: Optional[Mapping[str, str]] = None,
) -> list[Optional[str]]:
    """``"unique"`` / ``"multiple"`` / None for each record, the benchmark's way (see module doc).

    ``scene_labels``: ``{scene_id: {object_id: label}}``, the scenes' own object lists; scenes
    missing from it fall back to the annotation set. ``label_map``: raw name -> class.
    """
    # The annotation set's classes per scene: one entry per distinct annotated object.
    annotated: dict[str, dict[int, str]] = defaultdict(dict)
    for r in records:
        if r.object_name is not None:
            annotated[r.scene_id].setdefault(r.object_id, _label_key(r.object_name, label_map))
    scene_classes: dict[str, dict[int, str]] = {}
    if scene_labels is not None:
        for scene_id, objects in scene_labels.items():
            scene_classes[scene_id] = {int(k): _label_key(v, label_map) for k, v in objects.items()}

    out: list[Optional[str]] = []
    for r in records:
        objects = scene_classes.get(r.scene_id)
        if objects is not None:
            target = objects.get(r.object_id)
            if target is None and r.object_name is not None:
                target = _label_key(r.object_name, label_map)
        else:
            objects = annotated.get(r.scene_id, {})
            target = objects.get(r.object_id)
        if target is None:
            out.append(None)
            continue
        count = sum(1 for label in objects.values() if label == target)
        if r.object_id not in objects:
            count += 1  # the target itself, absent from a partial object list
        out.append("multiple" if count > 1 else "unique")
    return out


def load_scanrefer(
    path: PathLike,
    scene_labels: Optional[Mapping[str, Mapping[int, str]]] = None,
    label_map: Optional[Mapping[str, str]] = None,
) -> list[ScanReferRecord]:
    """ScanRefer descriptions (original or re-keyed form) with their unique/multiple split."""
    path = Path(path)
    raw = _records(path, _read_json(path), id_field="ann_id")
    records = [_scanrefer_record(r) for r in raw]
    splits = scanrefer_splits(records, scene_labels, label_map)
    return [replace(r, split=s) for r, s in zip(records, splits)]


def load_scan2cap(path: PathLike) -> list[Scan2CapRecord]:
    """Scan2Cap reference captions: ScanRefer's descriptions grouped per (scene, object), in
    first-appearance order."""
    groups: dict[tuple[str, int], list[ScanReferRecord]] = {}
    for r in load_scanrefer(path):
        groups.setdefault((r.scene_id, r.object_id), []).append(r)
    return [
        Scan2CapRecord(
            scene_id=scene_id,
            object_id=object_id,
            object_name=rs[0].object_name,
            captions=tuple(r.description for r in rs),
            ann_ids=tuple(r.ann_id for r in rs),
        )
        for (scene_id, object_id), rs in groups.items()
    ]


# ---------------------------------------------------------------------------------------------
# Multi3DRefer, ScanQA, SQA3D
# ---------------------------------------------------------------------------------------------


def load_multi3drefer(path: PathLike) -> list[Multi3DReferRecord]:
    """Multi3DRefer descriptions; checks ``eval_type`` and that zero-target types have no targets."""
    path = Path(path)
    out = []
    for rec in _records(path, _read_json(path), id_field="ann_id"):
        eval_type = rec.text("eval_type")
        if eval_type not in MULTI3DREFER_EVAL_TYPES:
            raise rec.error(f"eval_type {eval_type!r} is not one of {MULTI3DREFER_EVAL_TYPES}")
        object_ids = rec.list_of("object_ids", rec._as_int)
        if eval_type in MULTI3DREFER_ZERO_TARGET_TYPES and object_ids:
            raise rec.error(f"zero-target eval_type {eval_type!r} with object_ids {list(object_ids)}")
        if eval_type not in MULTI3DREFER_ZERO_TARGET_TYPES and not object_ids:
            raise rec.error(f"eval_type {eval_type!r} needs at least one object id")
        if eval_type == "mt" and len(object_ids) < 2:
            raise rec.error(f"multi-target eval_type 'mt' with {len(object_ids)} object id(s)")
        out.append(
            Multi3DReferRecord(
                scene_id=rec.text("scene_id"),
                object_ids=object_ids,
                object_name=rec.text("object_name"),
                ann_id=rec.id_text("ann_id"),
                description=rec.text("description"),
                eval_type=eval_type,
            )
        )
    return out


def load_scanqa(path: PathLike) -> list[ScanQARecord]:
    """ScanQA questions (any split)."""
    path = Path(path)
    out = []
    for rec in _records(path, _read_json(path), id_field="question_id"):
        object_ids = rec.list_of("object_ids", rec._as_int, required=False)
        object_names = rec.list_of("object_names", rec.str_item, required=False)
        if object_names and len(object_names) != len(object_ids):
            raise rec.error(f"{len(object_ids)} object_ids but {len(object_names)} object_names")
        out.append(
            ScanQARecord(
                question_id=rec.id_text("question_id"),
                scene_id=rec.text("scene_id"),
                question=rec.text("question"),
                answers=rec.list_of("answers", rec.str_item, required=False),
                object_ids=object_ids,
                object_names=object_names,
            )
        )
    return out


def sqa3d_question_type(question: str) -> str:
    """SQA3D's question type: the prefix test of its evaluation (``what``, ``is``, ``how``, ``can``,
    ``which``, else ``other``), on the lower-cased, left-stripped question.

    It is a prefix test, not a word test, as in the benchmark code ("Isn't ..." counts as "is").
    """
    q = question.lstrip().lower()
    for prefix in SQA3D_QUESTION_TYPES[:-1]:
        if q.startswith(prefix):
            return prefix
    return "other"


def _sqa3d_answer(rec: _Record, key: str, value: Any) -> str:
    if isinstance(value, dict) and isinstance(value.get("answer"), str):
        return value["answer"]
    raise rec.error(f"{key} must be an object with a string 'answer', got {value!r}")


def _sqa3d_partner(path: Path) -> Optional[Path]:
    """The other file of an SQA3D pair beside ``path`` (questions <-> annotations), if present."""
    name = path.name
    candidates: list[str] = []
    if "questions" in name:
        candidates = [name.replace("questions", "sqa_annotations"), name.replace("questions", "annotations")]
    elif "annotations" in name:
        candidates = [name.replace("sqa_annotations", "questions"), name.replace("annotations", "questions")]
    for c in candidates:
        if c != name and (path.parent / c).is_file():
            return path.parent / c
    return None


def load_sqa3d(questions_path: PathLike, annotations_path: Optional[PathLike] = None) -> list[SQA3DRecord]:
    """SQA3D questions joined with their annotations on ``question_id`` (questions-file order).

    Without ``annotations_path`` the records have no answers/position. Every question must have an
    annotation when the annotations file is given (a clear error otherwise); annotations without a
    question are ignored with a log line.
    """
    questions_path = Path(questions_path)
    annotations: dict[int, _Record] = {}
    if annotations_path is not None:
        annotations_path = Path(annotations_path)
        for rec in _records(annotations_path, _read_json(annotations_path), "question_id", container="annotations"):
            annotations[rec.integer("question_id")] = rec
    out = []
    seen: set[int] = set()
    for rec in _records(questions_path, _read_json(questions_path), "question_id", container="questions"):
        qid = rec.integer("question_id")
        question = rec.text("question")
        fields: dict[str, Any] = {}
        if annotations_path is not None:
            ann = annotations.get(qid)
            if ann is None:
                raise rec.error(f"no annotation with this question_id in {annotations_path}")
            if ann.text("scene_id") != rec.text("scene_id"):
                raise ann.error(f"scene_id {ann.raw['scene_id']!r} differs from the question's {rec.raw['scene_id']!r}")
            fields["answers"] = ann.list_of("answers", lambda k, v, a=ann: _sqa3d_answer(a, k, v))
            fields["position_m"] = tuple(ann.number("position", k) for k in ("x", "y", "z"))
            fields["rotation_xyzw"] = tuple(ann.number("rotation", k) for k in ("_x", "_y", "_z", "_w"))
        seen.add(qid)
        out.append(
            SQA3DRecord(
                question_id=qid,
                scene_id=rec.text("scene_id"),
                situation=rec.text("situation"),
                question=question,
                question_type=sqa3d_question_type(question),
                alternative_situations=rec.list_of("alternative_situation", rec.str_item, required=False),
                **fields,
            )
        )
    extra = set(annotations) - seen
    if extra:
        logger.info("%s: %d annotations have no question in %s (ignored)", annotations_path, len(extra), questions_path)
    return out


# ---------------------------------------------------------------------------------------------
# Sniffing and the one entry point
# ---------------------------------------------------------------------------------------------


def _sniff_data(path: Path, data: Any) -> str:
    if isinstance(data, dict):
        if isinstance(data.get("questions"), list):
            return "sqa3d"
        if isinstance(data.get("annotations"), list):
            return "sqa3d"
        raise BenchmarkFormatError(
            f"{path}: a JSON object without 'questions'/'annotations' lists is not a known benchmark file"
        )
    if not isinstance(data, list):
        raise BenchmarkFormatError(f"{path}: expected a JSON list or object, got {type(data).__name__}")
    if not data:
        raise BenchmarkFormatError(f"{path}: empty list, cannot tell which benchmark it is")
    first = data[0]
    if not isinstance(first, dict):
        raise BenchmarkFormatError(f"{path}: record 0 is a {type(first).__name__}, expected an object")
    keys = set(first)
    if {"scan_id", "target_id", "caption"} <= keys or {"object_id", "description"} <= keys:
        return "scanrefer"
    if {"object_ids", "eval_type"} <= keys:
        return "multi3drefer"
    if {"question_id", "question", "scene_id"} <= keys and "situation" not in keys:
        return "scanqa"
    raise BenchmarkFormatError(
        f"{path}: record 0 has fields {sorted(keys)}, which match none of {BENCHMARK_KINDS}"
    )


def sniff_benchmark(path: PathLike) -> str:
    """Which benchmark a file belongs to, from its content (a ScanRefer file gives ``"scanrefer"``)."""
    path = Path(path)
    return _sniff_data(path, _read_json(path))


def _load_sqa3d_any(path: Path, annotations_path: Optional[PathLike] = None) -> list[SQA3DRecord]:
    data = _read_json(path)
    if isinstance(data, dict) and "questions" in data:
        partner = Path(annotations_path) if annotations_path is not None else _sqa3d_partner(path)
        if partner is None:
            logger.warning("%s: no SQA3D annotations file found beside it; loading questions only", path)
        return load_sqa3d(path, partner)
    if isinstance(data, dict) and "annotations" in data:
        partner = _sqa3d_partner(path)
        if partner is None:
            raise BenchmarkFormatError(
                f"{path} is an SQA3D annotations file; its questions file (same name with 'questions') "
                "was not found beside it: pass the questions file instead"
            )
        return load_sqa3d(partner, path)
    raise BenchmarkFormatError(f"{path}: not an SQA3D questions or annotations file")


def load_benchmark(kind: str, path: PathLike, **options: Any) -> list[Any]:
    """Records of a benchmark annotation file.

    ``kind``: ``"auto"`` (sniffed from the content) or one of :data:`BENCHMARK_KINDS`. ``options``
    go to the reader: ``scene_labels``/``label_map`` for ScanRefer, ``annotations_path`` for SQA3D.
    """
    path = Path(path)
    if kind == "auto":
        kind = sniff_benchmark(path)
    loaders: dict[str, Callable[..., list[Any]]] = {
        "scanrefer": load_scanrefer,
        "scan2cap": load_scan2cap,
        "multi3drefer": load_multi3drefer,
        "scanqa": load_scanqa,
        "sqa3d": _load_sqa3d_any,
    }
    if kind not in loaders:
        raise ValueError(f"unknown benchmark kind {kind!r}; choose 'auto' or one of {BENCHMARK_KINDS}")
    loader = loaders[kind]
    accepted = set(inspect.signature(loader).parameters) - {"path", "questions_path"}
    unknown = set(options) - accepted
    if unknown:
        raise ValueError(
            f"option(s) {sorted(unknown)} not understood by the {kind} reader (accepts {sorted(accepted)})"
        )
    return loader(path, **options)

