"""A stock WSGI application upstream for tokengate's end-to-end tests (Python 3 stdlib only).

It serves on a loopback port and answers every request with 200 and a JSON body describing
what a WSGI (CGI-style) application sees, next to what arrived on the wire:

    {
      "method": "GET",                 # the method as sent in the request line
      "path": "/a%2Fb?x=1",            # the request target as sent
      "request_line": "GET /a%2Fb?x=1 HTTP/1.1",
      "headers": [["x_user_id", "a"], ...],   # every header line, in order, names as sent
      "environ": {"REQUEST_METHOD": ..., "PATH_INFO": ..., "HTTP_X_USER_ID": ..., ...},
      "body": "..."                    # CONTENT_LENGTH bytes of the body (latin-1)
    }

`environ` is every text variable of the WSGI environ that `wsgiref.simple_server` builds
(nothing from the process environment): header names are upper-cased with `-` mapped to
`_` and prefixed `HTTP_`, so `x_user_id` and `x-user-id` both become `HTTP_X_USER_ID`; a
name seen again is appended after a comma (`a,b`), in arrival order; `Content-Type` and
`Content-Length` become CONTENT_TYPE / CONTENT_LENGTH (no HTTP_ variable), and a header
whose mapped name is already a CGI variable (e.g. `path-info`) is dropped. PATH_INFO is the
percent-decoded path (latin-1), QUERY_STRING the raw query.

Usage: wsgi_upstream.py PORT [LIFETIME_SECONDS [HITS_FILE]]
PORT 0 picks a free port; the chosen port is printed on stdout as the first line. The server
exits after LIFETIME_SECONDS (default 900) or as soon as its stdin reaches end of file (the
parent went away). With HITS_FILE, one line is appended (and flushed) there for every
request before it is answered, so a parent can count the requests that reached it.
"""

import json
import os
import socketserver
import sys
import threading
import time
from wsgiref import simple_server

HITS_LOCK = threading.Lock()
HITS_FILE = None


class QuietHandler(simple_server.WSGIRequestHandler):
    """wsgiref's handler, with the raw request kept for the application and no access log."""

    def get_environ(self):
        env = super().get_environ()
        env["testkit.request_line"] = self.requestline
        env["testkit.method"] = self.command
        env["testkit.target"] = self.path
        env["testkit.headers"] = [[k, v] for k, v in self.headers.items()]
        return env

    def log_message(self, format, *args):  # noqa: A002 - wsgiref's signature
        pass


class Server(socketserver.ThreadingMixIn, simple_server.WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


# The WSGI environ starts from a copy of the process environment; keep it out.
simple_server.ServerHandler.os_environ = {}


def app(environ, start_response):
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    view = {
        "method": environ.get("testkit.method", ""),
        "path": environ.get("testkit.target", ""),
        "request_line": environ.get("testkit.request_line", ""),
        "headers": environ.get("testkit.headers", []),
        "environ": {
            k: v
            for k, v in sorted(environ.items())
            if isinstance(v, str) and not k.startswith(("wsgi.", "testkit."))
        },
        "body": body.decode("latin-1"),
    }
    if HITS_FILE is not None:
        with HITS_LOCK:
            with open(HITS_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps([view["method"], view["path"]]) + "\n")
    out = json.dumps(view).encode("ascii")
    start_response(
        "200 OK",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(out))),
            ("X-Wsgi-Upstream", "1"),
        ],
    )
    return [out]


def exit_when_parent_goes():
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        os._exit(0)


def exit_after(seconds):
    time.sleep(seconds)
    os._exit(0)


def main():
    global HITS_FILE
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    lifetime = float(sys.argv[2]) if len(sys.argv) > 2 else 900.0
    HITS_FILE = sys.argv[3] if len(sys.argv) > 3 else None
    server = simple_server.make_server(
        "127.0.0.1", port, app, server_class=Server, handler_class=QuietHandler
    )
    threading.Thread(target=exit_after, args=(lifetime,), daemon=True).start()
    threading.Thread(target=exit_when_parent_goes, daemon=True).start()
    print(server.server_port, flush=True)
    server.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    main()
