"""docker/: where its files are and how Compose and the Dockerfiles read."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from tests.helpers.paths import REPO

DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"

_DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")


def interpolate(node: object) -> object:
    """Compose's ``${VAR:-default}`` with every variable unset.

    Like Compose, on the parsed values: ``${X:-26.05}`` stays the string ``"26.05"``.
    """
    if isinstance(node, dict):
        return {key: interpolate(value) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value) for value in node]
    if isinstance(node, str):
        return _DEFAULTED.sub(lambda m: m.group(2), node)
    return node


def dev_tool(name: str) -> str:
    """A console script of the dev dependencies, beside this interpreter or on PATH."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} not found: install the dev dependencies (pip install -e '.[dev]')"
    return found


def dockerfile_args(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", path.read_text(), re.MULTILINE))
