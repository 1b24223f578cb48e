#!/usr/bin/env python3
"""A TCP proxy on loopback that delays every chunk by a fixed time in each
direction, to stand in for a network between the tool and the server.

    delay_proxy.py LISTEN TARGET DELAY_MS MAX_SECONDS [PORT_FILE]

Listens on 127.0.0.1:LISTEN (0 = any free port) and forwards each
connection to 127.0.0.1:TARGET. DELAY_MS applies one way, so 1 ms gives a
round trip of 2 ms. Once listening, the port is written to PORT_FILE (or
printed), which callers use as the readiness signal. Exits on SIGTERM or
SIGINT, and after MAX_SECONDS whatever happens, so a forgotten proxy does
not outlive its benchmark.

Each direction has a queue of (due time, chunk): the reader stamps a chunk
when it arrives and the writer sends it once due. Chunks therefore leave in
order, each DELAY_MS after it arrived, and a burst of chunks is not delayed
once per chunk as sleeping before every write would do."""
import asyncio
import os
import selectors
import signal
import sys
import time

CHUNK = 64 * 1024


async def reader_side(reader, queue, delay):
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            queue.put_nowait((time.monotonic() + delay, data))
    except (ConnectionError, OSError):
        pass
    # End of stream travels through the queue too: a close must not
    # overtake data still waiting to be sent.
    queue.put_nowait((time.monotonic() + delay, None))


async def writer_side(writer, queue):
    try:
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                if writer.can_write_eof():
                    writer.write_eof()
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass


async def pipe(src, dst, delay):
    queue = asyncio.Queue()
    await asyncio.gather(reader_side(src, queue, delay), writer_side(dst, queue))


async def handle(c_reader, c_writer, target, delay):
    try:
        s_reader, s_writer = await asyncio.open_connection("127.0.0.1", target)
    except OSError:
        c_writer.close()
        return
    try:
        await asyncio.gather(pipe(c_reader, s_writer, delay), pipe(s_reader, c_writer, delay))
    except asyncio.CancelledError:
        # Only at exit, with connections still open: nothing to report.
        pass
    finally:
        for w in (c_writer, s_writer):
            w.close()


async def main():
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__)
    listen, target = int(sys.argv[1]), int(sys.argv[2])
    delay = float(sys.argv[3]) / 1000.0
    lifetime = float(sys.argv[4])
    port_file = sys.argv[5] if len(sys.argv) == 6 else None

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.call_later(lifetime, stop.set)

    server = await asyncio.start_server(
        lambda r, w: handle(r, w, target, delay), "127.0.0.1", listen)
    port = server.sockets[0].getsockname()[1]
    if port_file:
        # Written whole, then renamed: a reader never sees half a number.
        with open(port_file + ".tmp", "w") as f:
            f.write(f"{port}\n")
        os.rename(port_file + ".tmp", port_file)
    else:
        print(port, flush=True)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    # select() takes its timeout in microseconds where epoll and poll round
    # it up to whole milliseconds, which would add up to a millisecond to
    # every delayed chunk; a proxy has only a few sockets to watch.
    with asyncio.Runner(loop_factory=lambda: asyncio.SelectorEventLoop(selectors.SelectSelector())) as runner:
        runner.run(main())
