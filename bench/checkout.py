"""Run a bench step on another checkout (a bench script's `--code DIR`, e.g. a git worktree).

`use(DIR)` puts that checkout's packages ahead of this one's editable install (and drops this
checkout's root from the path, so a package only this side has, such as `cli/`, is not taken
from here); `load(WHAT)` imports a module or attribute by its name after the layering refactor
(issue 15), or by its name before it. As a script it runs that checkout's `leaderboard` CLI:

    .venv/bin/python bench/checkout.py /tmp/before api --port 3999
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Each name after the refactor first, then the one before it ("module:attribute" for an attribute).
NAMES = {
    "cli": ("cli.main:main", "leaderboard.cli:main"),
    "lake": ("leaderboard.stores.lake", "leaderboard.lake"),
    "migrations": ("leaderboard.stores.migrations", "leaderboard.migrations"),
    "postgres_publish": ("leaderboard.stores.postgres_publish", "leaderboard.pg"),
    "redis": ("leaderboard.stores.redis", "leaderboard.cache"),
    "Snapshot": ("leaderboard.standings:Snapshot", "leaderboard.lake:Snapshot"),
}
_code = ROOT


def use(code: str | Path) -> Path:
    """Import from `code` from now on; fails if `leaderboard` still comes from elsewhere."""
    global _code
    _code = Path(code).resolve()
    sys.path[:] = [str(_code)] + [p for p in sys.path if p and Path(p).resolve() != ROOT]
    import leaderboard

    if not Path(leaderboard.__file__).resolve().is_relative_to(_code):
        raise SystemExit(f"leaderboard comes from {leaderboard.__file__}, not from {_code}")
    return _code


def load(what: str) -> object:
    """The first of NAMES[what] that the checkout in use has."""
    for name in NAMES[what]:
        module_name, _, attr = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
                continue  # this checkout has no such module
            raise
        if not Path(module.__file__ or "").resolve().is_relative_to(_code):
            continue
        if not attr:
            return module
        if hasattr(module, attr):
            return getattr(module, attr)
    raise ImportError(f"{_code} has none of {', '.join(NAMES[what])}")


def env(code: str | Path, **extra: str) -> dict[str, str]:
    """The environment for a subprocess of checkout `code` (run it with cwd=code too: `python -m`
    and `-c` put the working directory first on the path)."""
    return {**os.environ, **extra, "PYTHONPATH": str(Path(code).resolve())}


if __name__ == "__main__":
    use(sys.argv[1])
    sys.argv = ["leaderboard", *sys.argv[2:]]
    load("cli")()  # type: ignore[operator]
