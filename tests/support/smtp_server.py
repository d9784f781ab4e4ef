"""A real SMTP server for the email tests (aiosmtpd): STARTTLS with the given certificate, AUTH
(PLAIN/LOGIN, only after STARTTLS) against one user, every accepted message written to
<dir>/<n>.eml. While <dir>/refuse exists, DATA is answered `451 4.3.0 Try again later`.

usage: smtp_server.py PORT DIR CERT KEY USER PASSWORD
Prints "ready" once it listens; stops on SIGTERM.
"""
import asyncio
import os
import signal
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, directory, cert, key, user, password = sys.argv[1:7]


class Handler:
    def __init__(self):
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        if os.path.exists(os.path.join(directory, "refuse")):
            return "451 4.3.0 Try again later"
        self.count += 1
        path = os.path.join(directory, f"{self.count}.eml")
        with open(path + ".tmp", "wb") as f:
            f.write(b"X-Envelope-From: " + envelope.mail_from.encode() + b"\r\n")
            f.write(b"X-Envelope-To: " + ",".join(envelope.rcpt_tos).encode() + b"\r\n")
            f.write(b"X-Was-TLS: " + (b"yes" if session.ssl else b"no") + b"\r\n")
            f.write(b"X-Authenticated: " + str(session.authenticated).encode() + b"\r\n")
            f.write(envelope.original_content)
        os.rename(path + ".tmp", path)
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user and auth_data.password.decode() == password
    return AuthResult(success=ok)


context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
controller = Controller(
    Handler(),
    hostname="127.0.0.1",
    port=int(port),
    tls_context=context,
    require_starttls=True,
    authenticator=authenticator,
    auth_required=True,
    auth_require_tls=True,
)
controller.start()
print("ready", flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
controller.stop()
