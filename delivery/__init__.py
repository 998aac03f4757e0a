"""Delivery of one-time codes: SMS through a webhook, e-mail through SMTP, and the
development outbox when neither is configured. Sending never blocks the IOLoop."""

from .senders import Delivery, Message

__all__ = ["Delivery", "Message"]
