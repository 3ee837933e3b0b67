"""``import samsar_async`` loads only what a plain ``complete()`` needs (issue 13).

Each check runs in a fresh interpreter (``sys.modules`` of the test process
already holds everything), started from this checkout.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

import samsar_async
from samsar_async.testing import MockSamsarServer

REPO_ROOT = Path(__file__).resolve().parent.parent

LAZY_MODULES = (
    "cattrs",
    "tenacity",
    "anyio._backends",
    "samsar_async.batch",
    "samsar_async.conversation",
    "samsar_async.events",
    "samsar_async.hooks",
    "samsar_async.images",
    "samsar_async.requests_file",
    "samsar_async.sse",
    "samsar_async.streaming",
    "samsar_async.sync",
    "samsar_async._imagebody",
)
"""Modules (and packages) that ``import samsar_async`` and a successful call do not load."""

_REPORT = (
    "import json, sys; "
    "print(json.dumps(sorted(m for m in sys.modules if m.startswith({prefixes!r}))))"
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMSAR_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


async def _loaded_after(code: str, env: dict[str, str]) -> list[str]:
    """Run ``code`` in a fresh interpreter; the LAZY_MODULES it left loaded."""
    script = code + "\n" + _REPORT.format(prefixes=LAZY_MODULES)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    loaded: list[str] = json.loads(out.decode().splitlines()[-1])
    return loaded


@pytest.mark.anyio
async def test_import_loads_no_rare_path_module() -> None:
    loaded = await _loaded_after("import samsar_async", _env())
    assert loaded == []


@pytest.mark.anyio
async def test_a_successful_complete_loads_no_rare_path_module(server: MockSamsarServer) -> None:
    session = server.create_session()
    code = (
        "import asyncio, os\n"
        "from samsar_async import AsyncSamsar\n"
        "async def main():\n"
        "    async with AsyncSamsar(os.environ['SAMSAR_API_KEY'],"
        " base_url=os.environ['SAMSAR_BASE_URL']) as c:\n"
        "        r = await c.assistant.complete(os.environ['SESSION'], 'hi')\n"
        "        assert r.output_text\n"
        "asyncio.run(main())"
    )
    env = _env(SAMSAR_API_KEY=server.api_key, SAMSAR_BASE_URL=server.url, SESSION=session)
    # anyio's asyncio backend is loaded by the client at run time (not by the import).
    assert [m for m in await _loaded_after(code, env) if not m.startswith("anyio.")] == []


@pytest.mark.anyio
async def test_lazy_names_resolve_on_first_access() -> None:
    code = (
        "import sys, samsar_async\n"
        "assert 'samsar_async.sync' not in sys.modules\n"
        "from samsar_async import Samsar, StreamEvent, BatchRun, Conversation\n"
        "from samsar_async.sync import Samsar as S\n"
        "assert Samsar is S and 'Samsar' in vars(samsar_async)\n"
    )
    loaded = await _loaded_after(code, _env())
    assert {"samsar_async.sync", "samsar_async.events", "samsar_async.batch"} <= set(loaded)
    assert "tenacity" not in loaded


@pytest.mark.anyio
async def test_the_converter_is_built_on_first_use(server: MockSamsarServer) -> None:
    """cattrs is imported by the first read of ``output``, not by the call, and the
    hooks it generates then serve every later response."""
    session = server.create_session()
    code = (
        "import asyncio, os, sys\n"
        "from samsar_async import AsyncSamsar, OutputMessage, Usage\n"
        "from samsar_async import converter as conv\n"
        "async def main():\n"
        "    async with AsyncSamsar(os.environ['SAMSAR_API_KEY'],"
        " base_url=os.environ['SAMSAR_BASE_URL']) as c:\n"
        "        r = await c.assistant.complete(os.environ['SESSION'], 'hi')\n"
        "        assert 'cattrs' not in sys.modules and conv._converter is None\n"
        "        assert isinstance(r.output[0], OutputMessage)\n"
        "        built = conv.get_converter()\n"
        "        assert conv.converter is built and 'cattrs' in sys.modules\n"
        "        r2 = await c.assistant.complete(os.environ['SESSION'], 'again')\n"
        "        assert isinstance(r2.usage, Usage) and r2.output[0].content[0].text\n"
        "        assert conv.get_converter() is built\n"
        "asyncio.run(main())"
    )
    env = _env(SAMSAR_API_KEY=server.api_key, SAMSAR_BASE_URL=server.url, SESSION=session)
    assert "cattrs" in await _loaded_after(code, env)


def test_every_public_name_resolves() -> None:
    for name in samsar_async.__all__:
        assert getattr(samsar_async, name) is not None, name
    assert set(samsar_async.__all__) <= set(dir(samsar_async))
    with pytest.raises(AttributeError, match="no_such_name"):
        samsar_async.no_such_name  # noqa: B018


def test_deprecated_alias_of_a_lazy_name_warns_and_resolves() -> None:
    from samsar_async.conversation import Conversation

    with pytest.warns(DeprecationWarning, match="renamed Conversation"):
        assert samsar_async.Session is Conversation  # type: ignore[attr-defined]
