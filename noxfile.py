"""Developer tasks; CI (``.ci/run``) runs exactly what the README's test command runs::

    nox -s tests lint typecheck readme verifytypes lowest ray browser

- ``tests``: the suite on every supported Python, with the ``speedups`` extra and without it;
- ``lowest``: the suite on the lowest versions the package declares (Python 3.10);
- ``lint``: ruff, and import-linter once ``[tool.importlinter]`` is in pyproject.toml;
- ``typecheck``: ``mypy --strict`` on the package;
- ``readme``: every ``python`` block of README.md under ``mypy --strict`` and ``pyright --strict``;
- ``verifytypes``: ``pyright --verifytypes`` must score 100%;
- ``ray``: the Ray Data integration on a local cluster;
- ``bench``: the benchmarks (CI runs ``nox -s bench -- --quick``);
- ``browser``: the example backends in headless Chromium (installs Debian's chromium);
- ``fuzz``: the Hypothesis property tests with many more examples (not in CI).

Environments are made with uv when it is installed (``pip install "nox[uv]"``), with
venv otherwise; ``lowest`` needs uv. Interpreters installed by pyenv are found even
when pyenv's shims do not expose them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import nox

nox.needs_version = ">=2024.10.9"
nox.options.default_venv_backend = "uv|venv"
nox.options.sessions = ["tests", "lint", "typecheck", "readme", "verifytypes", "lowest"]
nox.options.reuse_existing_virtualenvs = True

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]  # every Python the package declares (>=3.10)
LOWEST = PYTHONS[0]
DEFAULT = "3.11"  # sessions that need one interpreter only
ROOT = Path(__file__).parent
PYTEST = ["pytest", "-q", "-p", "no:cacheprovider"]


def _expose_pyenv_interpreters() -> None:
    """Put each ``~/.pyenv/versions/X.Y.Z/bin`` on PATH for a missing ``pythonX.Y``.

    pyenv's shims answer only for the active version; the others are installed
    but hidden. Appended, so that an interpreter already on PATH wins.
    """
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if not root.is_dir():
        return
    extra = []
    for version in PYTHONS:
        candidates = sorted(root.glob(f"{version}.*/bin/python{version}"))
        if candidates:
            extra.append(str(candidates[-1].parent))
    path = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([*extra, path] if extra else [path])


_expose_pyenv_interpreters()


def _run_pytest(session: nox.Session, *args: str) -> None:
    """pytest, where "no test collected" (exit 5) is an error that says so.

    A filter given after ``--`` that selects nothing is not a failure.
    """
    code = session.run(*PYTEST, *args, *session.posargs, success_codes=[0, 5])
    if code == 5 and not session.posargs:
        session.error("pytest collected no tests: the suite did not run")


def _uninstall(session: nox.Session, *packages: str) -> None:
    if session.venv_backend == "uv":
        session.run("uv", "pip", "uninstall", *packages)
    else:
        session.run("python", "-m", "pip", "uninstall", "-y", "-q", *packages)


TESTED_EXTRAS = "speedups,cli,starlette,otel,test"  # what the suite (-m "not ray") needs


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite with the speedups extra (orjson, pybase64) on every Python, and
    without it once, on the oldest (the tests exercise both base64 decoders
    explicitly on every Python; this pass checks the fallbacks when the extra is
    missing). CI time: each pass of the suite costs minutes on two cores.
    """
    session.install("-e", f".[{TESTED_EXTRAS}]")
    _run_pytest(session, "-m", "not ray")
    if session.python == PYTHONS[0]:
        _uninstall(session, "orjson", "pybase64")
        _run_pytest(session, "-m", "not ray")


@nox.session(python=DEFAULT)
def fuzz(session: nox.Session) -> None:
    """The Hypothesis property tests (marker ``fuzz``) with the long ``nightly`` profile.

    Not a default session (``nox -s fuzz``): thousands of examples per property,
    with the speedups extra and without it. The normal ``tests`` session runs the
    same tests with the bounded ``default`` profile.
    """
    session.install("-e", f".[{TESTED_EXTRAS}]")
    env = {"HYPOTHESIS_PROFILE": "nightly"}
    args = ("-m", "fuzz", "--hypothesis-show-statistics")
    session.run(*PYTEST, *args, *session.posargs, env=env)
    _uninstall(session, "orjson", "pybase64")
    session.run(*PYTEST, *args, *session.posargs, env=env)


