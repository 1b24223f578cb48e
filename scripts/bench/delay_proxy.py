#!/usr/bin/env python3
"""A TCP proxy on loopback that delays every chunk by a fixed time in each
direction, to stand in for a network between the tool and the server.

    delay_proxy.py [--trace FILE] LISTEN TARGET DELAY_MS MAX_SECONDS [PORT_FILE]

Listens on 127.0.0.1:LISTEN (0 = any free port) and forwards each
connection to 127.0.0.1:TARGET. DELAY_MS applies one way, so 1 ms gives a
round trip of 2 ms. Once listening, the port is written to PORT_FILE (or
printed), which callers use as the readiness signal. Exits on SIGTERM or
SIGINT, and after MAX_SECONDS whatever happens, so a forgotten proxy does
not outlive its benchmark.

Each direction has a queue of (due time, chunk): the reader stamps a chunk
when it arrives and the writer sends it once due. Chunks therefore leave in
order, each DELAY_MS after it arrived, and a burst of chunks is not delayed
once per chunk as sleeping before every write would do.

With --trace, every chunk read is also written to FILE as "connection
direction epoch bytes [tag]" (direction c = from the client, s = from the
server), stamped on arrival: a client that waits for each reply sends one
chunk per round trip, so counting them counts its round trips. A client's
chunk is tagged with the PostgreSQL messages it holds, a simple query or
a parse with its first two words (C,S,Q:COMMIT or P:INSERT_INTO,D,S) and
never more of their text, so the reader can tell where a transaction's
statements begin and end."""
import argparse
import asyncio
import os
import selectors
import signal
import time

CHUNK = 64 * 1024


async def reader_side(reader, queue, delay, trace):
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            queue.put_nowait((time.monotonic() + delay, data))
            if trace:
                trace(data)
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


async def pipe(src, dst, delay, trace):
    queue = asyncio.Queue()
    await asyncio.gather(reader_side(src, queue, delay, trace), writer_side(dst, queue))


def tag(data):
    """The PostgreSQL messages a client's chunk holds: their type letters,
    and for a simple query or a parse the first two words of the SQL
    (C,S,Q:COMMIT). Nothing else of their content, passwords included."""
    out, o = [], 0
    while o + 5 <= len(data):
        kind = data[o:o + 1]
        size = int.from_bytes(data[o + 1:o + 5], "big")
        if not kind.isalpha() or size < 4:
            break   # a startup message, or a message split across chunks
        if kind in (b"Q", b"P"):
            body = data[o + 5:o + 1 + size][:200]
            if kind == b"P":   # the statement's name comes first
                body = body.split(b"\0", 1)[-1]
            words = body.split(b"\0", 1)[0].split()[:2]
            out.append(kind.decode() + ":" + "_".join(w.decode("ascii", "replace") for w in words))
        else:
            out.append(kind.decode())
        o += 1 + size
    return " " + ",".join(out) if out else ""


def tracer(out, conn, direction):
    if out is None:
        return None

    def write(data):
        # The file closes at exit, when a last read may still come in.
        if not out.closed:
            t = tag(data) if direction == "c" else ""
            out.write(f"{conn} {direction} {time.time():.6f} {len(data)}{t}\n")
    return write


async def handle(c_reader, c_writer, target, delay, out, conn):
    try:
        s_reader, s_writer = await asyncio.open_connection("127.0.0.1", target)
    except OSError:
        c_writer.close()
        return
    try:
        await asyncio.gather(pipe(c_reader, s_writer, delay, tracer(out, conn, "c")),
                             pipe(s_reader, c_writer, delay, tracer(out, conn, "s")))
    except asyncio.CancelledError:
        # Only at exit, with connections still open: nothing to report.
        pass
    finally:
        for w in (c_writer, s_writer):
            w.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace")
    ap.add_argument("listen", type=int)
    ap.add_argument("target", type=int)
    ap.add_argument("delay_ms", type=float)
    ap.add_argument("max_seconds", type=float)
    ap.add_argument("port_file", nargs="?")
    args = ap.parse_args()
    delay = args.delay_ms / 1000.0

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.call_later(args.max_seconds, stop.set)

    out = open(args.trace, "w") if args.trace else None
    conns = iter(range(1, 1 << 62))
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, args.target, delay, out, next(conns)), "127.0.0.1", args.listen)
    port = server.sockets[0].getsockname()[1]
    if args.port_file:
        # Written whole, then renamed: a reader never sees half a number.
        with open(args.port_file + ".tmp", "w") as f:
            f.write(f"{port}\n")
        os.rename(args.port_file + ".tmp", args.port_file)
    else:
        print(port, flush=True)
    await stop.wait()
    server.close()
    if out:
        out.close()


if __name__ == "__main__":
    # select() takes its timeout in microseconds where epoll and poll round
    # it up to whole milliseconds, which would add up to a millisecond to
    # every delayed chunk; a proxy has only a few sockets to watch.
    with asyncio.Runner(loop_factory=lambda: asyncio.SelectorEventLoop(selectors.SelectSelector())) as runner:
        runner.run(main())
