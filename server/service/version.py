"""The installed gradserve version, as the server reports it (KServe ServerMetadata, gradserve_build_info)."""

from __future__ import annotations

import importlib.metadata


def gradserve_version() -> str:
    """The version of the installed distribution; "unknown" in a source tree that was never installed."""
    try:
        return importlib.metadata.version("gradserve")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
