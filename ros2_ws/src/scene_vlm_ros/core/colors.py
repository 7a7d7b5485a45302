"""Colour names <-> RGB, shared by the synthetic world (which paints objects by name) and the
query side (which names an instance's dominant colour so "the brown chair" can be matched)."""

from __future__ import annotations

import numpy as np

#: Basic colour terms used in referring expressions, with a representative sRGB value.
COLOR_PALETTE: dict[str, tuple[int, int, int]] = {
    "white": (235, 235, 230),
    "black": (30, 30, 30),
    "gray": (128, 128, 128),
    "red": (200, 40, 40),
    "orange": (235, 140, 30),
    "yellow": (230, 210, 50),
    "green": (60, 160, 70),
    "blue": (50, 90, 200),
    "purple": (130, 60, 170),
    "pink": (235, 140, 180),
    "brown": (125, 80, 45),
    "beige": (210, 190, 150),
}

#: Spellings users type that mean a palette colour.
COLOR_SYNONYMS: dict[str, str] = {"grey": "gray", "tan": "beige", "violet": "purple", "dark": "black"}


def _rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) sRGB uint8/float in [0, 255] -> CIE L*a*b* (D65)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    M = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = c @ M.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    return np.stack([116.0 * f[:, 1] - 16.0, 500.0 * (f[:, 0] - f[:, 1]), 200.0 * (f[:, 1] - f[:, 2])], axis=1)


_NAMES = list(COLOR_PALETTE)
_PALETTE_LAB = _rgb_to_lab(np.array([COLOR_PALETTE[n] for n in _NAMES]))


def name_color(rgb: np.ndarray) -> str:
    """Nearest palette name (in L*a*b*) of one RGB triple or of the median of (N, 3) colours."""
    arr = np.asarray(rgb, dtype=np.float64).reshape(-1, 3)
    if len(arr) == 0:
        return ""
    lab = _rgb_to_lab(np.median(arr, axis=0, keepdims=True))
    return _NAMES[int(np.argmin(np.linalg.norm(_PALETTE_LAB - lab, axis=1)))]


def canonical_color(word: str) -> str | None:
    """The palette name a user's colour word means, or None when it is no colour."""
    w = word.strip().lower()
    w = COLOR_SYNONYMS.get(w, w)
    return w if w in COLOR_PALETTE else None
