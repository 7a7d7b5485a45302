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


# ---- the node's ~/save_memory and ~/load_memory (in-process graph) ---------------------------------------------

QUIET = {"publish.bev_period_s": 0.0, "publish.cloud_period_s": 0.0, "publish.diagnostics_period_s": 0.0,
         "publish.objects_period_s": 0.0, "model.backend": "fallback"}


def _graph(root: Path, **params: object):
    pytest.importorskip("rclpy")
    from scene_vlm_ros.ros.bringup import Bringup
    from tests.rosutil import fresh_domain

    return Bringup({**QUIET, "memory.root_dir": str(root), **params}, domain_id=fresh_domain())


def _services(graph):
    from scene_vlm_interfaces.srv import LoadMemory, SaveMemory
    from tests.rosutil import make_client_node

    client = make_client_node(graph, "memory_client")
    return (client.create_client(SaveMemory, "/scene_vlm/save_memory"),
            client.create_client(LoadMemory, "/scene_vlm/load_memory"))


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


@pytest.mark.ros
def test_node_saves_and_loads_only_inside_the_root(tmp_path: Path) -> None:
    from scene_vlm_interfaces.srv import LoadMemory, SaveMemory
    from scene_vlm_ros.datasets.render import generate_sequence
    from scene_vlm_ros.datasets.synthetic import generate_layout
    from tests.rosutil import call

    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    with _graph(root) as graph:
        for f in generate_sequence(generate_layout(0), n_frames=2, width=160, height=120, seed=0):
            graph.node.memory.integrate(f.frame)
        save, load = _services(graph)
        before = _tree(tmp_path)
        for name in ("../outside/evil", str(outside / "evil"), "~/evil", "a/../../outside"):
            resp = call(save, SaveMemory.Request(directory=name))
            assert not resp.success and resp.message.startswith("refused:"), (name, resp.message)
            resp = call(load, LoadMemory.Request(directory=name))
            assert not resp.success and resp.message.startswith("refused:"), (name, resp.message)
        root.mkdir(exist_ok=True)
        (root / "escape").symlink_to(outside, target_is_directory=True)
        resp = call(save, SaveMemory.Request(directory="escape"))
        assert not resp.success and "outside memory.root_dir" in resp.message
        assert _tree(outside) == [] and _tree(tmp_path) == sorted([*before, "root", "root/escape"])

        resp = call(save, SaveMemory.Request(directory="kitchen"))
        assert resp.success, resp.message
        assert (root / "kitchen" / "manifest.json").is_file()
        resp = call(load, LoadMemory.Request(directory="kitchen"))
        assert resp.success and "(odom)" in resp.message, resp.message
        assert _tree(outside) == []


@pytest.mark.ros
def test_node_refuses_a_memory_saved_in_another_frame(tmp_path: Path) -> None:
    from scene_vlm_interfaces.srv import LoadMemory, SaveMemory
    from scene_vlm_ros.datasets.render import generate_sequence
    from scene_vlm_ros.datasets.synthetic import generate_layout
    from tests.rosutil import call

    root = tmp_path / "root"
    with _graph(root, map_frame="odom", pose_source="odometry") as graph:
        for f in generate_sequence(generate_layout(0), n_frames=2, width=160, height=120, seed=0):
            graph.node.memory.integrate(f.frame)
        save, _load = _services(graph)
        assert call(save, SaveMemory.Request(directory="odom_map")).success
    with _graph(root, map_frame="map", pose_source="odometry") as graph:
        _save, load = _services(graph)
        memory_before = graph.node.memory
        resp = call(load, LoadMemory.Request(directory="odom_map"))
        assert not resp.success
        assert "in frame 'odom'" in resp.message and "maps in 'map'" in resp.message, resp.message
        assert graph.node.memory is memory_before, "the current memory must be kept"
