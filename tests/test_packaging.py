"""A wheel of the project carries its migrations and page: installed (not editable) it works."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_installs_with_migrations_and_static_files(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = (tmp_path / "dist").glob("wxcode_pty-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "wxcode_pty/migrations/0001_sessions.sql" in names
    assert (
        "wxcode_pty/static/index.html" in names
        and "wxcode_pty/static/vendor/xterm/xterm.js" in names
    )
    # Every module of the page: a missing one fails only when the browser imports it.
    modules = {f"wxcode_pty/static/{js.name}" for js in (ROOT / "wxcode_pty/static").glob("*.js")}
    assert "wxcode_pty/static/connection.js" in modules and modules <= names, modules - names
    assert "wxcode_pty/py.typed" in names and "wxcode_pty/claude_hook.py" in names
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
    )
    # Run from elsewhere, so that the checkout is not importable: only the installed copy.
    script = (
        "import asyncio, wxcode_pty\n"
        "from wxcode_pty.store import SessionStore\n"
        f"assert wxcode_pty.__file__.startswith({str(target)!r}), wxcode_pty.__file__\n"
        "async def main():\n"
        "    store = await SessionStore.open('db.sqlite')\n"
        "    print(await store.schema_version())\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "1"
