"""The ceiling: the smallest Tornado app answering JSON, on one process, same machine."""

import asyncio
import sys

from tornado.web import Application, RequestHandler


class Hello(RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(b'{"status":"ok"}')


async def main(port: int) -> None:
    Application([(r"/", Hello)]).listen(port, "127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
