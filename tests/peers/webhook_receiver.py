#!/usr/bin/env python3
"""A webhook receiver for Herald's tests that checks signatures with the
Standard Webhooks reference library, not Herald's own code.

    webhook_receiver.py --port PORT --secret whsec_...

Every POST (other than the control paths) is recorded with when it came (Unix
seconds), whether its signature verifies, and whether a copy with a changed
body would also verify (it must not). Control paths:

    GET  /_peer/requests  every recorded request, oldest first, as JSON
    POST /_peer/respond   a JSON list of answers for the next requests, each
                          {"status": 500, "headers": {...}, "body": "...",
                           "delay_seconds": 0}; once used up, requests get 204
"""

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

LOCK = threading.Lock()
RECORDS = []
ANSWERS = []


def verify(webhook, body, headers):
    """None when the signature verifies, else why not."""
    try:
        webhook.verify(body, headers)
        return None
    except Exception as error:  # the library also raises ValueError on junk
        return f"{type(error).__name__}: {error}"


def tampered(body):
    """The same JSON object with one value changed, or the body plus a byte."""
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict):
        document["text"] = f"{document.get('text')} (tampered)"
        return json.dumps(document, separators=(",", ":")).encode()
    return body + b" "


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    webhook = None

    def log_message(self, *args):
        pass

    def reply(self, status, headers, body):
        payload = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        if self.path == "/_peer/requests":
            with LOCK:
                listing = json.dumps(RECORDS)
            self.reply(200, {"Content-Type": "application/json"}, listing)
        else:
            self.reply(404, {}, "")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/_peer/respond":
            with LOCK:
                ANSWERS.extend(json.loads(body))
            self.reply(204, {}, "")
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        error = verify(self.webhook, body, headers)
        record = {
            "at": time.time(),
            "path": self.path,
            "headers": headers,
            "body": body.decode("utf-8", "replace"),
            "verified": error is None,
            "error": error,
            "tampered_verified": verify(self.webhook, tampered(body), headers) is None,
        }
        with LOCK:
            RECORDS.append(record)
            answer = ANSWERS.pop(0) if ANSWERS else {"status": 204}
        time.sleep(answer.get("delay_seconds", 0))
        self.reply(answer["status"], answer.get("headers", {}), answer.get("body", ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()
    Handler.webhook = Webhook(args.secret)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
