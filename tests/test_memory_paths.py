"""core.memory_paths: memory names are confined to memory.root_dir (absolute, '..', symlinks out refused)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scene_vlm_ros.core.memory_paths import MemoryPathError, resolve_memory_dir, resolve_root_dir


def test_plain_and_nested_names_resolve_inside_root(tmp_path: Path) -> None:
    root = tmp_path / "memories"
    assert resolve_memory_dir(root, "kitchen") == root.resolve() / "kitchen"
    assert resolve_memory_dir(root, "site_a/kitchen-2026.11") == root.resolve() / "site_a" / "kitchen-2026.11"
    assert resolve_memory_dir(str(root), " kitchen/ ") == root.resolve() / "kitchen"


@pytest.mark.parametrize("name", ["/tmp/evil", "//etc", "~/evil", "~root/x"])
def test_absolute_names_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(MemoryPathError, match="absolute path"):
        resolve_memory_dir(tmp_path, name)


@pytest.mark.parametrize("name", ["..", "../x", "a/../../x", "a/.."])
def test_dotdot_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(MemoryPathError, match=r"'\.\.'"):
        resolve_memory_dir(tmp_path / "root", name)


@pytest.mark.parametrize("name", [".hidden", "a/./b", "a b", "x\\..\\y", "k$itchen", "a\x00b"])
def test_disallowed_components_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(MemoryPathError, match="not allowed"):
        resolve_memory_dir(tmp_path, name)


@pytest.mark.parametrize("name", ["", "   ", "/"])
def test_empty_or_root_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(MemoryPathError):
        resolve_memory_dir(tmp_path, name)


def test_symlink_leading_out_of_root_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "escape").symlink_to(outside, target_is_directory=True)
    with pytest.raises(MemoryPathError, match="outside memory.root_dir"):
        resolve_memory_dir(root, "escape")
    with pytest.raises(MemoryPathError, match="outside memory.root_dir"):
        resolve_memory_dir(root, "escape/kitchen")  # a memory that does not exist yet, below the link
    (root / "to_root").symlink_to(root, target_is_directory=True)
    with pytest.raises(MemoryPathError, match="outside memory.root_dir"):
        resolve_memory_dir(root, "to_root")  # the root itself is not a memory
    assert not any(outside.iterdir()), "resolving must not create anything"


def test_symlink_staying_inside_root_allowed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "alias").symlink_to(root / "real", target_is_directory=True)
    assert resolve_memory_dir(root, "alias") == (root / "real").resolve()


def test_symlinked_root_is_followed(tmp_path: Path) -> None:
    real_root = tmp_path / "real_root"
    real_root.mkdir()
    link = tmp_path / "root_link"
    link.symlink_to(real_root, target_is_directory=True)
    assert resolve_memory_dir(link, "kitchen") == real_root.resolve() / "kitchen"


def test_root_must_be_absolute_and_set(tmp_path: Path) -> None:
    with pytest.raises(MemoryPathError, match="empty"):
        resolve_root_dir("")
    with pytest.raises(MemoryPathError, match="absolute"):
        resolve_root_dir("relative/memories")
    assert resolve_root_dir("~") == Path(os.path.realpath(Path.home()))


def test_nothing_is_created(tmp_path: Path) -> None:
    root = tmp_path / "not_yet"
    resolve_memory_dir(root, "a/b/c")
    assert not root.exists()
