"""mtcp_loop: an asyncio event loop whose TCP runs on a user-level TCP/IP stack in C.

One line selects it::

    mtcp_loop.run(main())                                   # like asyncio.run
    asyncio.set_event_loop_policy(mtcp_loop.MTCPPolicy())    # existing code unchanged
    asyncio.set_event_loop_policy(mtcp_loop.MTCPPolicy(cores="auto"))   # ... once per core (pre-fork)
    asyncio.Runner(loop_factory=mtcp_loop.new_event_loop)

``MTCPLoop`` (and anything touching the engine) needs the compiled extension; the configuration
helpers work without it.
"""
from .config import ImpairConfig, MTCPConfig, parse_impair
from .policy import MTCPPolicy, install, loop_factory, new_event_loop, run

__version__ = "0.1.0"

__all__ = ["MTCPLoop", "MTCPPolicy", "MTCPConfig", "ImpairConfig", "parse_impair", "new_event_loop",
           "loop_factory", "run", "install", "make_loop_class", "__version__"]


def __getattr__(name):
    if name == "MTCPLoop":
        from .loop import make_loop_class
        return make_loop_class("auto")
    if name in ("make_loop_class", "MTCPServer", "available_bases"):
        from . import loop
        return getattr(loop, name)
    if name in ("MTCPTransport", "PseudoSocket"):
        from . import transports
        return getattr(transports, name)
    raise AttributeError(f"module 'mtcp_loop' has no attribute {name!r}")
