"""The command line, ``python -m dfpir.app [--weights W] [--port P] [--device D] [--tile N] [--min-confidence P]``.

Loads the weights once (a bad file stops here, in one line), builds the page
([`build_app`][dfpir.app.ui.build_app]) and serves it on ``127.0.0.1`` until Ctrl+C. The uploads,
Gradio's copies of them and the results all live in one temporary folder, removed when the app stops.
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import warnings
from pathlib import Path

from ..errors import CommandParser, UserError, cli_main
from ..inference.runner import Restorer, budget_bytes
from ..restore import add_restorer_options
from .ui import build_app, require_gradio, serve


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = CommandParser(prog="python -m dfpir.app",
                      description="A local web app: upload photos, restore them, compare before and after, download.")
    p.add_argument("--port", type=int, help="port on 127.0.0.1 (default: the first free one from 7860)")
    add_restorer_options(p)
    return p


def check_port(port: int | None) -> None:
    """Refuse a port number outside 1-65535 in one line (argparse accepts any integer)."""
    if port is not None and not 0 < port < 65536:
        raise UserError(f"--port must be between 1 and 65535, got {port}; leave it out for the first free one from 7860")


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Entry point: serve the app until Ctrl+C; returns 0, or 2 on a usage error (bad weights, port)."""
    args = build_parser().parse_args(argv)
    check_port(args.port)
    require_gradio()  # before the weights: the quickest error first
    restorer = Restorer(args.weights, args.device, args.precision, args.tile, budget_bytes(args.memory_gb), args.min_confidence,
                        args.auto_rule)
    # Gradio 6.31 calls pandas 3 in a deprecated way on every request: not the user's concern
    warnings.filterwarnings("ignore", message=".*(no_silent_downcasting|The copy keyword is deprecated)")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop as on Ctrl+C: the folder below is removed
    with tempfile.TemporaryDirectory(prefix="dfpir-app-") as workdir:
        os.environ["GRADIO_TEMP_DIR"] = os.path.join(workdir, "gradio")  # uploads too, not /tmp/gradio
        serve(build_app(restorer, Path(workdir)), args.port)
    return 0
