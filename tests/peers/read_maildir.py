"""Prints the messages of a maildir (aiosmtpd's Mailbox handler) as JSON:
headers, and each text part decoded, so tests compare words, not encodings."""
import json
import mailbox
import sys
from email import policy
from email.parser import BytesParser

messages = []
for key, raw in mailbox.Maildir(sys.argv[1], factory=None, create=False).items():
    message = BytesParser(policy=policy.default).parsebytes(raw.as_bytes())
    parts = {}
    attachments = []
    for part in message.walk():
        if part.is_attachment():
            attachments.append({"filename": part.get_filename(),
                                "content_type": part.get_content_type(),
                                "size": len(part.get_payload(decode=True))})
        if part.get_content_maintype() == "text" and not part.is_attachment():
            parts.setdefault(part.get_content_type(), part.get_content())
    messages.append({
        "headers": {name.lower(): str(value) for name, value in message.items()},
        "text": parts.get("text/plain"),
        "html": parts.get("text/html"),
        "attachments": attachments,
    })
json.dump(messages, sys.stdout)
