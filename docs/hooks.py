"""MkDocs hooks for the dfpir site (listed under ``hooks:`` in ``mkdocs.yml``).

Four jobs, all offline:

1. **Tutorials.** The notebooks live in ``notebooks/`` (jupytext percent ``.py`` files), outside
   ``docs/``. :func:`on_config` appends each one to the "Tutorials" section of the nav and
   :func:`on_files` adds it to the site as ``notebooks/NAME.py`` before mkdocs-jupyter renders it.
2. **Real source code.** A line ``<!-- source: reference.layernorm.layer_norm -->`` in a page is
   replaced by that function's (or class's, or method's) current source code, read from the
   repository with :mod:`ast`, docstring left out. A name that does not exist fails the build, so
   the side-by-side listings on the oracle page can never drift from the code.
3. **Maths.** ``pymdownx.arithmatex`` (generic mode) marks ``$...$`` and ``$$...$$``;
   :func:`on_page_content` converts them to MathML with ``latex2mathml`` at build time, which every
   current browser renders natively: no JavaScript, no CDN.
4. **The gallery.** ``docs/assets/gallery.png`` is made by ``python -m dfpir.demo``. While it is
   missing, a placeholder saying so is served in memory (never written to disk), so the strict
   build still checks every other link.
"""

from __future__ import annotations

import ast
import html
import io
import logging
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.dfpir")
ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
GALLERY = "assets/gallery.png"


# --------------------------------------------------------------------------- tutorials


def notebooks() -> list[Path]:
    """The tutorial notebooks (the jupytext ``.py`` sources), in file-name order.

    An ``.ipynb`` made from one of them (``jupytext --to notebook``) is a copy, not another
    tutorial, so it is neither listed nor rendered.
    """
    if not NOTEBOOKS.is_dir():
        return []
    return sorted(p for p in NOTEBOOKS.iterdir() if p.suffix == ".py" and not p.name.startswith((".", "_")))


def notebook_title(path: Path) -> str:
    """The first Markdown heading of a jupytext percent file, else a title made from the name."""
    if path.suffix == ".py":
        for line in path.read_text(encoding="utf-8").splitlines():
            m = re.match(r"#\s*#\s+(.+)", line)
            if m:
                return m.group(1).strip()
    return re.sub(r"^\d+[_-]", "", path.stem).replace("_", " ").capitalize()


def on_config(config):
    """Append every notebook to the nav's "Tutorials" section."""
    for entry in config["nav"]:
        if isinstance(entry, dict) and "Tutorials" in entry:
            section = entry["Tutorials"]
            section += [{notebook_title(p): f"notebooks/{p.name}"} for p in notebooks()]
            break
    else:
        raise PluginError("mkdocs.yml: the nav has no 'Tutorials' section for the notebooks")
    return config


