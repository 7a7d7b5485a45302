"""Where the optional real data lives (``shared/`` beside a checkout, or $SCENE_VLM_SHARED)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def find_shared(*parts: str) -> Optional[Path]:
    """``<shared>/<parts...>`` from $SCENE_VLM_SHARED, beside the working directory, or beside the
    checkout; None when none of them has it."""
    roots = [os.environ.get("SCENE_VLM_SHARED"), Path.cwd().parent / "shared",
             Path(__file__).resolve().parents[3].parent / "shared"]
    for root in roots:
        if root and (Path(root).joinpath(*parts)).exists():
            return Path(root).joinpath(*parts)
    return None
