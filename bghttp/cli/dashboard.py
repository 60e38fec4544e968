"""``bghttp dashboard``: serve the web dashboard (``bghttp[dashboard]``: Starlette, uvicorn, Jinja2).

The framework is imported only here, inside the command, and only once it is
known to be installed: ``import bghttp`` and the worker never load it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from ..config import ConfigError, Settings
from ..errors import StoreError
from .input import UsageError


def add_command(add: Callable[[str, str], argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``dashboard`` with the CLI's parser (``add`` is ``build_parser``'s helper)."""
    dashboard = add(
        "dashboard",
        "serve the web dashboard (needs bghttp[dashboard]); actions only with BGHTTP_DASHBOARD_SECRET or --secret-file",
    )
    dashboard.add_argument("--host", default="127.0.0.1", metavar="HOST", help="address to listen on (127.0.0.1)")
    dashboard.add_argument("--port", type=_port, default=8470, metavar="PORT", help="port to listen on (8470)")
    dashboard.add_argument(
        "--secret-file",
        type=Path,
        metavar="FILE",
        help="file holding the secret that enables cancel and retry (else BGHTTP_DASHBOARD_SECRET)",
    )
    dashboard.set_defaults(handler=cmd_dashboard)
    return dashboard


def _port(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {raw!r}") from None
    if not 0 < value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {raw!r}")
    return value


def cmd_dashboard(args: argparse.Namespace, settings: Settings) -> int:
    try:
        import uvicorn

        from ..dashboard.app import LOOPBACK_NAMES, create_app
    except ImportError as error:  # the extra is not installed (or only part of it)
        missing = error.name or "its packages"
        raise UsageError(f"the dashboard needs {missing}: pip install 'bghttp[dashboard]'") from None
    from ..dashboard.auth import SecretError, load_secret

    if not settings.store_dir.is_dir():
        # As the other reading commands: a mistyped --store must not serve an empty dashboard.
        raise StoreError(f"no store at {settings.store_dir} (set --store or BGHTTP_STORE_DIR)")
    try:
        secret = load_secret(args.secret_file)
    except SecretError as error:
        raise ConfigError(str(error)) from None
    import socket

    loopback = args.host in LOOPBACK_NAMES
    app = create_app(settings, secret=secret, loopback_only=loopback)
    try:
        family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
        with socket.create_server((args.host, args.port), family=family) as probe:
            probe.close()
    except OSError as error:
        raise ConfigError(f"--host {args.host} --port {args.port}: cannot listen ({error.strerror})") from None
    actions = "on (log in with the secret)" if secret else "off (no secret)"
    print(f"bghttp dashboard on http://{args.host}:{args.port}/ · store {settings.store_dir} · actions {actions}")
    # uvicorn's access log would print every query string; its error log stays.
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning", server_header=False)
    return 0
