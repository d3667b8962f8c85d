"""``python -m connectors.salesforce.sandbox``: run the sandbox until interrupted.

Prints the instance URL, certificate path and session tokens (one ``KEY=value`` a line, so a
script can ``eval``/parse them) and serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from streams.errors import InputError
from streams.jsonl import read_json

from .schema import default_objects, objects_from_json, user_id
from .server import DEFAULT_TOKENS, Sandbox


def _tokens(values: list[str] | None) -> dict[str, str]:
    if not values:
        return dict(DEFAULT_TOKENS)
    tokens = {}
    for item in values:
        user, sep, token = item.partition("=")
        if not sep or not user or not token:
            raise SystemExit(f"--token expects USER=TOKEN, got {item!r}")
        tokens[token] = user
    return tokens


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, start the sandbox, print how to reach it and wait for a signal."""
    parser = argparse.ArgumentParser(
        prog="python -m connectors.salesforce.sandbox",
        description="Salesforce REST sandbox (HTTPS, self-signed) for paybus demos and tests.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--db", default=":memory:", help="SQLite file (default: in memory)")
    parser.add_argument(
        "--token",
        action="append",
        metavar="USER=TOKEN",
        help="session token for a user (repeatable; default staff + integration)",
    )
    parser.add_argument("--schema", type=Path, help="JSON list of objects replacing the defaults")
    parser.add_argument("--page-size", type=int, default=2000, help="SOQL records per page")
    parser.add_argument("--api-limit", type=int, default=15000, help="DailyApiRequests limit")
    parser.add_argument("--cert-dir", type=Path, help="where to write cert.pem/key.pem")
    args = parser.parse_args(argv)

    try:  # the paybus reader: a missing, non-UTF-8 or non-JSON file is a usage error, located
        objects = objects_from_json(read_json(args.schema)) if args.schema else default_objects()
    except InputError as exc:
        parser.error(str(exc))
    sandbox = Sandbox(
        host=args.host,
        port=args.port,
        db_path=args.db,
        tokens=_tokens(args.token),
        objects=objects,
        page_size=args.page_size,
        api_limit=args.api_limit,
        cert_dir=args.cert_dir,
    )
    sandbox.start()
    print(f"SALESFORCE_INSTANCE_URL={sandbox.instance_url}")
    print(f"SALESFORCE_CERT_PATH={sandbox.cert_path}")
    for token, user in sandbox.tokens.items():
        print(f"SALESFORCE_TOKEN_{user.upper()}={token}")
        print(f"SALESFORCE_USER_ID_{user.upper()}={user_id(user)}")
    sys.stdout.flush()

    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    done.wait()
    sandbox.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
