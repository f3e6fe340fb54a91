#!/usr/bin/env python3
"""A loopback stand-in for an ntfy server's publish API, for Herald's tests
(no ntfy server is packaged for this machine).

    ntfy_receiver.py --port PORT [--token tk_...]

`POST` or `PUT /<topic>` reads the message like ntfy does (body = message,
X-Title / X-Priority / X-Tags / X-Click headers or their short aliases,
RFC 2047 encoded words decoded) and answers ntfy's JSON message. With
--token, a request without credentials gets 403 and a wrong token 401, with
ntfy's error JSON. Control paths:

    GET  /_peer/requests  every accepted publish, oldest first, as JSON
    POST /_peer/respond   a JSON list of answers for the next publishes, each
                          {"status": 500, "headers": {...}, "body": "..."}
"""

import argparse
import json
import re
import secrets
import threading
import time
from email.header import decode_header, make_header
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
RECORDS = []
ANSWERS = []
TOPIC = re.compile(r"^/([-_A-Za-z0-9]{1,64})$")
PRIORITIES = {
    "1": 1, "min": 1,
    "2": 2, "low": 2,
    "3": 3, "default": 3,
    "4": 4, "high": 4,
    "5": 5, "max": 5, "urgent": 5,
}


def error_body(code, http, error):
    return json.dumps({"code": code, "http": http, "error": error}) + "\n"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    token = None

    def log_message(self, *args):
        pass

    def reply(self, status, headers, body):
        payload = body.encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def param(self, *names):
        """The first header set among `names`, decoded like ntfy does."""
        for name in names:
            value = self.headers.get(name)
            if value is not None:
                return str(make_header(decode_header(value)))
        return ""

    def do_GET(self):
        if self.path == "/_peer/requests":
            with LOCK:
                listing = json.dumps(RECORDS)
            self.reply(200, {"Content-Type": "application/json"}, listing)
        else:
            self.reply(404, {}, error_body(40401, 404, "page not found"))

    def do_PUT(self):
        self.do_POST()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/_peer/respond":
            with LOCK:
                ANSWERS.extend(json.loads(body))
            self.reply(204, {}, "")
            return
        json_type = {"Content-Type": "application/json"}
        topic = TOPIC.match(self.path)
        if not topic:
            self.reply(404, json_type, error_body(40401, 404, "page not found"))
            return
        if self.token is not None:
            authorization = self.headers.get("Authorization")
            if authorization is None:
                self.reply(403, json_type, error_body(40301, 403, "forbidden"))
                return
            if authorization != f"Bearer {self.token}":
                self.reply(401, json_type, error_body(40101, 401, "unauthorized"))
                return
        priority_text = self.param("x-priority", "priority", "prio", "p").lower()
        if priority_text and priority_text not in PRIORITIES:
            self.reply(400, json_type, error_body(40007, 400, "invalid priority"))
            return
        message = {
            "id": secrets.token_hex(6),
            "time": int(time.time()),
            "expires": int(time.time()) + 43200,
            "event": "message",
            "topic": topic.group(1),
            "message": body.decode("utf-8") or "triggered",
        }
        title = self.param("x-title", "title", "t")
        tags = [t.strip() for t in self.param("x-tags", "tags", "tag", "ta").split(",") if t.strip()]
        click = self.param("x-click", "click")
        if title:
            message["title"] = title
        if priority_text:
            message["priority"] = PRIORITIES[priority_text]
        if tags:
            message["tags"] = tags
        if click:
            message["click"] = click
        with LOCK:
            answer = ANSWERS.pop(0) if ANSWERS else None
            if answer is None:
                RECORDS.append(
                    {
                        "message": message,
                        "headers": {name.lower(): value for name, value in self.headers.items()},
                    }
                )
        if answer is None:
            self.reply(200, json_type, json.dumps(message) + "\n")
        else:
            self.reply(answer["status"], answer.get("headers", {}), answer.get("body", ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token")
    args = parser.parse_args()
    Handler.token = args.token
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
