"""``python -m connectors.gocardless.sandbox``: serve the sandbox in the foreground.

Binds 127.0.0.1 by default; the demo points the GoCardless connector at
``http://127.0.0.1:<port>`` with the same ``--token``.
"""

from __future__ import annotations

import argparse
import logging
import os

from aiohttp import web

from .app import build_app
from .clock import DAY_MS
from .server import open_store
from .state import SandboxSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m connectors.gocardless.sandbox")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--db", default="gocardless-sandbox.db", help="SQLite file or :memory:")
    parser.add_argument(
        "--token", default=os.environ.get("PAYBUS_GOCARDLESS_SANDBOX_TOKEN", "sandbox_token")
    )
    parser.add_argument("--admin-token", default=None, help="require X-Sandbox-Admin-Token")
    parser.add_argument("--webhook-url", default=None)
    parser.add_argument("--webhook-secret", default=None)
    parser.add_argument("--webhook-seed", type=int, default=None)
    parser.add_argument("--shuffle", action="store_true", help="shuffle events within batches")
    parser.add_argument("--duplicate-rate", type=float, default=None)
    parser.add_argument("--drop-rate", type=float, default=None)
    parser.add_argument("--step-days", type=float, default=1.0)
    parser.add_argument("--auto-advance", type=float, default=None, metavar="SECONDS")
    parser.add_argument("--auto-deliver", type=float, default=None, metavar="SECONDS")
    args = parser.parse_args(argv)

    options = {
        "url": args.webhook_url,
        "secret": args.webhook_secret,
        "seed": args.webhook_seed,
        "shuffle": True if args.shuffle else None,
        "duplicate_rate": args.duplicate_rate,
        "drop_rate": args.drop_rate,
    }
    store = open_store(args.db, {k: v for k, v in options.items() if v is not None})
    settings = SandboxSettings(
        token=args.token,
        admin_token=args.admin_token,
        step_ms=int(args.step_days * DAY_MS),
        auto_advance_seconds=args.auto_advance,
        auto_deliver_seconds=args.auto_deliver,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        web.run_app(build_app(store, settings), host=args.host, port=args.port, print=None)
    finally:
        store.close()


if __name__ == "__main__":
    main()
