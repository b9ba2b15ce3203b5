"""The documentation runs: code blocks of README.md and docs/*.md, docstring examples, the API page.

Code blocks of one page run in document order, in one temporary folder (so a block may read a
file an earlier block wrote), each ```python block in a fresh namespace. Markers on the line(s)
just before a block:

* ``<!-- doc-test: skip REASON -->``: not run (a ```bash block's ``neuroprune`` command lines are
  still parsed by the real argument parser, so every option shown must exist);
* ``<!-- doc-test: file NAME -->``: the block is written to ``NAME`` instead of being run.

In ```bash blocks, ``neuroprune ...`` runs in-process through ``neuroprune.cli.main.main`` (exit
status 0 expected), ``python examples/NAME.py ...`` runs that example's ``main`` in-process, and
any other ``python ...`` runs in a subprocess; other commands are an error unless the block is
marked skip. Docstring examples of every module run with :mod:`doctest`.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import os
import pkgutil
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import neuroprune
from neuroprune.cli.main import build_parser
from neuroprune.cli.main import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"^\s*<!--\s*doc-test:\s*(skip|file)\b\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^```([\w+-]*)\s*$")


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the first code line
    lang: str
    code: str
    marker: tuple[str, str] | None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def parse_blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, pending, i = [], None, 0
    while i < len(lines):
        marker, fence = MARKER.match(lines[i]), FENCE.match(lines[i])
        if marker:
            pending = (marker.group(1), marker.group(2))
        elif fence:
            end = i + 1
            while end < len(lines) and not lines[end].startswith("```"):
                end += 1
            assert end < len(lines), f"{page.name}:{i + 1}: unclosed code block"
            blocks.append(Block(page, i + 2, fence.group(1), "\n".join(lines[i + 1:end]) + "\n", pending))
            pending, i = None, end
        elif lines[i].strip():
            pending = None  # a marker applies to the block right after it
        i += 1
    return blocks


def shell_commands(code: str) -> list[list[str]]:
    """Logical command lines (backslash continuations joined, comments dropped), split into words."""
    return [words for line in code.replace("\\\n", " ").splitlines() if (words := shlex.split(line, comments=True))]


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"doc_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def check_parses(words: list[str], where: str) -> None:
    """A command line that is not run must still be accepted by the real parser."""
    try:
        build_parser().parse_args(words[1:])
    except SystemExit as exit:
        raise AssertionError(f"{where}: `{shlex.join(words)}` is not accepted by the argument parser") from exit


def run_command(words: list[str], block: Block, cwd: Path) -> None:
    program = words[0]
    if program in ("neuroprune", ".venv/bin/neuroprune"):
        try:
            status = cli_main(words[1:])
        except SystemExit as exit:  # argparse errors
            status = exit.code
        assert status == 0, f"{block.where}: `{shlex.join(words)}` exited with {status}"
    elif program in ("python", "python3", ".venv/bin/python") and len(words) > 1 and words[1].startswith("examples/"):
        load_example(Path(words[1]).stem).main(words[2:])
    elif program in ("python", "python3", ".venv/bin/python"):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        done = subprocess.run([sys.executable, *words[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, f"{block.where}: `{shlex.join(words)}` failed:\n{done.stderr[-3000:]}"
    else:
        raise AssertionError(f"{block.where}: `{program}` cannot run in the docs test; mark the block "
                             "<!-- doc-test: skip REASON --> or use neuroprune / python commands only")


def run_block(block: Block, cwd: Path) -> None:
    if block.marker and block.marker[0] == "file":
        (cwd / block.marker[1]).write_text(block.code, encoding="utf-8")
        return
    skipped = block.marker is not None and block.marker[0] == "skip"
    if block.lang == "python":
        assert not skipped, f"{block.where}: python blocks are always run; make it runnable"
        namespace = {"__name__": "__doc_block__"}
        exec(compile(block.code, block.where, "exec"), namespace)
    elif block.lang in ("bash", "sh", "shell", "console"):
        for words in shell_commands(block.code):
            if skipped:
                if words[0] in ("neuroprune", ".venv/bin/neuroprune"):
                    check_parses(words, block.where)
            else:
                run_command(words, block, cwd)


@pytest.fixture
def doc_folder(tmp_path, monkeypatch):
    """A temporary working folder with examples/ in it, cleaned of the modules it defined afterwards."""
    from neuroprune.core.criteria import registry

    (tmp_path / "examples").symlink_to(EXAMPLES, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    criteria = dict(registry._CRITERIA)
    yield tmp_path
    registry._CRITERIA.clear()
    registry._CRITERIA.update(criteria)  # a page may register a criterion of its own
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_code_blocks_run(page, doc_folder, capsys):
    blocks = parse_blocks(page)
    if page.name == "transformers.md":
        pytest.importorskip("transformers")
    if page.name in ("export.md", "README.md"):
        pytest.importorskip("onnxruntime")
    for block in blocks:
        try:
            run_block(block, doc_folder)
        except Exception as error:
            output = capsys.readouterr()
            raise AssertionError(f"{block.where}: {type(error).__name__}: {error}\n--- stdout\n{output.out[-2000:]}"
                                 f"\n--- stderr\n{output.err[-2000:]}") from error


def test_every_page_has_runnable_code():
    for page in PAGES:
        if page.name in ("index.md", "api.md"):  # a map, and a list checked by the API tests below
            continue
        blocks = parse_blocks(page)
        run = [b for b in blocks if b.lang in ("python", "bash") and not (b.marker and b.marker[0] == "skip")]
        assert run, f"{page.name} has no code block that the docs test runs"


def test_skips_give_a_reason_and_files_a_name():
    for page in PAGES:
        for block in parse_blocks(page):
            if block.marker:
                assert block.marker[1], f"{block.where}: doc-test marker without a reason / file name"


# --------------------------------------------------------------------------- options and names

def _parser_options() -> set[str]:
    options = set()
    parser = build_parser()
    for action in parser._actions:
        for sub in getattr(action, "choices", None) or {}:
            sub_parser = action.choices[sub]
            if hasattr(sub_parser, "_actions"):
                options |= {o for a in sub_parser._actions for o in a.option_strings}
    return options


def _script_options() -> set[str]:
    """Options of the example and benchmark scripts."""
    scripts = [*EXAMPLES.glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
    return {m for path in scripts for m in re.findall(r'add_argument\(\s*"(--[\w-]+)"', path.read_text())}


OTHER_TOOLS = {"--index-url", "--nproc_per_node"}  # pip, in the README's install note; torchrun, in distributed.md


def test_every_option_mentioned_exists():
    known = _parser_options() | _script_options() | OTHER_TOOLS
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        mentioned = set(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", text))
        unknown = sorted(mentioned - known)
        assert not unknown, f"{page.name} mentions options that no command or example has: {unknown}"


def _resolve(dotted: str):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            obj = getattr(obj, attribute)
        return obj
    raise ImportError(dotted)


def test_api_page_lists_only_real_names_and_every_top_level_one():
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    names = re.findall(r"^\| `(neuroprune(?:\.\w+)*)", text, flags=re.M)
    assert len(names) > 80
    for name in names:
        if name.startswith("neuroprune.hf.adapter") or name.startswith("neuroprune.tasks.text"):
            pytest.importorskip("transformers")
        try:
            _resolve(name)
        except (ImportError, AttributeError) as error:
            raise AssertionError(f"docs/api.md lists {name}, which does not exist") from error
    missing = [n for n in neuroprune.__all__ if f"neuroprune.{n}" not in names]
    assert not missing, f"docs/api.md misses {missing}"


def test_api_page_signatures_name_real_parameters():
    """`name(a, b=1, *, c=None)` on the API page: every parameter named there exists."""
    import inspect

    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    has_hf = importlib.util.find_spec("transformers") is not None
    for name, arguments in re.findall(r"^\| `(neuroprune(?:\.\w+)+)\(([^`]*)\)`", text, flags=re.M):
        if name.startswith(("neuroprune.hf.adapter", "neuroprune.tasks.text")) and not has_hf:
            continue
        arguments = re.sub(r"\([^()]*\)", "", arguments)  # tuple defaults such as (0.1, ..., 0.9)
        obj = _resolve(name)
        parameters = inspect.signature(obj).parameters
        accepts_more = any(p.kind == p.VAR_KEYWORD for p in parameters.values())
        for argument in re.split(r",\s*", arguments):
            argument = argument.split("=")[0].strip().lstrip("*")
            if argument and argument not in ("...", "") and not accepts_more:
                assert argument in parameters, f"docs/api.md: {name} has no parameter {argument!r}"


# --------------------------------------------------------------------------- docstring examples

MODULES = sorted(info.name for info in pkgutil.walk_packages(neuroprune.__path__, "neuroprune."))
SLOW_MODULES = {
    "neuroprune.tasks.text": "its examples parse numpy's and the standard library's sources (~7 s)",
}
HF_MODULES = {"neuroprune.hf.adapter", "neuroprune.hf.families", "neuroprune.torch.recover.distill",
              "neuroprune.torch.layers.hf_conv1d"}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    if name in SLOW_MODULES:
        pytest.skip(f"slow: {SLOW_MODULES[name]}")
    if name in HF_MODULES:
        pytest.importorskip("transformers")
    if name.startswith("neuroprune.keras") and importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed (pip install neuroprune[keras])")
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    failed, report = [], []
    for test in finder.find(module, name):
        if runner.run(test, out=report.append).failed:
            failed.append(test.name)
    assert not failed, f"doctest failures in {failed}:\n" + "".join(report)[-4000:]
