"""Confine saved scene memories to one directory tree (``memory.root_dir``).

``~/save_memory`` and ``~/load_memory`` are reachable by any process on the DDS network, so a request
must not be able to name an arbitrary directory on the node's host. A request names a memory *inside*
the configured root; :func:`resolve_memory_dir` turns that name into a path and refuses, with a message
that says why, anything that would leave the root:

- an empty name, or one that is the root itself;
- an absolute path (``/tmp/x``) or a home-relative one (``~/x``);
- a ``..`` component, or any component outside ``[A-Za-z0-9._-]`` (no hidden names either);
- a symlink anywhere along the path whose target lies outside the root.

Pure ``pathlib``: nothing is created or written here, so a refused request leaves no trace. The check
is made at request time; a process that can replace directories inside the root between the check and
the write can still race it, which is why the root should be a directory only the node writes to.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

__all__ = ["MemoryPathError", "resolve_memory_dir", "resolve_root_dir"]

# A name component: letters, digits, dot, dash, underscore; it may not start with a dot (no "..",
# no hidden directories) and is at most 128 characters long.
_COMPONENT = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")
_MAX_DEPTH = 8


class MemoryPathError(ValueError):
    """A memory name that would leave ``memory.root_dir`` (or a bad root); the message says which rule."""


def resolve_root_dir(root_dir: str | os.PathLike[str]) -> Path:
    """The memory root as an absolute, symlink-free path.

    Args:
        root_dir: ``memory.root_dir``; ``~`` is expanded. It must be absolute after expansion (a
            relative root would depend on the node's working directory). It need not exist yet.

    Raises:
        MemoryPathError: empty or relative root.
    """
    text = str(root_dir).strip()
    if not text:
        raise MemoryPathError("memory.root_dir is empty: set it to the directory that holds saved memories")
    root = Path(text).expanduser()
    if not root.is_absolute():
        raise MemoryPathError(f"memory.root_dir must be an absolute path, got {text!r}")
    return Path(os.path.realpath(root))


def resolve_memory_dir(root_dir: str | os.PathLike[str], name: str) -> Path:
    """The directory of the memory ``name`` inside ``root_dir``.

    Args:
        root_dir: the configured memory root (see :func:`resolve_root_dir`).
        name: the memory named by a request: one or more ``/``-separated components, e.g. ``kitchen``
            or ``site_a/kitchen_2026-11-25``.

    Returns:
        The absolute, symlink-resolved directory, guaranteed to lie strictly inside the resolved root.
        It may not exist yet (saving creates it).

    Raises:
        MemoryPathError: the name is empty, absolute, contains ``..`` or a disallowed component, or
            resolves (through a symlink) outside the root.
    """
    root = resolve_root_dir(root_dir)
    text = name.strip()
    if not text:
        raise MemoryPathError("memory name is empty: name a memory inside memory.root_dir, e.g. 'kitchen'")
    if text.startswith(("/", "~", "\\")) or PurePosixPath(text).is_absolute():
        raise MemoryPathError(
            f"memory name {name!r} is an absolute path; requests name a memory inside memory.root_dir "
            f"({root}), e.g. 'kitchen'")
    parts = [p for p in text.split("/") if p != ""]
    if ".." in parts:
        raise MemoryPathError(f"memory name {name!r} contains '..'; it must stay inside memory.root_dir ({root})")
    if len(parts) > _MAX_DEPTH:
        raise MemoryPathError(f"memory name {name!r} has more than {_MAX_DEPTH} components")
    for part in parts:
        if not _COMPONENT.match(part):
            raise MemoryPathError(
                f"memory name {name!r}: component {part!r} is not allowed (use letters, digits, '.', '-', '_'; "
                "no leading '.')")
    resolved = Path(os.path.realpath(root.joinpath(*parts)))
    if resolved == root or root not in resolved.parents:
        raise MemoryPathError(
            f"memory name {name!r} resolves to {resolved}, outside memory.root_dir ({root}); "
            "a symlink inside the root leads out of it")
    return resolved
