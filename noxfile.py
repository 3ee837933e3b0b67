"""Developer tasks: ``nox`` runs tests, lint and typecheck (what CI runs).

Also bench, ray, browser and fuzz.
"""

from __future__ import annotations

import shutil

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = None  # the interpreter that runs nox
TEST_DEPS = [
    "pytest>=8",
    "hypothesis>=6.100",
    "openai>=1.60",
    "rich>=13",
    "httpx>=0.27",
    "httpx-sse>=0.4",
    # tests/test_typing.py: stream events narrow under both checkers
    "mypy>=1.10",
    "pyright>=1.1.380",
    "fastapi>=0.110",
    "uvicorn>=0.30",
    # tests/test_otel.py: in-memory span exporter and metric reader
    "opentelemetry-sdk>=1.20",
    # tests/test_options.py: a self-signed certificate for the HTTPS-through-a-proxy test
    "cryptography>=42",
]


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite, with the speedups extra (orjson, pybase64) and without it."""
    session.install("-e", ".[speedups,starlette,otel]", *TEST_DEPS)
    session.run("pytest", "-m", "not ray", *session.posargs)
    session.run("pip", "uninstall", "-y", "-q", "orjson", "pybase64")
    session.run("pytest", "-m", "not ray", "-q", "-p", "no:cacheprovider", *session.posargs)


@nox.session(python=PYTHON)
def fuzz(session: nox.Session) -> None:
    """The Hypothesis property tests (marker ``fuzz``) with the long ``nightly`` profile.

    Not a default session (``nox -s fuzz``): thousands of examples per property,
    with the speedups extra and without it. The normal ``tests`` session runs the
    same tests with the bounded ``default`` profile.
    """
    session.install("-e", ".[speedups,starlette]", *TEST_DEPS)
    env = {"HYPOTHESIS_PROFILE": "nightly"}
    args = ("pytest", "-m", "fuzz", "-p", "no:cacheprovider", "--hypothesis-show-statistics")
    session.run(*args, *session.posargs, env=env)
    session.run("pip", "uninstall", "-y", "-q", "orjson", "pybase64")
    session.run(*args, *session.posargs, env=env)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[speedups,cli,starlette,otel]", "mypy>=1.10")
    session.run("mypy", "--strict", "samsar_async")


@nox.session(python=PYTHON)
def ray(session: nox.Session) -> None:
    """The Ray Data integration on a local 2-CPU cluster (the ``ray`` extra)."""
    session.install("-e", ".[ray,speedups]", "pytest>=8", "hypothesis>=6.100")  # collects all tests
    session.run("pytest", "-m", "ray", "-p", "no:cacheprovider", *session.posargs)


@nox.session(python=PYTHON)
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


@nox.session(python=PYTHON)
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
    session.install("-e", ".[starlette]", *TEST_DEPS)
    session.run("pytest", "-m", "browser", "-p", "no:cacheprovider", *session.posargs)
