"""The documentation site: it builds strictly, every public object has a docstring, and every
command shown on it works.

Command convention (stated on the site, ``docs/guide/commands.md``): every ```` ```bash ```` block
in ``docs/`` is preceded by a marker line,

* ``<!-- cmd: run -->``: each command is executed as written, in an empty scratch folder, and
  must exit 0 (only commands that finish in seconds on a CPU);
* ``<!-- cmd: parse -->``: the command needs data, weights, a GPU or hours, so it is not run; it
  is parsed by the tool's *own* argument parser (every flag, choice and type checked; for
  ``dfpir.train`` the ``section.key=value`` overrides are also resolved), ``torchrun`` options by
  torch's parser, ``make`` lines are dry-run with ``make -n``, ``pytest`` paths must exist.

A ```` ```python ```` block marked ``<!-- cmd: run -->`` is executed. Inline code spans that start
with ``python -m dfpir.`` must name a real module and only options its parser knows.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import os
import pkgutil
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.notebook_runs import load_hooks

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent
PACKAGES = ("dfpir", "reference")

FENCE = re.compile(r"^(\s*)```(\w*)")
MARKER = re.compile(r"<!--\s*cmd:\s*(\w+)\s*-->")
INLINE = re.compile(r"`(python -m dfpir\.[^`]+)`")


# --------------------------------------------------------------------------- reading the pages


@dataclass
class Block:
    """A fenced code block of a page, with the marker line that precedes it (if any)."""

    page: str
    line: int
    language: str
    marker: str | None
    text: str

    @property
    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def code_blocks() -> list[Block]:
    """Every fenced block of every page (indented ones too, e.g. inside tabs)."""
    out = []
    for path in pages():
        lines = path.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            m = FENCE.match(lines[i])
            if not m:
                i += 1
                continue
            indent, language, start = m.group(1), m.group(2), i
            body = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
                i += 1
            previous = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
            marker = MARKER.fullmatch(previous)
            out.append(Block(str(path.relative_to(DOCS)), start + 1, language, marker and marker.group(1), "\n".join(body)))
            i += 1
    return out


def commands(block: Block) -> list[list[str]]:
    """The block's commands as argument lists: continuations joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", block.text)
    return [words for line in joined.splitlines() if (words := shlex.split(line, comments=True))]


BASH = [b for b in code_blocks() if b.language in ("bash", "sh", "shell")]
RUN = [b for b in BASH if b.marker == "run"]
PARSE = [b for b in BASH if b.marker == "parse"]
PYTHON_RUN = [b for b in code_blocks() if b.language == "python" and b.marker == "run"]


def test_every_shell_block_is_marked_and_has_commands():
    bad = [f"{b.where}: marker {b.marker!r}" for b in BASH if b.marker not in ("run", "parse")]
    assert not bad, "shell blocks without <!-- cmd: run --> or <!-- cmd: parse --> before them:\n" + "\n".join(bad)
    empty = [b.where for b in BASH if not commands(b)]
    assert not empty, f"shell blocks with no command: {empty}"
    assert RUN and PARSE, "the site shows no command at all?"


# --------------------------------------------------------------------------- checking commands


class Parsed(BaseException):
    """Raised by the patched ``parse_args``: the command line was accepted (BaseException so
    that no ``except Exception`` in a tool swallows it)."""

    def __init__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace | None):
        super().__init__()
        self.parser, self.namespace = parser, namespace


def parse_with_tool(module: str, argv: list[str], monkeypatch, *, parse: bool = True) -> Parsed:
    """Run ``python -m module argv`` up to its ``parse_args`` call, and stop there."""
    original = argparse.ArgumentParser.parse_args

    def stop(self, args=None, namespace=None):
        raise Parsed(self, original(self, args, namespace) if parse else None)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", stop)
    monkeypatch.setattr(sys, "argv", [module, *argv])
    try:
        with warnings.catch_warnings():
            # the tests imported the module already; runpy says so, then runs it afresh as __main__
            warnings.filterwarnings("ignore", message=".*found in sys.modules", category=RuntimeWarning)
            runpy.run_module(module, run_name="__main__", alter_sys=False)
    except Parsed as done:
        return done
    except SystemExit as exc:
        raise AssertionError(f"python -m {module} {shlex.join(argv)}: rejected by its parser (exit {exc.code})") from None
    finally:
        monkeypatch.undo()
    raise AssertionError(f"python -m {module}: never parsed its command line (no argparse?)")


