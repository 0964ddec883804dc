"""The app's page, made with Gradio, and its server on this computer only.

[`build_app`][dfpir.app.ui.build_app] lays out the page around one [`Restorer`][dfpir.inference.runner.Restorer]:
photos and a degradation in, a table of what each photo was restored as (the classifier's choice
and confidence under ``auto``), a before/after slider and the restored PNGs out. The button's
function is exposed as the endpoint ``/restore``, so a `gradio_client.Client` can drive the app
as the page does (the tests do). [`serve`][dfpir.app.ui.serve] starts it on ``127.0.0.1``: no
share link, no analytics, no monitoring endpoint, no MCP server.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from ..errors import UserError
from ..inference.runner import Restorer
from .restoration import PhotoResult, restore_photos, summary

# Gradio reads this when a page is built and when it starts a server: no usage reports and no
# version check to gradio.app (build_app also passes analytics_enabled=False), no Hugging Face telemetry.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
try:
    import gradio as gr
except ImportError:  # optional dependency (pip install 'dfpir[app]'): the rest of dfpir works without it
    gr = None

HOST = "127.0.0.1"
INSTALL = "pip install 'dfpir[app]'"
#: The results table's columns, as the page shows them and ``/restore`` returns them.
COLUMNS = ["photo", "degradation", "confidence", "note", "tiles", "result"]
CACHE_HOURS = 1  # Gradio's copies of uploads and results are deleted after this long
INTRO = """\
# DFPIR: restore photos

Drop one or more photos, pick the degradation they suffer from (or **auto**: the classifier in the
weights picks one per photo and says how sure it is; a photo it finds clean is left as it is, and a
guess of low confidence is flagged in the *note* column: check that photo, or pick its degradation),
press **Restore**, compare before and after with the slider, and download the restored PNGs.
Everything runs on this computer: no photo leaves it.
"""


def require_gradio() -> None:
    """Raise a one-line [`UserError`][dfpir.errors.UserError] with the install command when Gradio is missing."""
    if gr is None:
        raise UserError(f"the app needs Gradio, an optional dependency: {INSTALL}")


def choices(restorer: Restorer) -> list[str]:
    """The degradation menu: ``auto`` first when the weights carry a classifier, then every name they know."""
    return (["auto"] if restorer.classifier is not None else []) + list(restorer.names)


def table(results: list[PhotoResult]) -> list[list[str]]:
    """The results table's rows, one per photo, in the order of ``COLUMNS``."""
    return [[
        r.name,
        r.degradation,
        "" if r.confidence is None else f"{r.confidence:.2f}",
        r.note,
        r.tiles,
        r.output.name if r.ok else r.error,
    ] for r in results]


def outputs(results: list[PhotoResult], status: str) -> tuple:
    """What the button sets: the (before, after, name) of each restored photo, the table's rows,
    the downloads, the compare menu, the slider (the first restored photo) and the status line."""
    done = [r for r in results if r.ok]
    names = [r.output.name for r in done]
    return (
        [(str(r.before), str(r.output), r.output.name) for r in done],
        table(results),
        [str(r.output) for r in done] or None,
        gr.Dropdown(choices=names, value=names[0] if names else None),
        (str(done[0].before), str(done[0].output)) if done else None,
        status,
    )