@nox.session(python=LOWEST, venv_backend="uv")
def lowest(session: nox.Session) -> None:
    """The test suite on the lowest versions pyproject.toml declares (uv's lowest-direct).

    Direct requirements (the package's dependencies and the extras the suite
    uses) resolve to their declared minimums; what they pull in resolves to
    the lowest version allowed. A failure here means a minimum is wrong.
    """
    session.install("--resolution", "lowest-direct", "-e", f".[{TESTED_EXTRAS}]")
    session.run("uv", "pip", "list")
    _run_pytest(session, "-m", "not ray")


@nox.session(python=DEFAULT)
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, and import-linter's layer contract."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    if re.search(r"^\[tool\.importlinter\]", pyproject, re.MULTILINE):
        session.install("-e", ".", "import-linter>=2.1")
        session.run("lint-imports")
    else:
        session.log("import-linter: no [tool.importlinter] contract in pyproject.toml yet")


@nox.session(python=DEFAULT)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[speedups,cli,starlette,otel]", "mypy>=1.10")
    session.run("mypy", "--strict", "samsar_async")


@nox.session(python=DEFAULT)
def readme(session: nox.Session) -> None:
    """Every ``python`` block of README.md under mypy --strict and pyright --strict.

    See tools/check_readme.py for how fragments are completed.
    """
    session.install("-e", f".[ray,{TESTED_EXTRAS}]")  # the blocks' imports, mypy, pyright
    session.run("python", "tools/check_readme.py", *session.posargs)


@nox.session(python=DEFAULT)
def verifytypes(session: nox.Session) -> None:
    """pyright --verifytypes samsar_async --ignoreexternal: the score must be 100%."""
    session.install("-e", ".[starlette]", "pyright>=1.1.380")  # an integration's base class
    report = ROOT / ".nox" / "verifytypes.json"
    with report.open("w", encoding="utf-8") as out:
        session.run(
            "pyright",
            "--verifytypes",
            "samsar_async",
            "--ignoreexternal",
            "--outputjson",
            stdout=out,
            success_codes=[0, 1],
        )
    data = json.loads(report.read_text(encoding="utf-8"))
    completeness = data["typeCompleteness"]
    score = completeness["completenessScore"]
    for symbol in completeness["symbols"]:
        for diagnostic in symbol.get("diagnostics", []):
            if diagnostic.get("severity") == "error":
                session.log(f"{symbol['name']}: {diagnostic['message']}")
    session.log(f"type completeness score: {score:.1%}")
    if score < 1.0:
        session.error("pyright --verifytypes: every public symbol must have a known type")


@nox.session(python=DEFAULT)
def ray(session: nox.Session) -> None:
    """The Ray Data integration on a local 2-CPU cluster (the ``ray`` extra)."""
    session.install("-e", f".[ray,{TESTED_EXTRAS}]")  # collecting imports every test module
    _run_pytest(session, "-m", "ray")


@nox.session(python=DEFAULT)
def bench(session: nox.Session) -> None:
    """All benchmarks (``nox -s bench``); ``nox -s bench -- --quick`` is CI's smoke run.

    Installs the comparison clients (httpx, openai), uvloop and the ray extra.
    Instruction counts need valgrind on the machine (they are skipped with a
    note without it). CI runs the quick mode only so that the scripts cannot
    rot; it never judges numbers.
    """
    session.install(
        "-e",
        ".[speedups,ray]",
        "httpx>=0.27",
        "openai>=1.60",
        "uvloop>=0.19; sys_platform != 'win32'",
    )
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(python=DEFAULT)
def browser(session: nox.Session) -> None:
    """Both example backends end to end in headless Chromium (tests marked ``browser``).

    Installs Debian's ``chromium`` package with apt-get when it is missing (CI runs as root).
    """
    if shutil.which("chromium") is None:
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        session.run("apt-get", "update", "-q", external=True, env=env)
        session.run("apt-get", "install", "-y", "-q", "chromium", external=True, env=env)
    if shutil.which("chromium") is None:
        session.error("chromium is not installed")
    session.install("-e", f".[{TESTED_EXTRAS}]")
    _run_pytest(session, "-m", "browser")
