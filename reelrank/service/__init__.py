"""The HTTP service (FastAPI): ``create_app(engine, auth, runtime=...)``; ``server.prepare`` and
``server.run`` assemble and run it for ``reelrank serve``."""

from reelrank.service.app import create_app
from reelrank.service.deps import Authenticator, ensure_service_keys

__all__ = ["Authenticator", "create_app", "ensure_service_keys"]
