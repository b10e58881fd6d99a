#!/usr/bin/env python3
"""A small HTTP proxy for the image tests: forwards plain-HTTP requests (absolute URLs) and
CONNECT tunnels, and logs each request line to --log, so a test can prove its pulls went
through it. --map NAME=ADDR resolves NAME to ADDR here only: a registry addressed by a name
that resolves nowhere else is reachable only through this proxy.

    http-proxy.py --listen 127.0.0.1:3128 --map registry.invalid=127.0.0.1 --log proxy.log
"""

import argparse
import http.client
import http.server
import select
import socket
import sys
import urllib.parse

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te",
              "trailer", "transfer-encoding", "upgrade"}


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True, help="ADDR:PORT")
    parser.add_argument("--map", action="append", default=[], help="NAME=ADDR")
    parser.add_argument("--log", required=True)
    return parser.parse_args()


ARGS = parse_args()
NAMES = dict(item.split("=", 1) for item in ARGS.map)


def log(line):
    with open(ARGS.log, "a", encoding="utf-8") as out:
        out.write(line + "\n")


def resolve(host):
    return NAMES.get(host, host)


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_):
        pass

    def do_CONNECT(self):
        host, _, port = self.path.rpartition(":")
        log(f"CONNECT {self.path}")
        try:
            upstream = socket.create_connection((resolve(host), int(port)), timeout=10)
        except OSError as error:
            self.send_error(502, f"cannot reach {self.path}: {error}")
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        sockets = [self.connection, upstream]
        while True:
            readable, _, _ = select.select(sockets, [], [], 60)
            if not readable:
                break
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    upstream.close()
                    return
                (upstream if sock is self.connection else self.connection).sendall(data)

    def forward(self):
        url = urllib.parse.urlsplit(self.path)
        if url.scheme != "http" or not url.hostname:
            self.send_error(400, "a proxy request needs an absolute http:// URL")
            return
        log(f"{self.command} {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        path = url.path + (f"?{url.query}" if url.query else "")
        try:
            conn = http.client.HTTPConnection(resolve(url.hostname), url.port or 80, timeout=60)
            conn.request(self.command, path or "/", body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except OSError as error:
            self.send_error(502, f"cannot reach {url.netloc}: {error}")
            return
        self.send_response(response.status, response.reason)
        for key, value in response.getheaders():
            # A HEAD answer keeps the length of what a GET would return (registries answer
            # a manifest HEAD with its size, which containerd needs).
            if key.lower() not in HOP_BY_HOP and (
                    key.lower() != "content-length" or self.command == "HEAD"):
                self.send_header(key, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = forward


def main():
    host, _, port = ARGS.listen.rpartition(":")
    server = http.server.ThreadingHTTPServer((host, int(port)), Proxy)
    print(f"proxy listening on {ARGS.listen}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
