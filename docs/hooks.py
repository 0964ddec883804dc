"""MkDocs hooks for the dfpir site (listed under ``hooks:`` in ``mkdocs.yml``).

Five jobs, all offline:

1. **Tutorials.** The notebooks live in ``notebooks/`` (jupytext percent ``.py`` files), outside
   ``docs/``. :func:`on_config` appends each one to the "Tutorials" section of the nav and
   :func:`on_files` adds it to the site as ``notebooks/NAME.ipynb``, rendered by mkdocs-jupyter
   *with its outputs* from the executed copy ``build/notebooks/NAME.ipynb``. The test suite writes
   that copy when it runs the notebook (``tests/test_notebooks.py``); a build that finds no copy
   of the source's current text (compared by hash) executes the notebook itself, unless
   ``DFPIR_DOCS_EXECUTE=0``, which shows the code without outputs. Each page offers the
   ``.ipynb`` and the ``.py`` for download.
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
5. **Committed results.** A line ``<!-- include: results/study/default/report/report.md -->`` is
   replaced by that file, its title dropped and its headings one level down, so a page shows the
   report its command wrote, never a copy typed by hand; the plots beside each included report
   are served as ``assets/results/FOLDER/NAME.png`` (``FOLDER``: the report's folder, its path
   under ``results/`` with ``/`` as ``-``). A missing file fails the build.
"""

from __future__ import annotations

import ast
import hashlib
import html
import io
import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path

import jupytext
import nbclient
import nbformat
from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.dfpir")
ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
GALLERY = "assets/gallery.png"


# --------------------------------------------------------------------------- tutorials

EXECUTED = ROOT / "build" / "notebooks"  # executed copies (git-ignored), written by the tests and the build
UNEXECUTED = ROOT / "build" / "unexecuted" / "notebooks"  # converted without running, for DFPIR_DOCS_EXECUTE=0
EXECUTE_ENV = "DFPIR_DOCS_EXECUTE"  # "0": render a notebook that has no executed copy without running it
CELL_TIMEOUT_S = 240
_tutorials: dict[str, bool] = {}  # page src_uri -> shown with its outputs (filled by on_files)


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


