"""The ceiling: the smallest Tornado app answering JSON, on one process (or N, each on
its own SO_REUSEPORT socket like `server.py --processes`), same machine."""

import asyncio
import os
import signal
import sys

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler


class Hello(RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(b'{"status":"ok"}')


async def main(port: int, reuse_port: bool) -> None:
    server = HTTPServer(Application([(r"/", Hello)]))
    server.add_sockets(bind_sockets(port, "127.0.0.1", reuse_port=reuse_port))
    await asyncio.Event().wait()


def stop_children(children: list[int]) -> None:
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    sys.exit(0)


if __name__ == "__main__":
    port, processes = int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1
    children: list[int] = []
    for _ in range(processes - 1):
        pid = os.fork()
        if pid == 0:
            children = []
            break  # a child serves too, until the parent stops it
        children.append(pid)
    if children:
        signal.signal(signal.SIGTERM, lambda *_: stop_children(children))
    asyncio.run(main(port, processes > 1))
