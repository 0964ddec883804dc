"""A local web app, ``python -m dfpir.app``: upload photos, pick a degradation or ``auto``, compare
before and after, download the results. Gradio is an optional dependency: ``pip install 'dfpir[app]'``.

- [`restoration`][dfpir.app.restoration]: the work behind the button, without any web library:
  each upload read, restored by a [`Restorer`][dfpir.inference.runner.Restorer] (tiled as in
  ``restore``) and written as PNG; a photo that fails gets a one-line error;
- [`ui`][dfpir.app.ui]: the page ([`build_app`][dfpir.app.ui.build_app]) and its server on
  127.0.0.1 ([`serve`][dfpir.app.ui.serve]);
- [`cli`][dfpir.app.cli]: ``python -m dfpir.app``.
"""

from .cli import build_parser, main
from .restoration import PhotoResult, restore_photo, restore_photos, unique_stems
from .ui import build_app, choices, serve

__all__ = ["build_parser", "main", "PhotoResult", "restore_photo", "restore_photos", "unique_stems",
           "build_app", "choices", "serve"]
