"""BLEU-1..4, METEOR, ROUGE-L and CIDEr through the standard ``pycocoevalcap`` scorers.

The sentences go through the scorers' own PTB tokenizer first (Stanford CoreNLP's
``PTBTokenizer``, lower-casing and dropping punctuation), as the COCO caption evaluation and the
3D-language benchmarks' evaluators do. The tokenizer and METEOR are Java programs started by
``pycocoevalcap``: a missing or failing Java runtime raises :class:`CaptionScorerError` with what to
do (``scripts/setup.d/30-java.sh`` installs Debian's ``default-jre-headless``).

Scores are on the scorers' own scale (0..1 for BLEU/METEOR/ROUGE-L, CIDEr around 0..10); papers
print them x100. ``corpus`` is what the scorer reports for the whole set: corpus-level BLEU (not
the mean of sentence BLEUs), the mean of METEOR/ROUGE-L/CIDEr; ``per_item`` has each candidate's
own score (sentence BLEU), which Scan2Cap's m@kIoU averages after masking.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

#: Metric names in the order the functions report them.
CAPTION_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
#: The scorers behind them (BLEU gives BLEU-1..4).
CAPTION_SCORERS = ("BLEU", "METEOR", "ROUGE-L", "CIDEr")
_JAVA_HINT = "install a Java runtime (scripts/setup.d/30-java.sh: apt-get install default-jre-headless)"


class CaptionScorerError(RuntimeError):
    """The pycocoevalcap scorers could not run (no Java, the tokenizer or METEOR failed)."""


def java_available() -> bool:
    """True when a ``java`` executable is on PATH (the tokenizer and METEOR need it)."""
    return shutil.which("java") is not None


def _require_scorers() -> None:
    if not java_available():
        raise CaptionScorerError(f"caption metrics need the 'java' executable on PATH: {_JAVA_HINT}")
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError as exc:
        raise CaptionScorerError("caption metrics need pycocoevalcap (pip install -r requirements.lock)") from exc


def _check_inputs(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists")
    if not candidates:
        raise ValueError("caption metrics need at least one candidate")
    for i, (cand, refs) in enumerate(zip(candidates, references)):
        if not isinstance(cand, str):
            raise ValueError(f"candidate {i} must be a string, got {cand!r}")
        if isinstance(refs, str) or not refs or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"references {i} must be a non-empty list of strings, got {refs!r}")


def ptb_tokenize(sentences: dict[str, list[str]]) -> dict[str, list[str]]:
    """PTB-tokenize ``{key: [sentence, ...]}`` with pycocoevalcap's tokenizer (Java).

    Returns the same keys with lower-cased, space-joined tokens, punctuation removed.
    """
    _require_scorers()
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    payload = {k: [{"caption": s} for s in v] for k, v in sentences.items()}
    try:
        out = PTBTokenizer().tokenize(payload)
    except (OSError, UnicodeDecodeError) as exc:
        raise CaptionScorerError(f"the PTB tokenizer (java) failed to run: {exc}; {_JAVA_HINT}") from exc
    # A crashed JVM gives fewer lines back than sentences; the keys then go missing silently.
    if set(out) != set(sentences) or any(len(out[k]) != len(v) for k, v in sentences.items()):
        raise CaptionScorerError(
            f"the PTB tokenizer (java) returned {sum(len(v) for v in out.values())} sentences for "
            f"{sum(len(v) for v in sentences.values())}: see the java error above; {_JAVA_HINT}"
        )
    return out


def _meteor(gts: dict[str, list[str]], res: dict[str, list[str]]) -> tuple[float, list[float]]:
    from pycocoevalcap.meteor.meteor import Meteor

    try:
        scorer = Meteor()
    except OSError as exc:
        raise CaptionScorerError(f"METEOR (java) failed to start: {exc}; {_JAVA_HINT}") from exc
    try:
        score, scores = scorer.compute_score(gts, res)
    except (OSError, ValueError) as exc:
        # The jar died or printed an error instead of a number (e.g. out of memory).
        stderr = b""
        if scorer.meteor_p.poll() is not None and scorer.meteor_p.stderr is not None:
            stderr = scorer.meteor_p.stderr.read() or b""
        raise CaptionScorerError(
            f"METEOR (java) failed: {exc}; {stderr.decode(errors='replace')[-500:]}; {_JAVA_HINT}"
        ) from exc
    finally:
        _close_meteor(scorer)
    return float(score), [float(s) for s in scores]


def _close_meteor(scorer: Any) -> None:
    """Stop the METEOR JVM now instead of at garbage collection.

    pycocoevalcap's ``compute_score`` keeps its lock held when it raises, and its ``__del__``
    takes that lock: the instance gets a fresh lock here so that collecting it cannot deadlock.
    """
    proc = scorer.meteor_p
    if proc.stdin is not None and not proc.stdin.closed:
        proc.stdin.close()
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    scorer.lock = threading.Lock()


def caption_scores(
    candidates: Sequence[str],
    references: Sequence[Sequence[str]],
    tokenize: bool = True,
    scorers: Sequence[str] = CAPTION_SCORERS,
) -> dict[str, Any]:
    """Caption metrics of ``candidates[i]`` against ``references[i]`` (one or more strings each).

    Returns ``{"corpus": {metric: float}, "per_item": {metric: [float] * n}, "n": n}`` with the
    metrics of :data:`CAPTION_METRICS` whose scorer is in ``scorers`` (a subset of
    :data:`CAPTION_SCORERS`; leaving out METEOR saves its JVM start, several seconds).
    ``tokenize=False`` skips the PTB tokenizer (inputs must then be tokenized, space-separated text).
    """
    _check_inputs(candidates, references)
    unknown = set(scorers) - set(CAPTION_SCORERS)
    if unknown or not scorers:
        raise ValueError(f"scorers must be a non-empty subset of {CAPTION_SCORERS}, got {list(scorers)}")
    _require_scorers()
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    n = len(candidates)
    res = {f"c{i}": [c] for i, c in enumerate(candidates)}
    gts = {f"c{i}": list(r) for i, r in enumerate(references)}
    if tokenize:
        # one JVM run for both sides
        both = ptb_tokenize({**{f"res:{k}": v for k, v in res.items()}, **{f"gts:{k}": v for k, v in gts.items()}})
        res = {k: both[f"res:{k}"] for k in res}
        gts = {k: both[f"gts:{k}"] for k in gts}

    corpus: dict[str, float] = {}
    per_item: dict[str, list[float]] = {}
    if "BLEU" in scorers:
        bleu, bleu_items = Bleu(4).compute_score(gts, res, verbose=0)
        for k in range(4):
            corpus[f"BLEU-{k + 1}"] = float(bleu[k])
            per_item[f"BLEU-{k + 1}"] = [float(s) for s in bleu_items[k]]
    if "METEOR" in scorers:
        corpus["METEOR"], per_item["METEOR"] = _meteor(gts, res)
    if "ROUGE-L" in scorers:
        rouge, rouge_items = Rouge().compute_score(gts, res)
        corpus["ROUGE-L"], per_item["ROUGE-L"] = float(rouge), [float(s) for s in rouge_items]
    if "CIDEr" in scorers:
        cider, cider_items = Cider().compute_score(gts, res)
        corpus["CIDEr"], per_item["CIDEr"] = float(cider), [float(s) for s in cider_items]
    return {"corpus": corpus, "per_item": per_item, "n": n}
