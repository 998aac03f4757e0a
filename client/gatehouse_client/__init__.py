"""gatehouse-client: verify Gatehouse tokens in an app's own back end, follow the
revocation feed, and call Gatehouse's native and admin APIs.

The core needs PyJWT and httpx only; the framework adapters are submodules
(`gatehouse_client.tornado`, `.fastapi`, `.flask`, `.django`), each installed with its
extra (`pip install gatehouse-client[fastapi]`).
"""

from .client import Account, AdminClient, AdminSession, GatehouseClient, Me, SessionInfo, SessionPage, TokenPair
from .errors import GatehouseError, InvalidToken
from .principal import Principal
from .revocations import RevocationSet, RevocationWatcher
from .verifier import Verifier

__all__ = [
    "Account",
    "AdminClient",
    "AdminSession",
    "GatehouseClient",
    "GatehouseError",
    "InvalidToken",
    "Me",
    "Principal",
    "RevocationSet",
    "RevocationWatcher",
    "SessionInfo",
    "SessionPage",
    "TokenPair",
    "Verifier",
]
__version__ = "0.1.0"
