"""An SMTP server for the `smtp` output's tests (aiosmtpd): STARTTLS and AUTH required, each
accepted e-mail written as JSON (envelope, headers, bodies, attachments) into a directory.
Recipients starting with `reject` are refused for good (550); those starting with `later` are
refused for now (451) the first time they are named, then accepted.

    python smtp_server.py PORT OUT_DIR CERT KEY USER PASSWORD
"""

import base64
import email
import json
import os
import sys
import threading
import warnings
from email import policy

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
import ssl

# aiosmtpd warns about its own use of a deprecated attribute on every login.
warnings.simplefilter("ignore")
port, out_dir, cert, key, user, password = sys.argv[1:7]
port = int(port)
os.makedirs(out_dir, exist_ok=True)
asked_later = set()
count = 0
lock = threading.Lock()


class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("reject"):
            return "550 5.1.1 no such mailbox"
        if address.startswith("later") and address not in asked_later:
            asked_later.add(address)
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        global count
        msg = email.message_from_bytes(envelope.content, policy=policy.default)
        text = html = None
        attachments = []
        for part in msg.walk():
            if part.is_multipart():
                continue
            if part.get_content_disposition() == "attachment":
                attachments.append({
                    "filename": part.get_filename(),
                    "content_type": part.get_content_type(),
                    "content_b64": base64.b64encode(part.get_payload(decode=True)).decode(),
                })
            elif part.get_content_type() == "text/plain" and text is None:
                text = part.get_content()
            elif part.get_content_type() == "text/html" and html is None:
                html = part.get_content()
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "from": str(msg["From"]),
            "to": str(msg["To"]),
            "cc": str(msg["Cc"]) if msg["Cc"] else None,
            "bcc_header": msg["Bcc"] is not None,
            "subject": str(msg["Subject"]),
            "text": text,
            "html": html,
            "attachments": attachments,
            "tls": session.ssl is not None,
        }
        with lock:
            count += 1
            name = os.path.join(out_dir, f"{count:04}.json")
        with open(name + ".tmp", "w") as f:
            json.dump(record, f)
        os.rename(name + ".tmp", name)
        return "250 2.0.0 accepted"


def authenticate(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login.decode() == user
        and auth_data.password.decode() == password
    )
    # handled=False: the server answers a failure with 535 itself.
    return AuthResult(success=ok, handled=False)


context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
controller = Controller(
    Handler(),
    hostname="127.0.0.1",
    port=port,
    tls_context=context,
    require_starttls=True,
    authenticator=authenticate,
    auth_required=True,
)
controller.start()
threading.Event().wait()
