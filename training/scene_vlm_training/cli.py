"""``scene-vlm-train``: build-data, fit, export, bench-step, configs (one registered ``main()``).

Heavy imports (torch, transformers, accelerate) happen inside the subcommands so ``--help`` and
config errors are instant. Every subcommand validates its config before doing any work; a
:class:`~scene_vlm_training.config.ConfigError` (or another input error) prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional

from .config import BuildDataConfig, ConfigError, FitConfig, load_config

logger = logging.getLogger(__name__)


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, required=True, help="YAML/JSON config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key (dotted path, value parsed as YAML); repeatable")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scene-vlm-train", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build-data", help="scans + annotations -> sample shards and a manifest")
    _add_config_args(p)
    p.add_argument("--shard", default="0/1", help="build part i of n (scenes i, i+n, ...); default 0/1")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("fit", help="fine-tune with the text + reconstruction losses (launch with accelerate)")
    _add_config_args(p)
    p.add_argument("--resume", default=None, help="'latest' or a checkpoint directory to continue from")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("export", help="checkpoint -> a model directory the node's transformers backend loads")
    p.add_argument("--checkpoint", type=Path, required=True, help="a fit checkpoint directory (checkpoint-<step>)")
    p.add_argument("--out", type=Path, required=True, help="output model directory (must not exist or be empty)")

    sub.add_parser("configs", help="print the absolute paths of the shipped config files")

    p = sub.add_parser("bench-step", help="step time and memory of the 7B architecture, with and without heads")
    p.add_argument("--arch", default="qwen2-vl-7b", choices=["qwen2-vl-7b", "tiny"], help="architecture")
    p.add_argument("--n-frames", type=int, default=8, help="frames per sample (plus the BEV)")
    p.add_argument("--image-px", type=int, default=512, help="longer side of every image")
    p.add_argument("--steps", type=int, default=5, help="timed steps (after 2 warm-up steps)")
    p.add_argument("--device", default="cuda", help="cuda | cpu")
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "build-data":
            from .data.build import parse_shard, run_build

            cfg = load_config(BuildDataConfig, args.config, args.overrides)
            manifest = run_build(cfg, parse_shard(args.shard), progress=not args.no_progress)
            print(json.dumps({k: manifest[k] for k in ("samples", "per_task", "per_source", "drops")}, indent=1))
        elif args.command == "fit":
            from .fit import fit

            cfg = load_config(FitConfig, args.config, args.overrides)
            result = fit(cfg, resume=args.resume, progress=not args.no_progress)
            last = result["history"][-1] if result["history"] else {}
            print(json.dumps({"steps": result["steps"], "last_checkpoint": result["last_checkpoint"],
                              "last_step_losses": last}, indent=1))
        elif args.command == "export":
            from .export import export_checkpoint

            out = export_checkpoint(args.checkpoint, args.out)
            print(str(out))
        elif args.command == "configs":
            root = Path(__file__).resolve().parent / "configs"
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    print(path)
        elif args.command == "bench-step":
            from .bench import bench_step

            figures = bench_step(arch=args.arch, n_frames=args.n_frames, image_px=args.image_px, steps=args.steps,
                                 device=args.device, out=args.out)
            print(json.dumps(figures, indent=1))
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"scene-vlm-train {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