@event_priority(100)  # before mkdocs-jupyter (priority 0) wraps the notebook files
def on_files(files, config):
    """Add ``notebooks/*`` to the site, and a placeholder gallery while it is missing."""
    for path in notebooks():
        # a real File rooted at the repository (mkdocs-jupyter cannot wrap File.generated ones)
        files.append(File(f"notebooks/{path.name}", src_dir=str(ROOT), dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    if files.get_file_from_path(GALLERY) is None:
        log.info("%s is missing (run `python -m dfpir.demo` and copy its gallery.png): serving a placeholder", GALLERY)
        files.append(File.generated(config, GALLERY, content=_placeholder_png()))
    return files


def _placeholder_png() -> bytes:
    """A small grey PNG that says the gallery has not been generated yet."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (640, 80), (235, 235, 235))
    ImageDraw.Draw(image).text((16, 32), "gallery.png not generated yet: run `python -m dfpir.demo`", fill=(60, 60, 60))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------- source listings

SOURCE_MARKER = re.compile(r"^([ \t]*)<!-- source: ([\w.]+) -->[ \t]*$", re.MULTILINE)


def _defines(node: ast.AST, name: str) -> bool:
    """Whether a statement defines ``name``: a def, a class or an assignment to it."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return node.name == name
    if isinstance(node, ast.Assign):
        return any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
    if isinstance(node, ast.AnnAssign):
        return isinstance(node.target, ast.Name) and node.target.id == name
    return False


def find_source(dotted: str) -> tuple[str, str, int, int]:
    """``(text, relative file, first line, last line)`` of a definition or a module-level assignment.

    ``dotted`` is ``package.module.name[.name...]`` (e.g. ``dfpir.model.dgpb.DGPB.forward``). The
    listing starts at the first decorator and leaves the docstring out.
    """
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        path = ROOT.joinpath(*parts[:cut]).with_suffix(".py")
        if path.is_file():
            break
    else:
        raise PluginError(f"source listing {dotted!r}: no module file for it under {ROOT}")
    source = path.read_text(encoding="utf-8")
    node: ast.AST = ast.parse(source)
    for name in parts[cut:]:
        matches = [n for n in getattr(node, "body", []) if _defines(n, name)]
        if not matches:
            raise PluginError(f"source listing {dotted!r}: {name!r} is not defined in {path.relative_to(ROOT)}")
        node = matches[0]
    lines = source.splitlines()
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    last = node.end_lineno
    skip: set[int] = set()
    body = getattr(node, "body", [])
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        skip = set(range(body[0].lineno, body[0].end_lineno + 1))
    kept = [lines[i - 1] for i in range(first, last + 1) if i not in skip]
    return "\n".join(kept), str(path.relative_to(ROOT)), first, last


def _listing(match: re.Match) -> str:
    indent, dotted = match.group(1), match.group(2)
    text, rel, first, last = find_source(dotted)
    fence = [f'```python title="{rel}, lines {first}-{last}"', *text.splitlines(), "```"]
    return "\n".join(indent + line if line else line for line in fence)


def on_page_markdown(markdown, page, config, files):
    """Expand ``<!-- api: PACKAGE -->`` and ``<!-- source: NAME -->`` lines."""
    markdown = API_MARKER.sub(_api, markdown)
    return SOURCE_MARKER.sub(_listing, markdown)


# --------------------------------------------------------------------------- API pages

API_MARKER = re.compile(r"^<!-- api: ([\w.]+) -->[ \t]*$", re.MULTILINE)
# Modules in reading order (the model first, the tools after); modules not listed follow in
# alphabetical order, so a new module is documented without touching the docs. A page documents
# one package's own modules; its sub-packages have pages of their own.
API_ORDER = {
    "dfpir": ["checkpoint", "official", "convert", "restore", "evaluate", "images", "metrics", "demo", "summary",
              "errors", "files", "progress"],
    "dfpir.model": ["config", "network", "dgpb", "perturbation", "masked_attention", "attention", "feedforward",
                    "layernorm", "transformer", "prompts", "classifier", "fused"],
    "dfpir.degradations": ["registry", "synthetic"],
    "dfpir.inference": ["runner", "tiling", "speed"],
    "dfpir.data": ["photos", "patches", "datasets", "layouts", "checker", "pairs", "bench", "cli"],
    "dfpir.train": ["loop", "config", "sampling", "state", "precision", "preflight", "interrupts"],
    "dfpir.analysis": ["interference", "ablations", "orders", "plots", "blur_bound", "cli"],
    "dfpir.bench": ["suites", "layouts", "restore", "reference"],
    "dfpir.study": ["arms", "grid", "runner", "measure", "stats", "report", "cli"],
    "reference": ["network", "dgpb", "perturbation", "masked_attention", "attention", "feedforward", "layernorm",
                  "transformer", "conv", "pixel_shuffle", "activations", "margins"],
}


def public_modules(package: str) -> list[str]:
    """``package``'s public modules (files not starting with ``_``), in :data:`API_ORDER` order."""
    folder = ROOT.joinpath(*package.split("."))
    names = sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))
    order = API_ORDER.get(package, [])
    return [n for n in order if n in names] + [n for n in names if n not in order]


def _api(match: re.Match) -> str:
    package = match.group(1)
    if not ROOT.joinpath(*package.split("."), "__init__.py").is_file():
        raise PluginError(f"API marker: no package {package!r}")
    blocks = [f"::: {package}\n    options:\n      members: false\n      show_source: false\n"]
    blocks += [f"::: {package}.{name}\n" for name in public_modules(package)]
    return "\n".join(blocks)


# --------------------------------------------------------------------------- maths

_MATH = re.compile(r'<(span|div) class="arithmatex">(.*?)</\1>', re.DOTALL)


def _mathml(match: re.Match) -> str:
    from latex2mathml.converter import convert

    tag, body = match.group(1), html.unescape(match.group(2)).strip()
    for left, right in ((r"\(", r"\)"), (r"\[", r"\]"), ("$$", "$$"), ("$", "$")):
        if body.startswith(left) and body.endswith(right):
            body = body[len(left):-len(right)]
            break
    try:
        return f'<{tag} class="arithmatex">{convert(body, display="block" if tag == "div" else "inline")}</{tag}>'
    except Exception as exc:  # a formula latex2mathml cannot read must fail the build, not vanish
        raise PluginError(f"cannot convert the formula {body!r} to MathML: {exc}") from exc


def on_page_content(html_text, page, config, files):
    """Turn arithmatex's LaTeX into MathML (when ``latex2mathml`` is installed)."""
    try:
        import latex2mathml  # noqa: F401
    except ImportError:
        log.info("latex2mathml is not installed: formulas are left as LaTeX text")
        return html_text
    return _MATH.sub(_mathml, html_text)
