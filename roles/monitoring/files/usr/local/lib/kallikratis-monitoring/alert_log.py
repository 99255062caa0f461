#!/usr/bin/python3
"""The alert log receiver: Alertmanager's webhook target that keeps the alert history.

usage: alert_log.py --port PORT --log FILE [--max-body BYTES] [--address 127.0.0.1]

Every POSTed notification (a JSON object) is appended as one JSON line to FILE, with the time it
arrived ("received_at"); a body that is not a JSON object, or larger than --max-body, is refused
(400/413) and nothing is written. Standard library only; one request at a time.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path


def append(log: Path, payload: dict, now: float) -> None:
    """Append PAYLOAD as one line (no newline can hide inside: JSON escapes them)."""
    line = json.dumps({"received_at": round(now, 3), **payload}, ensure_ascii=False)
    with log.open("a", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(line + "\n")
        fh.flush()


def make_handler(log: Path, max_body: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "kallikratis-alert-log"
        timeout = 10  # seconds: a slow client cannot hold the single thread

        def _answer(self, code: int, text: str) -> None:
            body = (text + "\n").encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            healthy = self.path == "/-/healthy"
            self._answer(200 if healthy else 404, "ok" if healthy else "not found")

        def do_POST(self) -> None:  # noqa: N802
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._answer(411, "Content-Length required")
                return
            if length < 0 or length > max_body:
                self.close_connection = True
                self._answer(413, f"body larger than {max_body} bytes")
                return
            try:
                payload = json.loads(self.rfile.read(length).decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                self._answer(400, "not JSON")
                return
            if not isinstance(payload, dict):
                self._answer(400, "not a JSON object")
                return
            append(log, payload, time.time())
            self._answer(200, "logged")

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--max-body", type=int, default=1024 * 1024)
    args = parser.parse_args(argv)
    server = HTTPServer((args.address, args.port), make_handler(args.log, args.max_body))
    server.timeout = 30
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
