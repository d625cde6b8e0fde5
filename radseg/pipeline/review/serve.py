"""``radseg review --serve``: the review folder over HTTP on 127.0.0.1 (the same pages as from disk)."""

from __future__ import annotations

import functools
import logging
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

logger = logging.getLogger(__name__)


class _QuietHandler(SimpleHTTPRequestHandler):
    """Serves files, logging each request at debug level instead of printing it."""

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the name http.server calls
        logger.debug("%s " + format, self.address_string(), *args)


def make_server(folder: str | Path, port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server of ``folder`` on 127.0.0.1 (not started; call ``serve_forever``).

    Args:
        folder: the review folder.
        port: the port; 0 picks a free one (read it from ``server.server_address[1]``).

    Returns:
        The bound server; only this machine can reach it.
    """
    handler = functools.partial(_QuietHandler, directory=str(Path(folder).resolve()))
    return ThreadingHTTPServer(("127.0.0.1", port), handler)