def source_hash(path: Path) -> str:
    """SHA-256 of a notebook source's bytes: the key that ties an executed copy to its text."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def executed_copy(path: Path) -> Path | None:
    """``build/notebooks/NAME.ipynb`` if it was executed from ``path``'s *current* text, else None.

    The copy records the hash of the source it ran (``metadata.dfpir.source_sha256``): a copy of
    an older text is never shown for a changed source, however recent its file time.
    """
    copy = EXECUTED / f"{path.stem}.ipynb"
    try:
        recorded = json.loads(copy.read_text(encoding="utf-8"))["metadata"]["dfpir"]["source_sha256"]
    except (OSError, ValueError, KeyError, TypeError):  # missing, half-written or not ours
        return None
    return copy if recorded == source_hash(path) else None


def execute_notebook(path: Path, workdir: Path, timeout: int = CELL_TIMEOUT_S) -> float:
    """Execute the jupytext source ``path`` in ``workdir`` and keep the result as its executed copy.

    Each cell may run ``timeout`` seconds. The copy (``build/notebooks/NAME.ipynb``, outputs and
    figures included, the source's hash in its metadata) is written only when every cell
    succeeded; a failing cell raises nbclient's error and leaves any previous copy alone.
    Returns the wall time in seconds.
    """
    data = path.read_bytes()  # hash exactly the text that runs, even if the file changes meanwhile
    nb = jupytext.reads(data.decode("utf-8"), fmt="py:percent")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    nb.metadata["dfpir"] = {"source": f"notebooks/{path.name}", "source_sha256": hashlib.sha256(data).hexdigest(),
                            "seconds": round(seconds, 1)}
    EXECUTED.mkdir(parents=True, exist_ok=True)
    partial = EXECUTED / f".{path.stem}.ipynb.partial"  # a crash mid-write leaves no copy that parses as ours
    nbformat.write(nb, str(partial))
    os.replace(partial, EXECUTED / f"{path.stem}.ipynb")
    return seconds


def _execute_for_site(path: Path) -> Path:
    """Execute ``path`` during the build; a failing notebook fails the build."""
    log.info("notebooks/%s has no executed copy for its current text: executing it for the site "
             "(%s=0 skips this and shows the code without outputs)", path.name, EXECUTE_ENV)
    with tempfile.TemporaryDirectory() as workdir:  # like the tests: no cell may rely on the checkout
        try:
            seconds = execute_notebook(path, Path(workdir))
        except Exception as exc:  # nbclient raises several kinds; each means the tutorial is broken
            text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # the kernel colours its traceback
            last = (text.splitlines() or [type(exc).__name__])[-1]  # nbclient's message ends "Error: message"
            raise PluginError(f"notebooks/{path.name} failed while executing for the site: {last}") from exc
    copy = EXECUTED / f"{path.stem}.ipynb"
    log.info("notebooks/%s executed in %.0f s; kept as %s", path.name, seconds, os.path.relpath(copy, ROOT))
    return copy


def tutorial_source(path: Path) -> tuple[Path, bool]:
    """The file a tutorial page is rendered from, and whether it carries the outputs.

    The executed copy when one matches the source's text; else the notebook is executed now,
    unless ``DFPIR_DOCS_EXECUTE=0``, in which case the page shows the source converted to a
    notebook without outputs (``build/unexecuted/notebooks/NAME.ipynb``).
    """
    copy = executed_copy(path)
    if copy is None and os.environ.get(EXECUTE_ENV, "1") != "0":
        copy = _execute_for_site(path)
    if copy is not None:
        return copy, True
    log.info("notebooks/%s is shown without outputs (%s=0 and no executed copy for its current text)",
             path.name, EXECUTE_ENV)
    plain = UNEXECUTED / f"{path.stem}.ipynb"
    plain.parent.mkdir(parents=True, exist_ok=True)
    jupytext.write(jupytext.read(path), str(plain), fmt="ipynb")
    return plain, False


def on_config(config):
    """Append every notebook to the nav's "Tutorials" section."""
    for entry in config["nav"]:
        if isinstance(entry, dict) and "Tutorials" in entry:
            section = entry["Tutorials"]
            section += [{notebook_title(p): f"notebooks/{p.stem}.ipynb"} for p in notebooks()]
            break
    else:
        raise PluginError("mkdocs.yml: the nav has no 'Tutorials' section for the notebooks")
    return config


@event_priority(100)  # before mkdocs-jupyter (priority 0) wraps the notebook files
def on_files(files, config):
    """Add each tutorial page and its two downloads, and a placeholder gallery while it is missing.

    ``notebooks/NAME.ipynb`` is the page, rendered by mkdocs-jupyter from the file
    :func:`tutorial_source` picks; ``notebooks/NAME/NAME.ipynb`` (that same file) and
    ``notebooks/NAME/NAME.py`` are the downloads beside the page. The downloads are served from
    memory so that mkdocs-jupyter, which matches files by their path on disk, leaves them alone.
    """
    _tutorials.clear()
    for path in notebooks():
        source, executed = tutorial_source(path)
        page = f"notebooks/{path.stem}.ipynb"
        _tutorials[page] = executed
        # a real File, src_dir/notebooks/NAME.ipynb (both folders of copies end in notebooks/):
        # mkdocs-jupyter's wrapper cannot read a File.generated one (it looks under src_dir)
        files.append(File(page, src_dir=str(source.parent.parent), dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
        files.append(File.generated(config, f"notebooks/{path.stem}/{path.stem}.ipynb", content=source.read_bytes()))
        files.append(File.generated(config, f"notebooks/{path.stem}/{path.name}", content=path.read_bytes()))
    for report in included_reports():
        for png in sorted(report.parent.glob("*.png")):
            files.append(File.generated(config, f"{report_assets(report)}/{png.name}", content=png.read_bytes()))
    if files.get_file_from_path(GALLERY) is None:
        log.info("%s is missing (run `python -m dfpir.demo` and copy its gallery.png): serving a placeholder", GALLERY)
        files.append(File.generated(config, GALLERY, content=_placeholder_png()))
    return files


def _downloads(page, files) -> str:
    """The download line put under a tutorial's title."""
    stem = Path(page.file.src_uri).stem
    link = {ext: files.get_file_from_path(f"notebooks/{stem}/{stem}{ext}").url_relative_to(page.file)
            for ext in (".ipynb", ".py")}
    if _tutorials[page.file.src_uri]:
        notebook = "the notebook with the outputs shown on this page"
    else:
        notebook = "the notebook, not yet executed: this build shows no outputs"
    return (f'<p class="dfpir-downloads">Download: <a href="{link[".ipynb"]}" download>{stem}.ipynb</a> '
            f'({notebook}) · <a href="{link[".py"]}" download>{stem}.py</a> (its jupytext source, as kept '
            f'in the repository)</p>')


def _with_downloads(html_text: str, page, files) -> str:
    """Put the download line after the tutorial's first heading (or first, without one)."""
    end = html_text.find("</h1>")
    cut = end + len("</h1>") if end >= 0 else 0
    return html_text[:cut] + _downloads(page, files) + html_text[cut:]


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
    """Expand ``<!-- api: PACKAGE -->``, ``<!-- source: NAME -->`` and ``<!-- include: FILE -->`` lines."""
    markdown = API_MARKER.sub(_api, markdown)
    markdown = INCLUDE_MARKER.sub(_include, markdown)
    return SOURCE_MARKER.sub(_listing, markdown)


# --------------------------------------------------------------------------- committed results

INCLUDE_MARKER = re.compile(r"^<!-- include: ([\w./-]+\.md) -->[ \t]*$", re.MULTILINE)


def included_reports() -> list[Path]:
    """Every file a page of ``docs/`` includes, in name order."""
    found = {m.group(1) for page in (ROOT / "docs").rglob("*.md") for m in INCLUDE_MARKER.finditer(page.read_text())}
    return [ROOT / rel for rel in sorted(found)]


def report_assets(report: Path) -> str:
    """Where the plots beside ``report`` are served: ``assets/results/FOLDER``."""
    folder = report.parent.resolve().relative_to((ROOT / "results").resolve())
    return f"assets/results/{str(folder).replace('/', '-')}"


def demoted(text: str) -> str:
    """``text`` without its first-level title, every heading outside code one level down."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("# "):
            continue
        out.append("#" + line if not fenced and line.startswith("#") else line)
    return "\n".join(out).strip("\n")


def _include(match: re.Match) -> str:
    rel = match.group(1)
    path = ROOT / rel
    if not rel.startswith("results/") or not path.is_file():
        raise PluginError(f"<!-- include: {rel} -->: no such file under results/ (run the command that writes it)")
    return demoted(path.read_text())


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
    "dfpir.app": ["restoration", "ui", "cli"],
    "dfpir.clip": ["tokenizer", "text_encoder", "weights", "prompts", "cli"],
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
    """Turn arithmatex's LaTeX into MathML (when ``latex2mathml`` is installed); give each
    tutorial its download line."""
    if page.file.src_uri in _tutorials:
        html_text = _with_downloads(html_text, page, files)
    try:
        import latex2mathml  # noqa: F401
    except ImportError:
        log.info("latex2mathml is not installed: formulas are left as LaTeX text")
        return html_text
    return _MATH.sub(_mathml, html_text)
