"""MTCPPolicy and the loop-factory entry points: new_event_loop, run, install."""
from __future__ import annotations

import asyncio

from .config import MTCPConfig

__all__ = ["MTCPPolicy", "new_event_loop", "loop_factory", "run", "install"]


def _split_worker_options(overrides: dict) -> dict:
    from .program import WORKER_OPTIONS
    return {k: overrides.pop(k) for k in WORKER_OPTIONS if k in overrides}


def new_event_loop(config: MTCPConfig | None = None, *, cores=None, **overrides):
    """A new MTCPLoop configured by ``config``/keyword overrides/MTCP_* environment variables.

    cores=N or "auto" (default None: one loop, no fork): the first such loop made in the main
    thread of a program forks one worker process per core (mtcp_loop/program.py,
    ``program_loop``); each worker gets this call's loop on its own core and queue, the
    original process supervises them and never returns. rundir=, name=, drain_timeout=,
    restart= configure the supervisor as for `mtcp-loop run`. virtual_time=True gives one
    virtual-time loop in this process (mtcp_loop/vtime.py; cores must be None or 1)."""
    opts = _split_worker_options(overrides)
    cfg = MTCPConfig.coerce(config, **overrides)
    if cfg.virtual_time:
        if (cores is not None and cores != 1) or opts:
            raise ValueError("virtual_time runs one loop in one process: cores must be None or 1 "
                             "(worker processes run in real time)")
        from .vtime import virtual_loop_class
        return virtual_loop_class()(config=cfg)
    if cores is not None or opts:
        from . import program
        cores = program.check_cores(cores)
        program.check_worker_options(opts)
        if cores is not None and cores != 1:
            return program.program_loop(cfg, cores, opts)
    from .loop import make_loop_class
    return make_loop_class(cfg.base)(config=cfg)


def loop_factory(config: MTCPConfig | None = None, *, cores=None, **overrides):
    """A zero-argument callable making MTCPLoops (for asyncio.Runner(loop_factory=...),
    asyncio.run(main(), loop_factory=...)); cores=N|"auto" as for new_event_loop."""
    opts = _split_worker_options(overrides)
    cfg = MTCPConfig.coerce(config, **overrides)
    if cores is not None or opts:
        from . import program
        cores = program.check_cores(cores)
        opts = program.check_worker_options(opts)

    def factory():
        return new_event_loop(config=cfg, cores=cores, **opts)

    factory.config = cfg
    factory.cores = cores
    return factory


def run(main, *, debug=None, config: MTCPConfig | None = None, cores=None, **overrides):
    """Like asyncio.run(main) but on a new MTCPLoop. cores=N (or 0/"auto"): one supervised
    worker process per core, each running main() on its own loop (mtcp_loop/workers.py)."""
    if cores is not None and cores != 1:
        vt = overrides.get("virtual_time")
        if vt is None:         # the other overrides may be worker options (rundir...): not coerced
            vt = config.virtual_time if config is not None else MTCPConfig.from_env().virtual_time
        if vt:
            raise ValueError("virtual_time runs one loop in one process: cores must be None or 1 "
                             "(worker processes run in real time)")
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
    """Event loop policy whose loops are MTCPLoops (configured once, at policy creation).

    ``MTCPPolicy(cores=N | "auto")`` (default: one loop in this process): the first event loop
    the program creates in its main thread forks one worker process per core, pre-fork style.
    Each worker is pinned to its core, opens its own queue of the device with its own engine and
    gets that loop, so the unchanged ``asyncio.run(main())`` / ``web.run_app(app)`` runs once per
    core; the original process becomes their supervisor (restart, drain on SIGTERM/SIGINT,
    control sockets for `mtcp-loop stats`) and never returns. See docs/scaling.md."""

    def __init__(self, config: MTCPConfig | None = None, *, cores=None, **overrides):
        super().__init__()
        opts = _split_worker_options(overrides)
        self._mtcp_config = MTCPConfig.coerce(config, **overrides)
        if cores is not None or opts:
            from . import program
            cores = program.check_cores(cores)
            opts = program.check_worker_options(opts)
        self._mtcp_cores = cores
        self._mtcp_worker_options = opts

    @property
    def config(self):
        return self._mtcp_config

    @property
    def cores(self):
        return self._mtcp_cores

    def new_event_loop(self):
        return new_event_loop(config=self._mtcp_config, cores=self._mtcp_cores, **self._mtcp_worker_options)


def install(config: MTCPConfig | None = None, **overrides):
    """asyncio.set_event_loop_policy(MTCPPolicy(...)); returns the policy."""
    policy = MTCPPolicy(config, **overrides)
    asyncio.set_event_loop_policy(policy)
    return policy
