"""The senders. Each raises `SendFailed` when a message could not be handed over, so
the caller can answer 503 and withdraw the code instead of claiming success. The
messages' templates live beside them, in delivery/templates/."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiosmtplib
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from config import DeliverySettings

log = logging.getLogger("gatehouse.delivery")
TEMPLATES = Path(__file__).resolve().parent / "templates"
Clock = Callable[[], datetime]


class SendFailed(Exception):
    """A message could not be handed over; `message` is safe to show to a client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Message:
    channel: str  # "sms" | "email"
    to: str
    purpose: str
    subject: str
    text: str
    html: str | None = None


class Delivery:
    def __init__(self, config: DeliverySettings, production: bool, db: AsyncDatabase, clock: Clock) -> None:
        self.config = config
        self.production = production
        self.outbox = db.outbox
        self.clock = clock
        self.templates = Environment(
            loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(default=True, default_for_string=True)
        )

    def compose(self, channel: str, to: str, purpose: str, code: str, minutes: int) -> Message:
        what = {
            "login": "log in",
            "reset": "reset your password",
            "verify_phone": "verify your phone number",
            "verify_email": "verify your e-mail address",
        }[purpose]
        # The code comes first: SMS previews and the conformance sink read the first number.
        text = f"{code} is your Gatehouse code to {what}. It expires in {minutes} minutes. Never share it."
        subject = f"Your Gatehouse code to {what}"
        html = None
        if channel == "email":
            html = self.templates.get_template("email/code.html").render(code=code, what=what, minutes=minutes)
        return Message(channel=channel, to=to, purpose=purpose, subject=subject, text=text, html=html)

    def compose_notice(self, channel: str, to: str, what: str) -> Message:
        """A security notice (no code): "your password was changed" and the like."""
        text = f"Your Gatehouse {what}. If this was not you, reset your password now and tell your administrator."
        return Message(channel=channel, to=to, purpose="notice", subject=f"Your Gatehouse {what}", text=text)

    @property
    def configured(self) -> set[str]:
        channels = set()
        if self.config.sms_webhook_url:
            channels.add("sms")
        if self.config.smtp_url:
            channels.add("email")
        return channels

    async def send(self, message: Message) -> None:
        if message.channel in self.configured:
            if message.channel == "sms":
                await self._send_sms(message)
            else:
                await self._send_email(message)
            log.info("sent %s code (%s) to %s", message.channel, message.purpose, mask(message.to))
            return
        if self.production:
            raise SendFailed(f"no {message.channel} sender is configured")
        # Development without a sender: the console's outbox and the log (with the code,
        # which is fine in development and never happens in production).
        now = self.clock()
        await self.outbox.insert_one(
            {
                "at": now,
                "expires_at": now + timedelta(days=7),
                "channel": message.channel,
                "to": message.to,
                "purpose": message.purpose,
                "subject": message.subject,
                "text": message.text,
            }
        )
        log.info("DEV OUTBOX %s to %s: %s", message.channel, message.to, message.text)

    async def outbox_messages(self, limit: int = 100) -> list[dict]:
        """The development outbox, newest first: what would have been sent."""
        return await self.outbox.find().sort("at", DESCENDING).limit(limit).to_list(length=limit)

    async def _send_sms(self, message: Message) -> None:
        headers = {"Content-Type": "application/json"}
        if self.config.sms_webhook_token:
            headers["Authorization"] = f"Bearer {self.config.sms_webhook_token}"
        body = json.dumps({"to": message.to, "body": message.text, "purpose": message.purpose})
        client = AsyncHTTPClient()
        last_error = ""
        for attempt in range(3):  # bounded retry on connection errors and 5xx
            request = HTTPRequest(
                self.config.sms_webhook_url or "",
                method="POST",
                body=body,
                headers=headers,
                connect_timeout=self.config.delivery_timeout,
                request_timeout=self.config.delivery_timeout,
            )
            try:
                response = await client.fetch(request, raise_error=False)
            except (OSError, HTTPClientError) as e:
                last_error = type(e).__name__
            else:
                if 200 <= response.code < 300:
                    return
                last_error = f"HTTP {response.code}"
                if response.code < 500 and response.code != 599:
                    break  # the provider refused this message; retrying will not help
            await asyncio.sleep(0.2 * (attempt + 1))
        log.warning("SMS webhook failed: %s", last_error)
        raise SendFailed("the SMS could not be sent; try again later")

    async def _send_email(self, message: Message) -> None:
        url = urlsplit(self.config.smtp_url or "")
        mail = EmailMessage()
        mail["From"] = self.config.mail_from
        mail["To"] = message.to
        mail["Subject"] = message.subject
        mail.set_content(message.text)
        if message.html:
            mail.add_alternative(message.html, subtype="html")
        implicit_tls = url.scheme == "smtps"
        try:
            await aiosmtplib.send(
                mail,
                hostname=url.hostname or "localhost",
                port=url.port or (465 if implicit_tls else 25),
                username=unquote(url.username) if url.username else None,
                password=unquote(url.password) if url.password else None,
                use_tls=implicit_tls,
                start_tls=None if not implicit_tls else False,  # STARTTLS when the server offers it
                timeout=self.config.delivery_timeout,
            )
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as e:
            log.warning("SMTP delivery failed: %s", type(e).__name__)
            raise SendFailed("the e-mail could not be sent; try again later") from None


def mask(destination: str) -> str:
    """Enough of an address for an operator to recognise, not enough to harvest."""
    if "@" in destination:
        local, _, domain = destination.partition("@")
        return f"{local[:2]}***@{domain}"
    return destination[:-4].rstrip() + "****" if len(destination) > 6 else "****"
