"""A folder that, first on a path, makes torch, torchvision and onnx2torch unimportable.

Each stand-in package raises ``ModuleNotFoundError`` (as for a package that is not
installed, which is what the CPU install is) and first appends its name to a marker file,
so a test can tell that nothing even tried the import, a ``try: import torch`` included.
"""

from __future__ import annotations

from pathlib import Path

from camdet.cli.extras import TORCH_MODULES

_BLOCKER = """from pathlib import Path

with Path({marker!r}).open("a") as marker:
    marker.write("{name}\\n")
raise ModuleNotFoundError("No module named {name!r} (blocked by the test)", name={name!r})
"""


def no_torch_dir(folder: Path) -> tuple[Path, Path]:
    """``(the folder to put first on sys.path/PYTHONPATH, its marker file)``."""
    marker = folder / "torch-imports.txt"
    for name in TORCH_MODULES:
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "__init__.py").write_text(_BLOCKER.format(marker=str(marker), name=name))
    return folder, marker


def tried_imports(marker: Path) -> list[str]:
    """The blocked modules something tried to import (empty: none)."""
    return marker.read_text().split() if marker.exists() else []
