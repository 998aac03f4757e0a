"""The passkeys page (`/passkeys/`, issue 21): a small page in front of the passkey API,
for a user (sign in with a password or a passkey, add, rename and remove passkeys)
and as the browser-side example for app developers: its script, static/passkeys.js,
makes every call an app would make. The page itself holds no secret and reads nothing
of the caller; the token lives in the tab's sessionStorage and travels in
`Authorization`, as any API client's does.

Served under the console's strict headers (no inline script, no framing). With
passkeys off it answers 404, saying how to turn them on. Not an API route: it is not
in /openapi.json."""

from __future__ import annotations

from typing import Any

from .base import GatehouseHandler
from .console import console_templates, page_headers


class PasskeyPageHandler(GatehouseHandler):
    sheddable = False  # no database: the page renders even in an overload (its calls may not)

    def set_default_headers(self) -> None:
        page_headers(self)

    def compute_etag(self) -> None:
        return None  # no-store: nothing to revalidate

    async def get(self) -> None:
        webauthn = self.config.webauthn
        on = bool(webauthn.webauthn_rp_id and webauthn.webauthn_origins)
        html = self.render_page(on=on, rp_name=webauthn.webauthn_rp_name)
        self.set_status(200 if on else 404)
        self.finish(html)

    def render_page(self, **values: Any) -> str:
        env = console_templates(self.application.settings)
        return env.get_template("passkeys.html").render(static=self.static_url, **values)


def routes() -> list[tuple[str, type]]:
    """Routes beside the API (like the console's): not in /openapi.json."""
    return [(r"/passkeys/?", PasskeyPageHandler)]
