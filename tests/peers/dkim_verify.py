"""Checks a message's DKIM signature with dkimpy, answering the key lookup
with the record Herald says to publish instead of asking DNS.

    python3 dkim_verify.py MESSAGE_FILE RECORD_NAME RECORD_VALUE

Prints "pass" and exits 0 when the signature verifies; otherwise prints why
and exits 1.
"""

import logging
import sys

import dkim


def main():
    path, name, value = sys.argv[1:4]
    with open(path, "rb") as f:
        message = f.read()
    wanted = name.rstrip(".").encode()

    def dnsfunc(domain, timeout=5):
        asked = domain.rstrip(b".") if isinstance(domain, bytes) else domain.rstrip(".").encode()
        if asked != wanted:
            print(f"looked up {asked!r}, only {wanted!r} is published", file=sys.stderr)
            return None
        return value.encode()

    logger = logging.getLogger("dkim")
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG)
    if dkim.verify(message, logger=logger, dnsfunc=dnsfunc):
        print("pass")
        return 0
    print("fail")
    return 1


if __name__ == "__main__":
    sys.exit(main())
