"""An unchanged asyncio program served by tests/workers/test_policy_cores.py: the policy line, then
``asyncio.run(main())`` where main uses ``asyncio.start_server`` (line echo on :8080).

MTCP_TEST_CORES sets the policy's cores (default 2). With MTCP_TEST_OUT="host:port:count:conc"
each worker also opens `count` connections to that kernel server (tests/workers/_workers_app.py)."""
import asyncio
import os
import sys

import mtcp_loop

asyncio.set_event_loop_policy(mtcp_loop.MTCPPolicy(cores=os.environ.get("MTCP_TEST_CORES", "2")))
print(f"PRE-FORK {os.getpid()}", flush=True)          # runs once, in the process that becomes the supervisor


async def handle(reader, writer):
    try:
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(handle, "0.0.0.0", 8080, backlog=4096)
    base = asyncio.get_running_loop()._mtcp_base_name
    print(f"SERVING {os.getpid()} cpus={sorted(os.sched_getaffinity(0))} base={base}", flush=True)
    spec = os.environ.get("MTCP_TEST_OUT")
    if spec:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import _workers_app
        await _workers_app._out(spec)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
    print(f"AFTER-RUN {os.getpid()}", flush=True)       # a worker whose program ended normally
