"""The 3D-language benchmarks' metrics, computed the way their reference evaluators do.

Every function takes plain Python inputs (lists of boxes, strings, numbers) and returns plain
dicts (JSON-serialisable: floats, ints, lists, None for an empty group).

- :func:`grounding_accuracy` (ScanRefer): Acc@0.25 / Acc@0.5 = share of descriptions whose
  predicted box reaches that IoU with the target, over ``overall``/``unique``/``multiple``.
- :func:`multi3drefer_f1` (Multi3DRefer, M3DRef-CLIP's evaluator): per description, one Hungarian
  matching of predicted to target boxes maximising IoU, then F1 = 2 TP / (|pred| + |gt|) with TP
  the matched pairs reaching the threshold; a zero-target description (``zt_*``) scores 1 when
  nothing is predicted, else 0. Averaged per ``eval_type`` and overall.
- :func:`qa_metrics` (ScanQA, SQA3D): EM and refined EM after LEO's answer normalisation
  (:func:`normalize_answer`), per question type when given (SQA3D), plus the caption metrics of
  :mod:`scene_vlm_ros.eval.caption_metrics` over the normalised answers.
- :func:`scan2cap_metrics` (Scan2Cap): the caption metrics m@kIoU: each ground-truth object's
  caption scores its own per-caption value when the box given with it reaches IoU k, else 0, and
  the mean runs over all objects.
- :func:`mean_relative_accuracy` / :func:`numeric_mra` (SPAR-Bench numeric answers): share of
  thresholds t in 0.50, 0.55, ..., 0.95 with ``|pred - truth| / |truth| < 1 - t``.

Boxes (:func:`to_box`): a :class:`scene_vlm_ros.core.types.OrientedBox3D`, a mapping
``{"center": [x, y, z], "size": [dx, dy, dz], "yaw": rad}`` (yaw optional), axis-aligned bounds
``[[xmin, ymin, zmin], [xmax, ymax, zmax]]`` (Multi3DRefer's ``aabb_bound``) or (8, 3) corners
(axis-aligned by their min/max). Metres, any one frame shared by prediction and ground truth.
``convention="aabb"`` (the benchmarks' own: IoU of axis-aligned bounds in the axis-aligned scan)
uses :func:`scene_vlm_ros.core.geometry.box_aabb_iou`; ``"oriented"`` (our yawed boxes) uses
:func:`scene_vlm_ros.core.geometry.box_iou`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np

from ..core.geometry import box_aabb_iou, box_iou
from ..core.types import OrientedBox3D
from .caption_metrics import CAPTION_SCORERS, caption_scores

BoxInput = Union[OrientedBox3D, Mapping[str, Any], Sequence[Any], np.ndarray]
IoUFn = Callable[[OrientedBox3D, OrientedBox3D], float]

BOX_CONVENTIONS = ("aabb", "oriented")
DEFAULT_THRESHOLDS = (0.25, 0.5)
GROUNDING_SPLITS = ("unique", "multiple")
MULTI3DREFER_EVAL_TYPES = ("zt_w_d", "zt_wo_d", "st_w_d", "st_wo_d", "mt")
MULTI3DREFER_ZERO_TARGET_TYPES = ("zt_w_d", "zt_wo_d")
#: SPAR's thresholds 0.50:0.05:0.95 (rounded so that 1 - t is exact to two decimals).
MRA_THRESHOLDS = np.round(np.arange(0.50, 0.951, 0.05), 2)
_MRA_TOLERANCES = np.round(1.0 - MRA_THRESHOLDS, 2)

# ---------------------------------------------------------------------------------------------
# Boxes and IoU
# ---------------------------------------------------------------------------------------------


def to_box(box: BoxInput) -> OrientedBox3D:
    """An :class:`OrientedBox3D` from any accepted box form (see module doc); ValueError otherwise."""
    if isinstance(box, OrientedBox3D):
        return box
    if isinstance(box, Mapping):
        if "center" not in box or "size" not in box:
            raise ValueError(f"a box mapping needs 'center' and 'size' (and optionally 'yaw'), got keys {sorted(box)}")
        center = np.asarray(box["center"], dtype=np.float64).reshape(-1)
        size = np.asarray(box["size"], dtype=np.float64).reshape(-1)
        yaw = float(box.get("yaw", 0.0))
        if center.shape != (3,) or size.shape != (3,):
            raise ValueError(f"box center and size need 3 numbers each, got {box['center']!r}, {box['size']!r}")
        if not (np.all(np.isfinite(center)) and np.all(np.isfinite(size)) and np.isfinite(yaw)):
            raise ValueError(f"box has non-finite values: {box!r}")
        if np.any(size < 0):
            raise ValueError(f"box size must be >= 0, got {size.tolist()}")
        return OrientedBox3D(tuple(center.tolist()), tuple(size.tolist()), yaw)
    try:
        arr = np.asarray(box, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a box: {box!r}") from exc
    if arr.ndim != 2 or arr.shape[1] != 3 or arr.shape[0] not in (2, 8):
        raise ValueError(
            f"a box as an array must be (2, 3) bounds [min, max] or (8, 3) corners, got shape {arr.shape}; "
            "use {'center', 'size', 'yaw'} for centre-size boxes"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"box has non-finite values: {arr.tolist()}")
    lo, hi = (arr[0], arr[1]) if arr.shape[0] == 2 else (arr.min(axis=0), arr.max(axis=0))
    if np.any(hi < lo):
        raise ValueError(f"box bounds need min <= max per axis, got min {lo.tolist()} max {hi.tolist()}")
    return OrientedBox3D(tuple(((lo + hi) / 2.0).tolist()), tuple((hi - lo).tolist()), 0.0)


def box_iou_fn(convention: str) -> IoUFn:
    """The IoU of a box convention: ``"aabb"`` (benchmarks) or ``"oriented"`` (ours)."""
    if convention == "aabb":
        return box_aabb_iou
    if convention == "oriented":
        return box_iou
    raise ValueError(f"unknown box convention {convention!r}; choose one of {BOX_CONVENTIONS}")


def _check_thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(t) for t in thresholds)
    if not out or any(not 0.0 < t <= 1.0 for t in out):
        raise ValueError(f"IoU thresholds must be in (0, 1], got {list(thresholds)}")
    return out


def _check_lengths(**named: Sequence[Any]) -> int:
    lengths = {k: len(v) for k, v in named.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs differ in length: {lengths}")
    return next(iter(lengths.values()))


def _mean_or_none(values: Sequence[float]) -> Optional[float]:
    return float(np.mean(values)) if len(values) else None


# ---------------------------------------------------------------------------------------------
# Grounding (ScanRefer) and multi-target grounding (Multi3DRefer)
# ---------------------------------------------------------------------------------------------


def grounding_accuracy(
    predictions: Sequence[Optional[BoxInput]],
    targets: Sequence[BoxInput],
    splits: Optional[Sequence[Optional[str]]] = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    convention: str = "aabb",
) -> dict[str, Any]:
    """ScanRefer Acc@k: ``predictions[i]`` (None = no answer, IoU 0) against ``targets[i]``.

    ``splits[i]`` in ``"unique"``/``"multiple"``/None (None counts in ``overall`` only).
    Returns ``{"overall": {"acc@0.25": a, "acc@0.5": b, "n": n}, "unique": {...}, "multiple":
    {...}, "ious": [iou_i]}``; the split groups only when ``splits`` is given, their accuracies
    None when a group is empty.
    """
    n = _check_lengths(predictions=predictions, targets=targets, **({"splits": splits} if splits is not None else {}))
    ts = _check_thresholds(thresholds)
    iou = box_iou_fn(convention)
    ious = [0.0 if p is None else float(iou(to_box(p), to_box(g))) for p, g in zip(predictions, targets)]
    groups: dict[str, list[int]] = {"overall": list(range(n))}
    if splits is not None:
        for s in splits:
            if s is not None and s not in GROUNDING_SPLITS:
                raise ValueError(f"split must be one of {GROUNDING_SPLITS} or None, got {s!r}")
        for name in GROUNDING_SPLITS:
            groups[name] = [i for i, s in enumerate(splits) if s == name]
    out: dict[str, Any] = {}
    for name, idx in groups.items():
        out[name] = {f"acc@{t:g}": _mean_or_none([float(ious[i] >= t) for i in idx]) for t in ts}
        out[name]["n"] = len(idx)
    out["ious"] = ious
    return out


def target_f1(
    pred_boxes: Sequence[BoxInput],
    gt_boxes: Sequence[BoxInput],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    iou: IoUFn = box_aabb_iou,
    zero_target: Optional[bool] = None,
) -> dict[float, float]:
    """``{threshold: F1}`` of one multi-target answer (Multi3DRefer's per-description score).

    One Hungarian matching maximising IoU serves all thresholds; TP = matched pairs with IoU >=
    threshold; F1 = 2 TP / (|pred| + |gt|). ``zero_target`` (default: ``not gt_boxes``): the
    description refers to nothing, and the score is 1 for an empty answer, else 0.
    """
    ts = _check_thresholds(thresholds)
    if zero_target is None:
        zero_target = len(gt_boxes) == 0
    if zero_target:
        return {t: float(len(pred_boxes) == 0) for t in ts}
    if not gt_boxes:
        raise ValueError("a description that is not zero-target needs at least one ground-truth box")
    if not pred_boxes:
        return {t: 0.0 for t in ts}
    from scipy.optimize import linear_sum_assignment

    preds = [to_box(b) for b in pred_boxes]
    gts = [to_box(b) for b in gt_boxes]
    m = np.array([[iou(p, g) for g in gts] for p in preds], dtype=np.float64)
    rows, cols = linear_sum_assignment(-m)
    matched = m[rows, cols]
    denom = len(preds) + len(gts)
    return {t: 2.0 * float(np.sum(matched >= t)) / denom for t in ts}


def multi3drefer_f1(
    predictions: Sequence[Sequence[BoxInput]],
    targets: Sequence[Sequence[BoxInput]],
    eval_types: Optional[Sequence[str]] = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    convention: str = "aabb",
) -> dict[str, Any]:
    """Multi3DRefer F1@k, the mean of :func:`target_f1` per ``eval_type`` and overall.

    ``predictions[i]``/``targets[i]``: lists of boxes. ``eval_types[i]`` in
    :data:`MULTI3DREFER_EVAL_TYPES` decides the zero-target rule (``zt_*``); without eval types
    an empty target list means zero-target. Returns ``{"overall": {"f1@0.25": .., "f1@0.5": ..,
    "n": ..}, <eval_type>: {...} for each of the five, "per_item": [{"f1@0.25": ..}, ...]}``.
    """
    extra = {"eval_types": eval_types} if eval_types is not None else {}
    n = _check_lengths(predictions=predictions, targets=targets, **extra)
    ts = _check_thresholds(thresholds)
    iou = box_iou_fn(convention)
    per_item = []
    for i in range(n):
        zero = None
        if eval_types is not None:
            if eval_types[i] not in MULTI3DREFER_EVAL_TYPES:
                raise ValueError(f"item {i}: eval_type {eval_types[i]!r} is not one of {MULTI3DREFER_EVAL_TYPES}")
            zero = eval_types[i] in MULTI3DREFER_ZERO_TARGET_TYPES
        try:
            scores = target_f1(predictions[i], targets[i], ts, iou, zero_target=zero)
        except ValueError as exc:
            raise ValueError(f"item {i}: {exc}") from exc
        per_item.append({f"f1@{t:g}": scores[t] for t in ts})
    groups: dict[str, list[int]] = {"overall": list(range(n))}
    if eval_types is not None:
        for name in MULTI3DREFER_EVAL_TYPES:
            groups[name] = [i for i, e in enumerate(eval_types) if e == name]
    out: dict[str, Any] = {}
    for name, idx in groups.items():
        out[name] = {f"f1@{t:g}": _mean_or_none([per_item[i][f"f1@{t:g}"] for i in idx]) for t in ts}
        out[name]["n"] = len(idx)
    out["per_item"] = per_item
    return out


# ---------------------------------------------------------------------------------------------
# Question answering (ScanQA, SQA3D)
# ---------------------------------------------------------------------------------------------

# LEO's ``clean_answer`` (embodied-generalist data/data_utils.py), which Chat-Scene and later
# 3D-LLM evaluations reuse for ScanQA/SQA3D EM and refined EM. Its steps, in order:
_MISSPELLINGS = {
    "letf": "left", "let": "left", "tehre": "there", "rigth": "right", "rght": "right",
    "behine": "behind", "tv": "TV", "chai": "chair", "wasing": "washing", "waslked": "walked",
    "oclock": "o'clock",
}  # fmt: skip
_NUMBER_WORDS = {
    "0": "zero", "none": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five",
    "6": "six", "7": "seven", "8": "eight", "9": "nine", "10": "ten", "11": "eleven", "12": "twelve",
    "13": "thirteen", "14": "fourteen", "15": "fifteen", "16": "sixteen", "17": "seventeen",
    "18": "eighteen", "19": "nineteen", "20": "twenty", "23": "twenty-three",
}  # fmt: skip


def normalize_answer(text: str) -> str:
    """A QA answer normalised as the ScanQA/SQA3D evaluations do (LEO's ``clean_answer``).

    Lower-case; trim; collapse repeated spaces; drop characters other than letters, digits,
    ``, ' - :`` and whitespace; fix the dataset's common misspellings; numbers 0-20 and 23 (and
    "none") to words; drop a digit glued to a word ("mat2"); drop "a"/"an"/"the" before a word;
    "backwards" to "backward".
    """
    s = text.lower()
    s = re.sub(r" +$", "", s)
    s = re.sub(r"^ +", "", s)
    s = re.sub(r" {2,}", " ", s)
    s = re.sub(r"\.[ ]{2,}", ". ", s)
    s = re.sub(r"[^a-zA-Z0-9,'\s\-:]+", "", s)
    for wrong, right in _MISSPELLINGS.items():
        s = re.sub(rf"\b{wrong}\b", right, s)
    s = re.sub(r"\bo'[ ]+clock\b", "o'clock", s)
    for number, word in _NUMBER_WORDS.items():
        s = re.sub(rf"\b{number}\b", word, s)
    s = re.sub(r"\b([a-zA-Z]+)([0-9])\b", r"\g<1>", s)
    for article in ("a", "an", "the"):
        s = re.sub(rf"\b{article}\b ([a-zA-Z]+)", r"\g<1>", s)
    return re.sub(r"\bbackwards\b", "backward", s)


def answer_match(prediction: str, answers: Sequence[str], normalize: bool = True) -> tuple[float, float]:
    """``(EM, refined EM)`` of one answer against the accepted answers.

    EM: the normalised prediction equals one of the normalised answers. Refined EM: EM, or one of
    the two (spaces removed) contains the other. An empty prediction scores (0, 0) (Chat-Scene's
    guard: LEO's version let an empty string match every answer as a substring).
    """
    pred = normalize_answer(prediction) if normalize else prediction
    gts = [normalize_answer(a) for a in answers] if normalize else list(answers)
    if not pred:
        return 0.0, 0.0
    if pred in gts:
        return 1.0, 1.0
    squeezed = "".join(pred.split())
    for gt in gts:
        g = "".join(gt.split())
        if squeezed in g or g in squeezed:
            return 0.0, 1.0
    return 0.0, 0.0


def qa_metrics(
    predictions: Sequence[str],
    answers: Sequence[Sequence[str]],
    question_types: Optional[Sequence[str]] = None,
    caption_scorers: Sequence[str] = CAPTION_SCORERS,
) -> dict[str, Any]:
    """ScanQA/SQA3D scores of ``predictions[i]`` against the accepted ``answers[i]``.

    Returns ``{"overall": {"EM": .., "EM-R": .., "n": .., <caption metrics>}, <question type>:
    {"EM", "EM-R", "n"} for each type present, "per_item": [{"EM", "EM-R"}]}``. The caption
    metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr; corpus values, Java needed) are computed once over
    all items on the normalised answers with ``caption_scorers`` (``()`` skips them).
    """
    extra = {"question_types": question_types} if question_types is not None else {}
    n = _check_lengths(predictions=predictions, answers=answers, **extra)
    for i, (p, a) in enumerate(zip(predictions, answers)):
        if not isinstance(p, str):
            raise ValueError(f"prediction {i} must be a string, got {p!r}")
        if isinstance(a, str) or not a or not all(isinstance(x, str) for x in a):
            raise ValueError(f"answers {i} must be a non-empty list of strings, got {a!r}")
    per_item = [dict(zip(("EM", "EM-R"), answer_match(p, a))) for p, a in zip(predictions, answers)]
    groups: dict[str, list[int]] = {"overall": list(range(n))}
    if question_types is not None:
        by_type: dict[str, list[int]] = defaultdict(list)
        for i, t in enumerate(question_types):
            by_type[str(t)].append(i)
        groups.update(sorted(by_type.items()))
    out: dict[str, Any] = {}
    for name, idx in groups.items():
        out[name] = {k: _mean_or_none([per_item[i][k] for i in idx]) for k in ("EM", "EM-R")}
        out[name]["n"] = len(idx)
    if caption_scorers and n:
        scores = caption_scores(
            [normalize_answer(p) for p in predictions],
            [[normalize_answer(x) for x in a] for a in answers],
            scorers=caption_scorers,
        )
        out["overall"].update(scores["corpus"])
    out["per_item"] = per_item
    return out


# ---------------------------------------------------------------------------------------------
# Dense captioning (Scan2Cap)
# ---------------------------------------------------------------------------------------------


def scan2cap_metrics(
    captions: Sequence[Optional[str]],
    pred_boxes: Sequence[Optional[BoxInput]],
    gt_boxes: Sequence[BoxInput],
    references: Sequence[Sequence[str]],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    convention: str = "aabb",
    caption_scorers: Sequence[str] = CAPTION_SCORERS,
) -> dict[str, Any]:
    """Scan2Cap m@kIoU over ground-truth objects.

    Item i is one ground-truth object (``gt_boxes[i]``, its reference captions ``references[i]``)
    and the model's caption ``captions[i]`` given with the box ``pred_boxes[i]`` (the predicted box
    matched to that object; None/None when the model gave nothing: IoU 0). Per-caption scores come
    from :func:`scene_vlm_ros.eval.caption_metrics.caption_scores`; m@k is the mean over all items
    of ``score_i * [IoU_i >= k]``. Returns ``{"m@0.25": {metric: value}, "m@0.5": {...}, "n": n,
    "ious": [..], "per_item": {metric: [unmasked score]}}``.
    """
    n = _check_lengths(captions=captions, pred_boxes=pred_boxes, gt_boxes=gt_boxes, references=references)
    ts = _check_thresholds(thresholds)
    iou = box_iou_fn(convention)
    ious = [0.0 if b is None else float(iou(to_box(b), to_box(g))) for b, g in zip(pred_boxes, gt_boxes)]
    scores = caption_scores(["" if c is None else c for c in captions], references, scorers=caption_scorers)
    out: dict[str, Any] = {}
    for t in ts:
        mask = np.array([v >= t for v in ious], dtype=np.float64)
        out[f"m@{t:g}"] = {k: float(np.mean(np.asarray(v) * mask)) for k, v in scores["per_item"].items()}
    out["n"] = n
    out["ious"] = ious
    out["per_item"] = scores["per_item"]
    return out


# ---------------------------------------------------------------------------------------------
# Numeric answers (SPAR)
# ---------------------------------------------------------------------------------------------


def mean_relative_accuracy(pred: float, truth: float) -> float:
    """SPAR's MRA of one numeric answer: share of thresholds t in 0.50:0.05:0.95 with
    ``|pred - truth| / |truth| < 1 - t`` (a zero truth needs an exact zero)."""
    if not (np.isfinite(pred) and np.isfinite(truth)):
        return 0.0
    if truth == 0:
        return float(pred == 0)
    rel = abs(pred - truth) / abs(truth)
    return float(np.mean(rel < _MRA_TOLERANCES))


def numeric_mra(predictions: Sequence[Optional[float]], truths: Sequence[float]) -> dict[str, Any]:
    """Mean MRA over numeric answers; a None prediction (no number in the answer) scores 0.

    Returns ``{"mra": mean or None, "n": n, "unanswered": count of None, "per_item": [mra_i]}``.
    """
    _check_lengths(predictions=predictions, truths=truths)
    per_item = [0.0 if p is None else mean_relative_accuracy(float(p), float(t)) for p, t in zip(predictions, truths)]
    return {
        "mra": _mean_or_none(per_item),
        "n": len(per_item),
        "unanswered": sum(p is None for p in predictions),
        "per_item": per_item,
    }
