"""Watchkeeper's background side: config, ledger, git history, data, watchers, executors and CLI."""

import sys

__version__ = "0.1.0"


def _import_sqlite_utils_without_pandas() -> None:
    """Import sqlite-utils without letting it import pandas (when some other package installed
    it): the ledger is never handed pandas values, and the import costs every command about
    0.3 s. A later `import pandas` in the process works as usual."""
    if "sqlite_utils" in sys.modules or "pandas" in sys.modules:
        return
    sys.modules["pandas"] = None  # type: ignore[assignment]
    try:
        import sqlite_utils  # noqa: F401
    except ImportError:
        pass
    finally:
        del sys.modules["pandas"]


_import_sqlite_utils_without_pandas()
