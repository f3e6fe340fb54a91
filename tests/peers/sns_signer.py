#!/usr/bin/env python3
"""What Amazon SNS and a receipt-posting provider do, for Herald's receipt
tests, implemented with `cryptography` and `standardwebhooks` rather than
Herald's own code.

    sns_signer.py --port PORT

At start it makes an RSA key and a self-signed certificate for it, and
serves:

    GET  /cert.pem             the certificate (SNS's SigningCertURL)
    GET  /confirm?...          a SubscribeURL: records the visit, answers 200
    GET  /_peer/log            {"cert_fetches": n, "confirmations": [path, ...]}
    POST /_peer/sign           {"message": {...SNS fields...}, "version": "1"|"2"}
                               -> the message with SignatureVersion, Signature
                               and SigningCertURL set, signed the way SNS does
    POST /_peer/webhook-sign   {"secret": "whsec_...", "id": "...",
                                "timestamp": 123, "body": "..."}
                               -> {"signature": "v1,..."} (Standard Webhooks)
"""

import argparse
import base64
import datetime
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from standardwebhooks.webhooks import Webhook

LOCK = threading.Lock()
LOG = {"cert_fetches": 0, "confirmations": []}

# The fields SNS signs, in order, per message type (AWS documentation,
# "Verifying the signatures of Amazon SNS messages").
NOTIFICATION_FIELDS = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
CONFIRMATION_FIELDS = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]


def certificate():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.test-region.amazonaws.com")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


def string_to_sign(message):
    fields = NOTIFICATION_FIELDS if message["Type"] == "Notification" else CONFIRMATION_FIELDS
    return "".join(f"{name}\n{message[name]}\n" for name in fields if name in message)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    key = None
    pem = None
    port = None

    def log_message(self, *args):
        pass

    def reply(self, status, body, content_type="application/json"):
        payload = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        if self.path == "/cert.pem":
            with LOCK:
                LOG["cert_fetches"] += 1
            self.reply(200, self.pem, "application/x-pem-file")
        elif self.path.startswith("/confirm"):
            with LOCK:
                LOG["confirmations"].append(self.path)
            self.reply(200, "<ConfirmSubscriptionResponse/>", "text/xml")
        elif self.path == "/_peer/log":
            with LOCK:
                self.reply(200, json.dumps(LOG))
        else:
            self.reply(404, "{}")

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        if self.path == "/_peer/sign":
            message = dict(request["message"])
            version = request.get("version", "1")
            digest = hashes.SHA1() if version == "1" else hashes.SHA256()
            message["SignatureVersion"] = version
            message["SigningCertURL"] = request.get(
                "cert_url", f"http://127.0.0.1:{self.port}/cert.pem"
            )
            signature = self.key.sign(string_to_sign(message).encode(), padding.PKCS1v15(), digest)
            message["Signature"] = base64.b64encode(signature).decode()
            self.reply(200, json.dumps(message))
        elif self.path == "/_peer/webhook-sign":
            at = datetime.datetime.fromtimestamp(request["timestamp"], tz=datetime.timezone.utc)
            signature = Webhook(request["secret"]).sign(request["id"], at, request["body"])
            self.reply(200, json.dumps({"signature": signature}))
        else:
            self.reply(404, "{}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    Handler.key, Handler.pem = certificate()
    Handler.port = args.port
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
