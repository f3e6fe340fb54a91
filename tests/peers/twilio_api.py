#!/usr/bin/env python3
"""A loopback stand-in for Twilio's Messages API, for Herald's tests, and a
signer of status callbacks with the official `twilio` library's
RequestValidator (not Herald's code).

    twilio_api.py --port PORT --account-sid AC... --auth-token TOKEN

`POST /2010-04-01/Accounts/{sid}/Messages.json` checks HTTP Basic auth
(401 with Twilio's error 20003 otherwise) and the form (To, Body, and
exactly one of From and MessagingServiceSid: 400 with 21604 or 21603), and
answers 201 with a message resource whose `sid` is new. Some `To` numbers
answer as Twilio does for them (its test numbers where they exist):

    +15005550001  400, error 21211 (invalid 'To' number)
    +15005550004  400, error 21610 (unsubscribed recipient)
    +15005550500  500, error 20500 (internal error)

Control paths:

    GET  /_peer/requests  every Messages request, oldest first, as JSON
                          ({"path", "authorized", "form", "status", "sid"})
    POST /_peer/sign      {"url": ..., "params": {...}} -> {"signature": ...},
                          RequestValidator(auth_token).compute_signature
"""

import argparse
import base64
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

from twilio.request_validator import RequestValidator

LOCK = threading.Lock()
RECORDS = []

SCRIPTED = {
    "+15005550001": (400, 21211, "The 'To' number +15005550001 is not a valid phone number."),
    "+15005550004": (400, 21610, "Attempt to send to unsubscribed recipient"),
    "+15005550500": (500, 20500, "Internal Server Error"),
}


def error_body(status, code, message):
    return json.dumps({
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    })


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    account_sid = None
    auth_token = None

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        payload = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        if self.path == "/_peer/requests":
            with LOCK:
                listing = json.dumps(RECORDS)
            self.reply(200, listing)
        else:
            self.reply(404, error_body(404, 20404, "The requested resource was not found"))

    def authorized(self):
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except Exception:
            return False
        return user == self.account_sid and password == self.auth_token

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/_peer/sign":
            request = json.loads(body)
            validator = RequestValidator(self.auth_token)
            signature = validator.compute_signature(request["url"], request["params"])
            if isinstance(signature, bytes):
                signature = signature.decode()
            self.reply(200, json.dumps({"signature": signature}))
            return
        expected = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        form = dict(parse_qsl(body.decode(), keep_blank_values=True))
        record = {
            "path": self.path,
            "authorized": self.authorized(),
            "content_type": self.headers.get("Content-Type"),
            "notification_id": self.headers.get("X-Herald-Notification-Id"),
            "form": form,
            "sid": None,
        }
        status, answer = self.answer(expected, record, form)
        record["status"] = status
        with LOCK:
            RECORDS.append(record)
        self.reply(status, answer)

    def answer(self, expected, record, form):
        if self.path != expected:
            return 404, error_body(404, 20404, "The requested resource was not found")
        if not record["authorized"]:
            return 401, error_body(401, 20003, "Authenticate")
        if not form.get("To"):
            return 400, error_body(400, 21604, "A 'To' phone number is required.")
        if not form.get("Body"):
            return 400, error_body(400, 21602, "Message body is required.")
        if ("From" in form) == ("MessagingServiceSid" in form):
            return 400, error_body(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required")
        if form["To"] in SCRIPTED:
            status, code, message = SCRIPTED[form["To"]]
            return status, error_body(status, code, message)
        sid = "SM" + secrets.token_hex(16)
        record["sid"] = sid
        return 201, json.dumps({
            "sid": sid,
            "account_sid": self.account_sid,
            "to": form["To"],
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "body": form["Body"],
            "status": "queued",
            "num_segments": "1",
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "uri": f"{expected[:-5]}/{sid}.json",
        })


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--account-sid", required=True)
    parser.add_argument("--auth-token", required=True)
    args = parser.parse_args()
    Handler.account_sid = args.account_sid
    Handler.auth_token = args.auth_token
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
