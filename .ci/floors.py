"""The lowest versions of the runtime dependencies, as declared in pyproject.toml.

    python3 .ci/floors.py > floors.txt   # pip constraints, one "name==floor" a line
    python .ci/floors.py --check         # fail unless exactly those versions are installed

The floors are written in one place only, pyproject.toml's [project] dependencies; each
dependency must have one ("name>=X"), so none goes untested.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

#: name, optional [extras], then a ">=" floor (further clauses after a comma are allowed).
_FLOOR = re.compile(
    r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*>=\s*([0-9][0-9A-Za-z.!+]*)\s*(?:,.*)?$"
)


def floors() -> list[tuple[str, str]]:
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    found = []
    for requirement in dependencies:
        match = _FLOOR.match(requirement.split(";")[0])
        if match is None:
            raise SystemExit(f"floors.py: no '>=' floor in the dependency {requirement!r}")
        found.append((match[1], match[2]))
    if not found:
        raise SystemExit("floors.py: no dependencies in pyproject.toml")
    return found


def _same_version(a: str, b: str) -> bool:
    """3.11 == 3.11.0, as pip's == compares them."""

    def key(version: str) -> list[str]:
        parts = version.split(".")
        while len(parts) > 1 and parts[-1] == "0":
            parts.pop()
        return parts

    return key(a) == key(b)


def main(argv: list[str]) -> int:
    pins = floors()
    if argv == ["--check"]:
        wrong = []
        for name, floor in pins:
            try:
                installed = metadata.version(name)
            except metadata.PackageNotFoundError:
                installed = "not installed"
            print(f"{name} {installed} (floor {floor})")
            if not _same_version(installed, floor):
                wrong.append(name)
        if wrong:
            print(f"floors.py: not at the floor: {', '.join(wrong)}", file=sys.stderr)
            return 1
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    print("\n".join(f"{name}=={floor}" for name, floor in pins))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
