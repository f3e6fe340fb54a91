"""An SMTP server (aiosmtpd) that offers AUTH over plaintext and refuses every
login with 535, so the SMTP driver's tests meet a real authentication failure.

    python3 tests/peers/smtp_auth_refusing.py PORT
"""

import asyncio
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Sink
from aiosmtpd.smtp import AuthResult


def refuse(server, session, envelope, mechanism, auth_data):
    return AuthResult(success=False, handled=False)


async def main(port):
    controller = Controller(
        Sink(),
        hostname="127.0.0.1",
        port=port,
        authenticator=refuse,
        auth_require_tls=False,
    )
    controller.start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
