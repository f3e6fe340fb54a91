"""An aiosmtpd handler that defers every recipient with a 451, so the SMTP
driver's tests meet a real SMTP 4xx reply.

    PYTHONPATH=tests/peers python3 -m aiosmtpd -n -l 127.0.0.1:PORT -c smtp_tempfail.TempFail
"""


class TempFail:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        return "451 4.3.0 Mailbox busy, try again later"