def split_env(words: list[str]) -> tuple[dict[str, str], list[str]]:
    env = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        key, value = words[0].split("=", 1)
        env[key] = value
        words = words[1:]
    return env, words


def check_python_module(module: str, argv: list[str], monkeypatch) -> None:
    if not module.startswith("dfpir."):
        raise AssertionError(f"python -m {module}: only dfpir's tools (and pytest) may be shown")
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, f"python -m {module}: no such module"
    origin = Path(spec.origin)
    if spec.submodule_search_locations is not None:  # a package: python -m runs its __main__, which calls main()
        assert importlib.util.find_spec(f"{module}.__main__"), f"python -m {module}: a package without __main__"
        origin = Path(sys.modules[importlib.import_module(module).main.__module__].__file__)
    if not re.search(r"\b(ArgumentParser|CommandParser)\(", origin.read_text(encoding="utf-8")):
        # a tool without options: it must be shown without any
        assert not argv, f"python -m {module} takes no arguments, got {argv}"
        assert hasattr(importlib.import_module(module), "main"), f"python -m {module}: no main()"
        return
    done = parse_with_tool(module, argv, monkeypatch)
    if module == "dfpir.train":  # the overrides are checked by the config resolver
        from dfpir.train.config import resolve

        ns = done.namespace
        config = ns.config if ns.config and Path(ns.config).is_file() else None
        resolve(ns.preset, config, ns.overrides)


