"""Delivery of one-time codes: SMS through a webhook, e-mail through SMTP, and the
development outbox when neither is configured. Sending never blocks the IOLoop.

Beside the domain, not inside it: nothing here imports `models`, and the domain reaches
delivery only through the objects `app.py` hands it."""

from .senders import Delivery, Message, SendFailed

__all__ = ["Delivery", "Message", "SendFailed"]
