"""The adapter plugin API: framework adapters are modules registered under the
entry-point group ``pytconv.adapters`` (pytconv's own torch and tensorflow
adapters, and any third-party package's)."""

from __future__ import annotations


from importlib.metadata import entry_points

GROUP = "pytconv.adapters"


def _entry_points() -> dict:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def adapters() -> list:
    """Names of the adapters installed (whether or not their framework is)."""
    return sorted(_entry_points())


def adapter(name: str):
    """The adapter module registered as ``name`` (e.g. "torch", "tensorflow").

    Raises ValueError naming the installed adapters when there is none of that
    name, and ImportError naming the framework when it is not installed.
    """
    if not isinstance(name, str):
        raise TypeError(f"adapter: name must be a string, got {type(name).__name__}")
    eps = _entry_points()
    if name not in eps:
        raise ValueError(
            f"adapter: no pytconv adapter named {name!r}; installed: "
            f"{', '.join(sorted(eps)) or 'none'} (a package adds one with an entry point in "
            f"the group {GROUP!r})"
        )
    ep = eps[name]
    try:
        return ep.load()
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        raise ImportError(
            f"adapter: the pytconv adapter {name!r} needs {missing!r}, which is not installed "
            f"({exc})"
        ) from exc