def check_command(words: list[str], monkeypatch) -> None:
    """Validate one command without running it (the ``parse`` tier)."""
    env, words = split_env(words)
    if words[:2] == ["python", "-m"] and words[2] == "pytest":
        paths = [w.split("::")[0] for w in words[3:] if not w.startswith("-") and ("/" in w or w.endswith(".py"))]
        missing = [p for p in paths if not (ROOT / p).exists()]
        assert not missing, f"{shlex.join(words)}: no such test path {missing}"
    elif words[:2] == ["python", "-m"]:
        check_python_module(words[2], words[3:], monkeypatch)
    elif words[0] == "torchrun":
        from torch.distributed.run import get_args_parser

        args = get_args_parser().parse_args(words[1:])
        assert args.module, f"{shlex.join(words)}: use torchrun -m dfpir.train"
        check_python_module(args.training_script, args.training_script_args, monkeypatch)
    elif words[0] == "make":
        result = subprocess.run(["make", "-n", *words[1:]], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, f"{shlex.join(words)}: make -n failed: {result.stderr.strip()}"
    else:
        raise AssertionError(f"{shlex.join(words)}: not a command kind the docs test knows how to check")


@pytest.mark.parametrize("block", PARSE, ids=lambda b: b.where)
def test_parse_tier_commands_are_accepted_by_their_tools(block, monkeypatch):
    for words in commands(block):
        check_command(words, monkeypatch)


@pytest.mark.parametrize("block", RUN, ids=lambda b: b.where)
def test_run_tier_commands_succeed(block, tmp_path, monkeypatch):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    for words in commands(block):
        extra, rest = split_env(words)
        if rest[0] == "make":  # a make target may take minutes: dry-run it
            check_command(words, monkeypatch)
            continue
        assert rest[:3] in (["python", "-m", rest[2]],) and rest[2].startswith("dfpir."), \
            f"{block.where}: the run tier runs dfpir's tools only, not {shlex.join(words)}"
        result = subprocess.run(rest, cwd=tmp_path, env={**env, **extra}, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{block.where}: `{shlex.join(words)}` exited {result.returncode}:\n{result.stderr[-2000:]}"


@pytest.mark.parametrize("block", PYTHON_RUN, ids=lambda b: b.where)
def test_python_examples_run(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(block.text, block.where, "exec"), {"__name__": "__docs__"})


def test_inline_commands_name_real_modules_and_options(monkeypatch):
    bad = []
    for path in pages():
        for text in INLINE.findall(path.read_text(encoding="utf-8")):
            words = text.replace("[", " ").replace("]", " ").replace("|", " ").split()
            module = words[2]
            if importlib.util.find_spec(module) is None:
                bad.append(f"{path.name}: `{text}`: no module {module}")
                continue
            if not any(w.startswith("-") for w in words[3:]):
                continue
            first = [w for w in words[3:4] if not w.startswith("-")]  # a sub-command may dispatch to its own parser
            parser = parse_with_tool(module, [*first, "--help"], monkeypatch, parse=False).parser
            known = set(parser._option_string_actions)
            for action in parser._actions:  # sub-commands' options count too
                if isinstance(action, argparse._SubParsersAction):
                    for sub in action.choices.values():
                        known |= set(sub._option_string_actions)
            bad += [f"{path.name}: `{text}`: unknown option {w}" for w in words[3:]
                    if w.startswith("-") and w.split("=")[0] not in known]
    assert not bad, "\n".join(bad)


CITED_TEST = re.compile(r"(?:tests/)?(test_\w+\.py)::(test_\w+)")


def test_every_cited_test_exists():
    """The pages name tests as evidence (``test_model.py::test_...``): each must exist."""
    missing = []
    for path in pages():
        for file, name in set(CITED_TEST.findall(path.read_text(encoding="utf-8"))):
            source = ROOT / "tests" / file
            if not source.is_file() or not re.search(rf"^\s*def {name}\(", source.read_text(encoding="utf-8"), re.MULTILINE):
                missing.append(f"{path.relative_to(DOCS)}: {file}::{name}")
    assert not missing, "the docs cite tests that do not exist:\n" + "\n".join(sorted(missing))


# --------------------------------------------------------------------------- docstrings


def public_objects():
    """``(qualified name, object)`` of every public function, class and method of both packages."""
    for package in PACKAGES:
        root = importlib.import_module(package)
        found = pkgutil.walk_packages(root.__path__, prefix=f"{package}.")  # sub-packages too (never a __main__)
        modules = [package] + [m.name for m in found if not any(part.startswith("_") for part in m.name.split("."))]
        for name in modules:
            module = importlib.import_module(name)
            yield name, module
            for attr, obj in vars(module).items():
                if attr.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                    continue
                if getattr(obj, "__module__", None) != name:  # imported from elsewhere
                    continue
                yield f"{name}.{attr}", obj
                if inspect.isclass(obj):
                    for meth, member in vars(obj).items():
                        func = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
                        if not meth.startswith("_") and inspect.isfunction(func):
                            yield f"{name}.{attr}.{meth}", func


def test_every_public_function_class_and_method_has_a_docstring():
    missing = [name for name, obj in public_objects() if not (obj.__doc__ or "").strip()]
    assert not missing, f"{len(missing)} public objects without a docstring (mkdocstrings would render them empty):\n" + "\n".join(missing)


# --------------------------------------------------------------------------- the build


@dataclass
class Site:
    """One strict build of the site, shared by the tests below."""

    folder: Path
    returncode: int
    log: str
    notebooks: dict[str, bytes]  # each tutorial's source as the build read it (the tree may change later)


@pytest.fixture(scope="module")
def site(tmp_path_factory, notebook_runs) -> Site:
    """``mkdocs build --strict`` into a temporary folder, the tutorials rendered with their outputs.

    Each notebook's executed copy comes from ``notebook_runs``: the copy of its current text that
    is already there, else one execution shared with ``test_notebooks.py``. The build itself then
    executes nothing (``DFPIR_DOCS_EXECUTE=0``): a notebook that failed above is shown without
    outputs, and the tutorial test below says so, instead of being run a second time.
    """
    mkdocs = shutil.which("mkdocs", path=str(BIN)) or shutil.which("mkdocs")
    if mkdocs is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[dev]')")
    for path in notebook_runs.hooks.notebooks():
        notebook_runs.refresh(path)
    sources = {path.name: path.read_bytes() for path in notebook_runs.hooks.notebooks()}
    folder = tmp_path_factory.mktemp("site") / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", notebook_runs.hooks.EXECUTE_ENV: "0"}
    result = subprocess.run([mkdocs, "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(folder)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return Site(folder, result.returncode, result.stdout + result.stderr, sources)


def test_site_builds_strictly_and_offline(site):
    assert site.returncode == 0, f"mkdocs build --strict failed:\n{site.log[-4000:]}"
    assert "WARNING" not in site.log, site.log
    remote = []
    for page in site.folder.rglob("*.html"):
        remote += [f"{page.name}: {m}" for m in re.findall(r'<(?:script|link|img)[^>]+(?:src|href)="(https?://[^"]+)"', page.read_text(encoding="utf-8"))]
    assert not remote, "the site loads remote resources:\n" + "\n".join(sorted(set(remote))[:20])
    # Sphinx roles (:class:`X`) are not mkdocstrings syntax: they would print literally, not link
    roles = [f"{page.parent.name}: {m}" for page in (site.folder / "api").rglob("*.html")
             for m in re.findall(r":(?:class|func|mod|meth|data|attr|exc|obj):(?:<code>|`)[^<`]*", page.read_text(encoding="utf-8"))]
    assert not roles, f"{len(roles)} raw Sphinx roles on the API pages, e.g.:\n" + "\n".join(roles[:10])


def test_included_reports_are_the_committed_files_with_their_plots(site, notebook_runs):
    hooks = notebook_runs.hooks
    assert hooks.ROOT / "results/study/default/report/report.md" in hooks.included_reports()
    for source in (hooks.ROOT / "docs").rglob("*.md"):
        rels = hooks.INCLUDE_MARKER.findall(source.read_text())
        if not rels:
            continue
        page = (site.folder / source.relative_to(hooks.ROOT / "docs").with_suffix("") / "index.html").read_text(encoding="utf-8")
        for rel in rels:
            lines = (hooks.ROOT / rel).read_text().splitlines()
            headings = [line.lstrip("#").strip() for line in lines if line.startswith("## ")]
            cells = [line.split("|")[1].strip() for line in lines if line.startswith("| ")][:1]  # a first table's first header
            assert headings or cells, rel
            assert all(html_text(h) in page for h in headings) and all(f">{html_text(c)}</th>" in page for c in cells), rel
            report = hooks.ROOT / rel
            for png in report.parent.glob("*.png"):  # served beside the page, byte for byte
                assert (site.folder / hooks.report_assets(report) / png.name).read_bytes() == png.read_bytes()


def html_text(text: str) -> str:
    """``text`` as it appears in the built HTML (escaped, straight quotes kept)."""
    import html

    return html.escape(text, quote=False)


def test_an_included_report_is_demoted_and_a_missing_one_fails(notebook_runs):
    hooks = notebook_runs.hooks
    assert hooks.demoted("# Title\n\ntext\n## Part\n```\n# not a heading\n```") == "text\n### Part\n```\n# not a heading\n```"
    from mkdocs.exceptions import PluginError

    with pytest.raises(PluginError, match="no such file under results/"):
        hooks.on_page_markdown("<!-- include: results/none/report.md -->", None, None, None)


def test_a_notebook_converted_to_ipynb_is_not_a_second_tutorial(tmp_path, monkeypatch):
    hooks = load_hooks()
    (tmp_path / "01_intro.py").write_text("# %% [markdown]\n# # Intro\n")
    (tmp_path / "01_intro.ipynb").write_text("{}")  # what notebooks/README.md tells a reader to make
    monkeypatch.setattr(hooks, "NOTEBOOKS", tmp_path)
    assert [p.name for p in hooks.notebooks()] == ["01_intro.py"]
    ignored = subprocess.run(["git", "check-ignore", "-q", "notebooks/01_channel_shuffling.ipynb"], cwd=ROOT)
    assert ignored.returncode == 0, "an .ipynb made from a notebook would show as untracked"


# --------------------------------------------------------------------------- the tutorials

INPUT_PROMPT = re.compile(r'<div class="jp-InputPrompt[^"]*">(.*?)</div>', re.DOTALL)
OUTPUT = re.compile(r'<div class="[^"]*\bjp-OutputArea-output\b')
FIGURE = re.compile(r'<img[^>]+src="data:image/png;base64,')


def tutorial_folder(site: Site, path: Path) -> Path:
    """Where the built site keeps a tutorial's page and downloads (a strict build that ends with
    warnings still writes every page, so these tests judge the tutorials whatever else failed)."""
    folder = site.folder / "notebooks" / path.stem
    assert (folder / "index.html").is_file(), f"no page for {path.name}; the build said:\n{site.log[-3000:]}"
    return folder


def test_tutorial_pages_show_their_outputs_and_figures(site, notebook_runs):
    """Each tutorial page is rendered from an executed notebook: every code cell numbered, outputs, figures."""
    problems = []
    for path in notebook_runs.hooks.notebooks():
        page = (tutorial_folder(site, path) / "index.html").read_text(encoding="utf-8")
        prompts = [p for p in INPUT_PROMPT.findall(page) if p.strip()]  # code cells' (Markdown cells' are empty)
        not_run = [p for p in prompts if not re.search(r"\[\d+\]", p)]  # "In [ ]:" instead of "In [3]:"
        outputs, figures = len(OUTPUT.findall(page)), len(FIGURE.findall(page))
        if not prompts or not_run or not outputs or not figures:
            problems.append(f"{path.name}: {len(prompts)} code cells, {len(not_run)} shown unexecuted, "
                            f"{outputs} outputs, {figures} PNG figures")
    assert not problems, "tutorial pages without their outputs (did the notebook fail in test_notebooks.py?):\n" + \
        "\n".join(problems)


def test_each_tutorial_page_offers_its_notebook_and_source_for_download(site, notebook_runs):
    hooks = notebook_runs.hooks
    for path in hooks.notebooks():
        folder = tutorial_folder(site, path)
        page = (folder / "index.html").read_text(encoding="utf-8")
        assert f'href="{path.stem}.ipynb"' in page and f'href="{path.name}"' in page, f"{path.name}: no download links"
        assert (folder / path.name).read_bytes() == site.notebooks[path.name]  # the source as in the repository
        notebook = json.loads((folder / f"{path.stem}.ipynb").read_text(encoding="utf-8"))
        assert notebook["metadata"]["dfpir"]["source_sha256"] == hooks.source_hash(folder / path.name)  # ran that text
        assert any(cell.get("outputs") for cell in notebook["cells"]), f"{path.name}: the download has no outputs"


def test_an_executed_copy_is_shown_only_for_the_text_it_ran(tmp_path, monkeypatch):
    """The build executes a notebook that has no copy, reuses the copy while the text is the same,
    and never shows it once the text changed, even when the copy is the newer file."""
    hooks = load_hooks()
    monkeypatch.setattr(hooks, "EXECUTED", tmp_path / "executed")
    monkeypatch.setattr(hooks, "UNEXECUTED", tmp_path / "unexecuted")
    monkeypatch.delenv(hooks.EXECUTE_ENV, raising=False)
    source = tmp_path / "01_intro.py"
    source.write_text("# %% [markdown]\n# # Intro\n\n# %%\nprint(6 * 7)\n")

    shown, executed = hooks.tutorial_source(source)  # no copy: executed now, at build time
    assert executed and shown == tmp_path / "executed" / "01_intro.ipynb"
    assert "".join(json.loads(shown.read_text())["cells"][1]["outputs"][0]["text"]) == "42\n"

    def no_execution(*args, **kwargs):
        raise AssertionError("executed again although the copy matches the text")

    monkeypatch.setattr(hooks, "execute_notebook", no_execution)
    assert hooks.tutorial_source(source) == (shown, True)  # same text: the copy is reused

    source.write_text(source.read_text().replace("6 * 7", "6 * 9"))
    os.utime(shown, (source.stat().st_mtime + 60,) * 2)  # the copy is newer: its time must not matter
    assert hooks.executed_copy(source) is None
    monkeypatch.setenv(hooks.EXECUTE_ENV, "0")
    shown, executed = hooks.tutorial_source(source)  # changed text, no execution allowed: no outputs
    assert not executed and shown == tmp_path / "unexecuted" / "01_intro.ipynb"
    cells = json.loads(shown.read_text())["cells"]
    assert "6 * 9" in "".join(cells[1]["source"]) and cells[1]["outputs"] == []


def test_a_notebook_that_fails_fails_the_build(tmp_path, monkeypatch):
    hooks = load_hooks()
    monkeypatch.setattr(hooks, "EXECUTED", tmp_path / "executed")
    monkeypatch.delenv(hooks.EXECUTE_ENV, raising=False)
    source = tmp_path / "01_broken.py"
    source.write_text("# %%\nraise ValueError('the tutorial is broken')\n")
    expected = "notebooks/01_broken.py failed while executing for the site: ValueError: the tutorial is broken$"
    with pytest.raises(hooks.PluginError, match=expected):
        hooks.tutorial_source(source)
    assert not (tmp_path / "executed" / "01_broken.ipynb").exists()  # no copy of a failed run
