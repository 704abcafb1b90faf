"""The policy form of per-core workers: MTCPPolicy(cores=N) / new_event_loop(cores=N) /
loop_factory(cores=N) (mtcp_loop/policy.py). The program's first such loop, made in the main
thread, forks one worker process per core through the same Supervisor as `mtcp-loop run`
(mtcp_loop/workers.py); the original process supervises and leaves with SystemExit, each worker
returns from program_loop with its loop. Where forking is not safe (other threads, a
sub-interpreter, pytest, a multiprocessing child) the call makes one plain loop."""
from __future__ import annotations

import asyncio
import importlib
import os
import signal
import sys

__all__ = ["WORKER_OPTIONS", "check_cores", "check_worker_options", "fork_refusal", "program_loop"]

WORKER_OPTIONS = ("rundir", "name", "drain_timeout", "restart")
_supervised = False                  # this process was (is) a policy-form supervisor


def check_cores(cores):
    """None/1 (one loop, no fork), N >= 1, 0 or "auto" (every CPU of the affinity mask)."""
    if cores is None or cores == "auto":
        return cores
    if isinstance(cores, bool) or not isinstance(cores, (int, str)):
        raise TypeError(f"cores must be an int >= 1, 0 or 'auto', got {cores!r}")
    try:
        n = int(cores)
    except ValueError:
        raise ValueError(f"cores must be an int >= 1, 0 or 'auto', got {cores!r}") from None
    if n < 0:
        raise ValueError(f"cores must be an int >= 1, 0 or 'auto', got {cores!r}")
    return n


def check_worker_options(opts: dict) -> dict:
    for k in opts:
        if k not in WORKER_OPTIONS:
            raise TypeError(f"unknown worker option {k!r}")
    dt = opts.get("drain_timeout")
    if dt is not None and (isinstance(dt, bool) or not isinstance(dt, (int, float)) or dt < 0):
        raise ValueError(f"drain_timeout must be a number >= 0, got {dt!r}")
    for k in ("rundir", "name"):
        if opts.get(k) is not None and not isinstance(opts[k], str):
            raise TypeError(f"{k} must be a str, got {opts[k]!r}")
    return {k: v for k, v in opts.items() if v is not None}


def _main_interpreter() -> bool:
    for mod in ("_interpreters", "_xxsubinterpreters"):
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        try:
            cur, main = m.get_current(), m.get_main()
        except Exception:            # noqa: BLE001
            return True
        cur = cur[0] if isinstance(cur, tuple) else cur
        main = main[0] if isinstance(main, tuple) else main
        return cur == main
    return True


def fork_refusal():
    """Why a cores > 1 loop made here stays a single in-process loop (None: it may fork). Only
    the main thread of the main interpreter forks, never inside a pytest run (a test suite
    importing an application module that sets the policy keeps working, one loop per test) and
    never in a multiprocessing child (spawn re-imports the main module with its policy line)."""
    import threading
    if threading.current_thread() is not threading.main_thread():
        return "not the main thread"
    if not _main_interpreter():
        return "not the main interpreter"
    if "_pytest" in sys.modules or "mtcp_loop.pytest_plugin" in sys.modules:
        return "running under pytest"
    mp = sys.modules.get("multiprocessing")
    if mp is not None and mp.parent_process() is not None:
        return "a multiprocessing child"    # it re-imported the main module, policy line included
    return None


def _other_threads() -> list:
    import threading
    names = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    try:
        n = len(os.listdir("/proc/self/task"))
    except OSError:
        n = 1 + len(names)
    if n > 1 + len(names):
        names.append(f"{n - 1 - len(names)} thread(s) not started by the threading module")
    return names


def program_loop(config, cores, options=None):
    """The loop of new_event_loop(cores=N) (MTCPPolicy(cores=N), loop_factory(cores=N)).

    In a worker: a loop on the worker's queue, with the control socket and drain handling
    beside the program. Elsewhere, in the main thread of a program (not under pytest): the
    first call forks one worker per core and never returns in the original process, which
    supervises them (restart, drain, stats) and leaves with SystemExit(status) once they are
    done; each worker returns from here with its loop. With one CPU (cores=1, or "auto" on a
    one-CPU mask), in other threads and under pytest: a plain single loop, no fork."""
    global _supervised
    from .policy import new_event_loop
    from . import workers
    options = check_worker_options(dict(options or {}))
    refusal = fork_refusal()
    if workers.in_worker() and refusal is None:      # a worker's main thread: its queue, control socket, drain
        return _attach(workers.worker_loop())
    if cores is None or refusal is not None:
        return new_event_loop(config=config)
    cpus = workers.resolve_cores(cores)
    if len(cpus) == 1:
        return new_event_loop(config=config)
    if _supervised:
        raise RuntimeError("this process was the supervisor of per-core workers; it cannot start them again")
    if asyncio._get_running_loop() is not None:
        raise RuntimeError("an event loop with cores > 1 must be the first loop of the program: it forks one "
                           "worker process per core, which cannot happen while another loop runs")
    others = _other_threads()
    if others:
        raise RuntimeError(f"cannot fork one worker per core: this process already runs other threads "
                           f"({', '.join(others)}); create the event loop (asyncio.run / web.run_app) "
                           "before starting threads, or use cores=1")
    sup = workers.Supervisor(None, cores, config=config, **options)
    res = sup.run()
    if res == workers.CHILD:
        # a failure here (e.g. the device queue cannot be opened) reaches the program as any
        # failing loop factory's would: the worker exits with its traceback and is restarted
        return _attach(workers.worker_loop())
    _supervised = True
    _close_unstarted_coroutines(sys._getframe(1))
    raise SystemExit(res)


def _close_unstarted_coroutines(frame):
    """The supervisor leaves the program: close the coroutines its callers made but never
    started (asyncio.run(main()) made main() before asking for the loop), which would otherwise
    warn "never awaited" in this process while the workers run them."""
    import inspect
    while frame is not None:
        for v in list(frame.f_locals.values()):
            if inspect.iscoroutine(v) and inspect.getcoroutinestate(v) == inspect.CORO_CREATED:
                v.close()
        frame = frame.f_back


def _attach(loop):
    from . import workers
    ctx = workers._CTX
    w = workers._Worker(loop, ctx["queue"], ctx["cpu"], None, None, None, ctx["drain_timeout"], ctx["rundir"])
    w.attach_program()
    loop._mtcp_worker = w
    _once_per_stop(loop)
    return loop


def _once_per_stop(loop):
    """A worker passes the first SIGTERM/SIGINT to the program's own handler and drops the
    repeats: a service manager signalling the whole group and the supervisor forwarding the same
    stop both reach the worker, and a handler that is not idempotent (aiohttp's raises its
    graceful exit each time) would cut its own shutdown short. A worker stuck in shutdown is
    killed by the supervisor after drain_timeout + 3 s."""
    add = loop.add_signal_handler
    fired = []

    def add_signal_handler(sig, callback, *args):
        if sig not in (signal.SIGTERM, signal.SIGINT):
            return add(sig, callback, *args)

        def once(*a):
            if not fired:
                fired.append(sig)
                callback(*a)
        return add(sig, once, *args)

    loop.add_signal_handler = add_signal_handler
