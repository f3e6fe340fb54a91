"""An aiosmtpd handler that accepts every message and appends one line per
recipient to a file: the UNIX time of receipt and the address. The campaign
load test reads it to count deliveries and time transactional ones.

    PYTHONPATH=tests/peers python3 -m aiosmtpd -n -l 127.0.0.1:PORT -c smtp_recorder.Recorder FILE
"""

import time


class Recorder:
    @classmethod
    def from_cli(cls, parser, *args):
        if len(args) != 1:
            parser.error("smtp_recorder.Recorder takes one argument: the file to append to")
        return cls(args[0])

    def __init__(self, path):
        # Line-buffered: a reader never sees half a line.
        self.out = open(path, "a", buffering=1)

    async def handle_DATA(self, server, session, envelope):
        now = time.time()
        for rcpt in envelope.rcpt_tos:
            self.out.write(f"{now:.6f} {rcpt}\n")
        return "250 2.0.0 Message accepted"
