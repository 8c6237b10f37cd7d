"""``erasepro serve`` and ``erasepro keys create|revoke|list`` (registered into the ``erasepro`` command).

Imported only when one of these commands runs; neither imports torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from erasepro_jobs.settings import Settings


def cmd_serve(args: argparse.Namespace) -> int:
    from app.serve import serve

    return serve(args.host, args.port, workers=args.workers, log_level=args.log_level)


def _store():
    from app.auth import KeyStore

    return KeyStore(Settings.from_env().keys_file)


def cmd_keys_create(args: argparse.Namespace) -> int:
    from app.auth import KeyStoreError

    try:
        key, rec = _store().create(args.tenant, name=args.name or "")
    except KeyStoreError as exc:
        print(f"erasepro keys: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"key": key, **rec.public()}))
    else:
        print(key)
        print(f"created key {rec.id} for tenant {rec.tenant!r}; it is shown only once "
              f"(stored hashed in {Settings.from_env().keys_file})", file=sys.stderr)
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from app.auth import KeyStoreError

    try:
        rec = _store().revoke(args.key_id)
    except KeyStoreError as exc:
        print(f"erasepro keys: error: {exc}", file=sys.stderr)
        return 2
    print(f"revoked key {rec.id} (tenant {rec.tenant!r})")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    records = _store().list()
    if args.json:
        print(json.dumps([r.public() for r in records], indent=1))
        return 0
    if not records:
        print("no keys (create one with: erasepro keys create TENANT)")
    for r in records:
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r.created_at))
        state = "revoked" if r.revoked_at else "active"
        print(f"{r.id}  {r.tenant:24s} {state:8s} created {created} UTC  {r.name}")
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``serve`` and ``keys``; each sets ``func`` to a callable returning an exit code."""
    s = subparsers.add_parser(
        "serve", help="run the REST service (embedded Redis + a worker unless REDIS_URL is set)",
        description="Run the ErasePro API. Without REDIS_URL, also an embedded Redis and one worker process.")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--workers", type=int, default=1, help="worker processes to start beside the API "
                   "(embedded mode only)")
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    s.set_defaults(func=cmd_serve)

    k = subparsers.add_parser("keys", help="manage API keys (stored hashed in the data dir)",
                              description="Create, revoke and list API keys. Keys are bound to a tenant.")
    ks = k.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    c = ks.add_parser("create", help="create a key for a tenant (printed once)")
    c.add_argument("tenant")
    c.add_argument("--name", help="a label for the key")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_keys_create)
    r = ks.add_parser("revoke", help="revoke a key by id (or by the key itself)")
    r.add_argument("key_id")
    r.set_defaults(func=cmd_keys_revoke)
    ls = ks.add_parser("list", help="list keys (ids, tenants, state; never the keys)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_keys_list)
