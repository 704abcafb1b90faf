"""The one module that imports the compiled cffi extension (mtcp_loop._mtcp_cffi).

Everything else imports ``ffi`` and ``lib`` from here. If the extension is missing the ImportError
says how to build it.
"""
import importlib.util

BUILD_HINT = ("build it with `python mtcp_loop/_build.py` (in place, from the repository root) "
              "or `pip install -e .`")


def extension_present() -> bool:
    """True when the compiled extension file exists (whether or not it imports cleanly)."""
    try:
        return importlib.util.find_spec("mtcp_loop._mtcp_cffi") is not None
    except (ImportError, ValueError):
        return False


try:
    from mtcp_loop._mtcp_cffi import ffi, lib  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without a build
    if extension_present():
        raise ImportError(f"mtcp_loop native extension is present but failed to import: {exc}; "
                          f"rebuild it: {BUILD_HINT}") from exc
    raise ImportError(f"mtcp_loop native extension (mtcp_loop._mtcp_cffi) is not built; {BUILD_HINT}") from exc


def errstr(buf) -> str:
    """Decode a char[] error buffer filled by the C side."""
    return ffi.string(buf).decode("utf-8", "replace")
