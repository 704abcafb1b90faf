"""MTCPPolicy and the loop-factory entry points: new_event_loop, run, install."""
from __future__ import annotations

import asyncio

from .config import MTCPConfig

__all__ = ["MTCPPolicy", "new_event_loop", "loop_factory", "run", "install"]


def new_event_loop(config: MTCPConfig | None = None, **overrides):
    """A new MTCPLoop configured by ``config``/keyword overrides/MTCP_* environment variables."""
    from .loop import make_loop_class
    cfg = MTCPConfig.coerce(config, **overrides)
    return make_loop_class(cfg.base)(config=cfg)


def loop_factory(config: MTCPConfig | None = None, **overrides):
    """A zero-argument callable making MTCPLoops (for asyncio.Runner(loop_factory=...))."""
    cfg = MTCPConfig.coerce(config, **overrides)

    def factory():
        return new_event_loop(config=cfg)

    factory.config = cfg
    return factory


def run(main, *, debug=None, config: MTCPConfig | None = None, cores=None, **overrides):
    """Like asyncio.run(main) but on a new MTCPLoop. cores=N (or 0/"auto"): one supervised
    worker process per core, each running main() on its own loop (mtcp_loop/workers.py)."""
    if cores is not None and cores != 1:
        from . import workers
        return workers.run(main, cores, config=config, **overrides)
    try:
        # configuration errors surface here, before any loop exists; the coroutine is closed so
        # no "coroutine ... was never awaited" warning follows the error
        factory = loop_factory(config, **overrides)
    except BaseException:
        if asyncio.iscoroutine(main):
            main.close()
        raise
    runner = asyncio.Runner(debug=debug, loop_factory=factory)
    try:
        runner.get_loop()                # a real ring that cannot open fails here
    except BaseException:
        runner.close()
        if asyncio.iscoroutine(main):
            main.close()
        raise
    with runner:
        return runner.run(main)


class MTCPPolicy(asyncio.DefaultEventLoopPolicy):
    """Event loop policy whose loops are MTCPLoops (configured once, at policy creation)."""

    def __init__(self, config: MTCPConfig | None = None, **overrides):
        super().__init__()
        self._mtcp_config = MTCPConfig.coerce(config, **overrides)

    @property
    def config(self):
        return self._mtcp_config

    def new_event_loop(self):
        return new_event_loop(config=self._mtcp_config)


def install(config: MTCPConfig | None = None, **overrides):
    """asyncio.set_event_loop_policy(MTCPPolicy(...)); returns the policy."""
    policy = MTCPPolicy(config, **overrides)
    asyncio.set_event_loop_policy(policy)
    return policy