def build_app(restorer: Restorer, workdir: Path) -> "gr.Blocks":
    """The page: uploads, degradation menu, button, results table, before/after slider, downloads.

    Parameters
    ----------
    restorer : Restorer
        The loaded model; its tile size and memory budget decide the tiling, as in ``restore``.
    workdir : Path
        A folder for the results; each press of the button writes into a new sub-folder and
        removes the previous ones (Gradio serves its own copies of their files).

    Returns
    -------
    gr.Blocks
        Not started: [`serve`][dfpir.app.ui.serve] starts it.
    """
    require_gradio()
    menu = choices(restorer)

    def restore(files: list[str] | None, spec: str, progress=gr.Progress()) -> tuple:
        """The button: restore every upload; never raises for a bad photo (its row says why)."""
        if not files:
            return outputs([], "Upload one or more photos first.")
        start = time.perf_counter()
        for old in workdir.glob("batch-*"):  # Gradio copied the last batch's files into its cache
            shutil.rmtree(old, ignore_errors=True)
        outdir = Path(tempfile.mkdtemp(prefix="batch-", dir=workdir))
        try:
            results = restore_photos(restorer, [Path(f) for f in files], spec, outdir,
                                     progress=lambda fraction, text: progress(fraction, desc=text))
        except UserError as exc:  # a degradation these weights cannot use (the menu offers none, the API might)
            return outputs([], f"Error: {exc}")
        for r in results:
            if not r.ok:
                gr.Warning(r.error)
        return outputs(results, summary(results, time.perf_counter() - start))

    def compare(pairs: list[tuple[str, str, str]], name: str | None) -> tuple[str, str] | None:
        """The slider's photo, chosen by its output name."""
        return next(((before, after) for before, after, shown in pairs if shown == name), None)

    with gr.Blocks(title="DFPIR: restore photos", analytics_enabled=False,
                   delete_cache=(CACHE_HOURS * 3600, CACHE_HOURS * 3600)) as app:
        gr.Markdown(INTRO)
        pairs = gr.State([])  # (before, after, name) of each restored photo of the last batch
        with gr.Row():
            with gr.Column(scale=2):
                files = gr.File(label="Photos", file_count="multiple", file_types=["image"], type="filepath")
                spec = gr.Dropdown(menu, value=menu[0], label="Degradation", info=(
                    "auto: the classifier picks per photo (its confidence is in the table)" if "auto" in menu
                    else "of every photo (these weights have no classifier for auto)"))
                button = gr.Button("Restore", variant="primary")
                status = gr.Textbox(label="Status", interactive=False, lines=2)
            with gr.Column(scale=3):
                shown = gr.Dropdown([], label="Compare", info="which restored photo the slider shows")
                slider = gr.ImageSlider(label="Before | after", type="filepath", format="png", interactive=False,
                                        buttons=["fullscreen"], max_height=800)
        results = gr.Dataframe(headers=COLUMNS, label="Results", interactive=False, wrap=True)
        downloads = gr.File(label="Restored PNGs (download)", file_count="multiple", interactive=False)
        button.click(restore, [files, spec], [pairs, results, downloads, shown, slider, status], api_name="restore")
        shown.input(compare, [pairs, shown], slider, api_name="compare")
    return app


def serve(app: "gr.Blocks", port: int | None = None, block: bool = True) -> str:
    """Start ``app`` on ``127.0.0.1`` (never a share link) and return its address.

    Parameters
    ----------
    app : gr.Blocks
        From [`build_app`][dfpir.app.ui.build_app].
    port : int, optional
        The port; the first free one from 7860 when omitted.
    block : bool
        Serve until Ctrl+C (the command); ``False`` returns at once, serving on in a thread (tests).

    Raises
    ------
    UserError
        When the port is taken or not allowed.
    """
    require_gradio()
    app.queue(default_concurrency_limit=1)  # one restoration at a time: they share the model and the cores
    try:
        _, url, _ = app.launch(
            server_name=HOST, server_port=port, share=False, inbrowser=False, prevent_thread_lock=True,
            quiet=True, show_error=False, ssr_mode=False, mcp_server=False, enable_monitoring=False, pwa=False,
            footer_links=["settings"],
        )
    except OSError:  # Gradio's message names its own environment variable and launch(): not ours
        if port is None:
            raise UserError(f"no free port on {HOST} from 7860 to 7959; choose one with --port") from None
        raise UserError(f"cannot serve on {HOST}:{port} (in use, or not allowed); choose another --port, "
                        "or leave it out for the first free one from 7860") from None
    if block:
        print(f"The app runs at {url} (only this computer can reach it); press Ctrl+C to stop.", flush=True)
        app.block_thread()
    return url
