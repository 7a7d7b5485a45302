"""Write a synthetic room as a ScanNet-layout scan (the layout ``datasets.scannet`` reads).

ScanNet itself cannot be redistributed, yet the benchmark path of build-data (ScanRefer,
Multi3DRefer, ScanQA, SQA3D, Scan2Cap annotations over ScanNet scans) must be exercised end to end.
This writes our rendered frames and the room's object meshes in ScanNet's exported-``.sens``
layout: ``color/``, ``depth/`` (uint16 mm PNG), ``pose/``, ``intrinsic/``, the ``_vh_clean_2.ply``
mesh, its per-vertex segments and the ``aggregation.json`` object groups. Object ``i`` of the
layout becomes ScanNet ``objectId`` ``object_id - 1`` (0-based, as in ScanNet).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def write_scannet_scan(layout: Any, frames: Sequence[Any], out_dir: str | Path, scene_id: str = "scene0000_00"
                       ) -> Path:
    """Write ``frames`` (RGBDFrame, world = room frame) and ``layout``'s objects; returns the scan dir."""
    import cv2
    import open3d as o3d

    from scene_vlm_ros.datasets.synthetic import object_parts_world

    root = Path(out_dir) / scene_id
    for sub in ("color", "depth", "pose", "intrinsic"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    K = np.eye(4)
    K[:3, :3] = frames[0].intrinsics.K
    for name in ("intrinsic_color.txt", "intrinsic_depth.txt"):
        np.savetxt(root / "intrinsic" / name, K, fmt="%.6f")
    for i, f in enumerate(frames):
        cv2.imwrite(str(root / "color" / f"{i}.png"), cv2.cvtColor(f.color_rgb, cv2.COLOR_RGB2BGR))
        depth_mm = np.nan_to_num(f.depth_m * 1000.0, nan=0.0).round().clip(0, 65535).astype(np.uint16)
        cv2.imwrite(str(root / "depth" / f"{i}.png"), depth_mm)
        np.savetxt(root / "pose" / f"{i}.txt", np.asarray(f.T_world_camera), fmt="%.8f")
    verts, tris, colors, segs, groups = [], [], [], [], []
    base = 0
    for obj in layout.objects:
        seg_id = int(obj.object_id)
        for part in object_parts_world(obj):
            verts.append(part.vertices)
            tris.append(part.triangles + base)
            colors.append(np.tile(np.asarray(part.rgb, np.float64) / 255.0, (len(part.vertices), 1)))
            segs.extend([seg_id] * len(part.vertices))
            base += len(part.vertices)
        groups.append({"id": int(obj.object_id) - 1, "objectId": int(obj.object_id) - 1, "label": obj.label,
                       "segments": [seg_id]})
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.vstack(verts)),
                                     o3d.utility.Vector3iVector(np.vstack(tris)))
    mesh.vertex_colors = o3d.utility.Vector3dVector(np.vstack(colors))
    o3d.io.write_triangle_mesh(str(root / f"{scene_id}_vh_clean_2.ply"), mesh, write_ascii=False)
    (root / f"{scene_id}_vh_clean_2.0.010000.segs.json").write_text(json.dumps({"segIndices": segs}))
    (root / f"{scene_id}.aggregation.json").write_text(json.dumps({
        "sceneId": scene_id, "segGroups": groups, "segmentsFile": f"scannet.{scene_id}_vh_clean_2.0.010000.segs.json",
    }))
    return root
