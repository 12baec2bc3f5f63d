"""`resynth` command line: one argparse program, one subcommand per library function.

The detector commands live here (fit.py: fit, fit-cascade, latent-map, calibrate, eval-detector; build.py: build;
score.py: detect, audit, roc; distill.py: distill-encoder); the generator commands beside their library in
gan_inversion/cli.py; `serve` in api/cli.py. `build_parser` puts them together.
"""

from __future__ import annotations

import argparse
import sys

from gan_inversion import cli as gan_cli
from gan_inversion.checkpoints import BundleError
from gan_inversion.data import DataError
from gan_inversion.perceptual import PerceptualUnavailable

from ..audit.ray_engine import RayUnavailable
from ..audit.walk import OutsideRoot
from ..spec import DetectorError
from . import build, distill, fit, score


def build_parser(extra: tuple = ()) -> argparse.ArgumentParser:
    """The `resynth` parser: the generator commands, the detector commands, then each `extra(sub)` (the
    service adds `serve` this way)."""
    p = argparse.ArgumentParser(prog="resynth", description="GAN-inversion deepfake detection.")
    sub = p.add_subparsers(dest="command", required=True)
    gan_cli.add_commands(sub)
    fit.add_commands(sub)
    build.add_commands(sub)
    distill.add_commands(sub)
    score.add_commands(sub)
    for register in extra:
        register(sub)
    return p


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse and run a subcommand; domain errors become one line on stderr and exit status 2."""
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (BundleError, DataError, PerceptualUnavailable, DetectorError, FileNotFoundError, NotADirectoryError,
            OutsideRoot, RayUnavailable, KeyError, ValueError) as exc:
        print(f"resynth {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
