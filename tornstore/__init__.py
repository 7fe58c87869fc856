"""tornstore: keep the history of Torn City API data in one SQLite file.

The front door for bots and scripts::

    from tornstore import Store

    async with Store.open("torn.db") as store:
        player = await store.player(397229)

The subpackages follow the data: `tornstore.eventstore` (the log), `tornstore.projections` (the tables
derived from it, compaction, queries), `tornstore.cli` (the `tornstore` command) and
`tornstore.migrations` (the schema).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

# In the repository the subpackages sit beside this folder (the design card's layout); installed, they sit
# inside it. From a checkout's root `tornstore` is this folder, installed or not, so let it find them there.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "eventstore" / "__init__.py").is_file():
    __path__.append(str(_checkout))

if TYPE_CHECKING:
    from .projections.store import Store

__all__ = ["Store", "__version__"]


def __getattr__(name: str) -> Any:
    # `Store` and `__version__` are made on first use, so `python -m tornstore --help` and the CLI start
    # light (importlib.metadata alone costs a CLI run about 25 ms).
    if name == "Store":
        from .projections.store import Store
        return Store
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version
        try:
            value = version("tornstore")
        except PackageNotFoundError:  # imported from a source tree that was never installed
            value = "0+unknown"
        globals()["__version__"] = value
        return value
    raise AttributeError(f"module 'tornstore' has no attribute {name!r}")

