"""scene_vlm_ros.commands: the `scene-vlm` subcommands and benchmarks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional


def emit_json(obj: Any, out: Optional[Path], default: Callable[[Any], Any] = str) -> str:
    """Print ``obj`` as indented JSON and, when ``out`` is given, write it there too (parents created)."""
    text = json.dumps(obj, indent=2, default=default)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    print(text)
    return text
