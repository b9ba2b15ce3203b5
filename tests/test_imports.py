"""What importing neuroprune costs and needs.

(a) ``neuroprune.core`` (every module below it, found by walking the folder) and
    ``neuroprune.report`` import where torch, keras, jax and tensorflow are unimportable;
(b) ``import neuroprune``, loading the public API and loading the CLI do not import the heavy
    optional libraries (matplotlib, scikit-learn, transformers, scipy, onnx) before they are used;
(c) every deprecated module path of ``neuroprune._moved.MOVED`` imports, warns once and is the
    very module of its new path.

Each check runs in a fresh interpreter (a subprocess), so what this test process has imported
already cannot hide anything. Modules and libraries still being converted are listed below:
they are expected to fail (strictly: one that passes must leave its list).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import neuroprune
from neuroprune._moved import MOVED

SRC = Path(neuroprune.__file__).resolve().parent.parent
FRAMEWORKS = ("torch", "keras", "jax", "tensorflow")
HEAVY = ("matplotlib", "sklearn", "transformers", "scipy", "onnx")

#: what each entry point runs: a bare import, every public name, and the command's start-up
#: (``python -m neuroprune --help``, which must print the usage and exit 0)
ENTRY_POINTS = {
    "import": "import neuroprune",
    "api": "import neuroprune as npr; [getattr(npr, name) for name in npr.__all__]",
    "cli": """
        import contextlib, io, runpy
        sys.argv, out = ["neuroprune", "--help"], io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            runpy.run_module("neuroprune", run_name="__main__", alter_sys=True)
        assert out.getvalue().startswith("usage: neuroprune"), out.getvalue()
        """,
}


def _modules_below(*packages: str) -> list[str]:
    """Every module of ``packages``, found on disk (walking by import would need the modules to import)."""
    names = []
    for package in packages:
        folder = SRC.joinpath(*package.split("."))
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(SRC).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


TORCH_FREE = ["neuroprune", "neuroprune._moved", *_modules_below("neuroprune.core", "neuroprune.report")]

# ----------------------------------------------------------------- the subprocesses (each prints one JSON line)

FRAMEWORK_FREE_CHECK = f"""
import importlib, json, sys, traceback
for name in {FRAMEWORKS!r}:
    sys.modules[name] = None  # `import torch` now raises ImportError
result = {{}}
for module in {TORCH_FREE!r}:
    try:
        importlib.import_module(module)
        result[module] = None
    except Exception as error:
        frames = [f for f in traceback.extract_tb(error.__traceback__) if "neuroprune" in f.filename]
        where = f"{{frames[-1].filename}}:{{frames[-1].lineno}}" if frames else "?"
        result[module] = f"{{type(error).__name__}}: {{error}} (at {{where}})"
print(json.dumps(result))
"""

LIBRARIES_CHECK = """
import json, sys
try:
    {code}
finally:
    print(json.dumps(sorted(name for name in %r if name in sys.modules)))
""" % (HEAVY,)

PARENTS_FIRST = sorted(MOVED.items(), key=lambda item: (item[0].count("."), item[0]))
MOVED_CHECK = f"""
import importlib, json, sys, warnings
result = {{}}
for old, new in {PARENTS_FIRST!r}:  # a parent imported by its child would not warn again
    old, new = "neuroprune." + old, "neuroprune." + new
    counts = []
    for _ in range(2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = importlib.import_module(old)
        counts.append(sum(issubclass(w.category, DeprecationWarning) and str(w.message).startswith(old + " ")
                          for w in caught))
    result[old] = counts + [module is importlib.import_module(new) is sys.modules[old]]
print(json.dumps(result))
"""


def _start(code: str) -> subprocess.Popen:
    """Start ``code`` in a fresh interpreter that sees this checkout."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def _result(process: subprocess.Popen) -> object:
    """The JSON the process printed last (the process must exit 0)."""
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def checks():
    """Every subprocess of this file, started side by side; the fixtures below wait for their own."""
    started = {"framework_free": _start(FRAMEWORK_FREE_CHECK), "moved": _start(MOVED_CHECK)}
    for entry, code in ENTRY_POINTS.items():
        started[entry] = _start(LIBRARIES_CHECK.format(code=textwrap.dedent(code).strip().replace("\n", "\n    ")))
    yield started
    for process in started.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.fixture(scope="module")
def framework_free_imports(checks) -> dict:
    """module -> None if it imported with every framework unimportable, else where it reached for one."""
    return _result(checks["framework_free"])


@pytest.fixture(scope="module")
def loaded_libraries(checks) -> dict:
    """entry point -> the heavy libraries in sys.modules after running it in a fresh interpreter."""
    return {entry: _result(checks[entry]) for entry in ENTRY_POINTS}


@pytest.fixture(scope="module")
def moved_imports(checks) -> dict:
    """old path -> [DeprecationWarnings naming it on the first import, on a second one, same module as new]."""
    return _result(checks["moved"])

# ----------------------------------------------------------------- (a) core and report need no framework


def test_the_walk_finds_the_core() -> None:
    assert {"neuroprune.core.errors", "neuroprune.core.backend", "neuroprune.core.criteria.registry",
            "neuroprune.report.html", "neuroprune.core.loop", "neuroprune.core.statistics"} <= set(TORCH_FREE)


@pytest.mark.parametrize("module", TORCH_FREE)
def test_imports_without_any_framework(module: str, framework_free_imports: dict) -> None:
    problem = framework_free_imports[module]
    assert problem is None, f"{module} needs a framework: {problem}"

# ----------------------------------------------------------------- (b) heavy libraries load when used


@pytest.mark.parametrize("library", HEAVY)
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_heavy_libraries_load_only_when_used(entry: str, library: str, loaded_libraries: dict) -> None:
    loaded = library in loaded_libraries[entry]
    assert not loaded, f"entry point {entry!r} imports {library} before it is used"

# ----------------------------------------------------------------- (c) old import paths keep working


@pytest.mark.parametrize("old", sorted(MOVED))
def test_moved_path_imports_warns_once_and_is_the_new_module(old: str, moved_imports: dict) -> None:
    first, second, same = moved_imports["neuroprune." + old]
    assert (first, second) == (1, 0), f"neuroprune.{old}: {first} warnings on import, {second} on a second import"
    assert same, f"neuroprune.{old} is not the module neuroprune.{MOVED[old]}"
