"""``ferkit serve``: the HTTP API and web page."""

from __future__ import annotations

import argparse
import sys

from ferkit.apps.cli.common import EXIT_OK, UsageError, add_pipeline_options, build_recognizer
from ferkit.errors import ConfigError, FerkitError


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="HTTP API and web page (needs ferkit[serve])",
                       description="Serve the JSON API (/v1/analyze, /v1/annotate, /v1/models, /healthz, docs at "
                       "/docs) and the web page (/) with uvicorn. Models load once at start-up.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine "
                   "only); any other needs an API key or --insecure")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    from ferkit.apps.service.limits import (
        ServiceSettings as S,  # the one definition of every service default (no FastAPI import)
    )

    p.add_argument("--workers", type=int, default=S.workers, help="inference threads (default: CPU cores, at most 4)")
    p.add_argument("--queue", type=int, default=S.max_queue, help="requests whose body has arrived that may wait "
                   f"for a worker; beyond workers + queue the service answers 503 (default {S.max_queue})")
    p.add_argument("--timeout", type=float, default=S.timeout_s, help="seconds from the end of the body to the "
                   f"answer before 504 (default {S.timeout_s:g})")
    p.add_argument("--body-timeout", type=float, default=S.body_timeout_s, help="seconds for the request body to "
                   f"arrive before 408 (default {S.body_timeout_s:g})")
    p.add_argument("--header-timeout", type=float, default=S.header_timeout_s, help="seconds for a request head "
                   f"to arrive before the connection is closed (default {S.header_timeout_s:g})")
    p.add_argument("--max-client-connections", type=int, default=S.max_connections_per_client,
                   help="open connections per client address before 429 (default "
                   f"{S.max_connections_per_client}; 0 = no cap, e.g. behind a reverse proxy)")
    p.add_argument("--max-upload-mb", type=float, default=S.max_upload_bytes / 2**20, help="largest image file "
                   f"in MiB (default {S.max_upload_bytes / 2**20:g})")
    p.add_argument("--max-megapixels", type=float, default=S.max_pixels / 1e6, help="largest image in "
                   f"megapixels, checked from the header before decoding (default {S.max_pixels / 1e6:g})")
    p.add_argument("--max-streams", type=int, default=S.max_streams, help="live camera streams (the web page's "
                   f"camera mode) tracked at once; a new one beyond gets 503 (default {S.max_streams})")
    p.add_argument("--api-key", default=None, help="require this X-API-Key header on /v1/ requests (default: "
                   "env FERKIT_API_KEY; prefer the variable, arguments are visible to other users)")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without an API key")
    p.add_argument("--allow-host", action="append", metavar="NAME", help="accept this Host header too (repeatable; "
                   "on a loopback --host only localhost/127.0.0.1/::1 are accepted, against DNS rebinding — add "
                   "the public name when a reverse proxy forwards its Host)")
    p.add_argument("--ssl-certfile", default=None, help="TLS certificate (PEM): browsers allow the camera only "
                   "over https or on localhost")
    p.add_argument("--ssl-keyfile", default=None, help="TLS private key (PEM)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    add_pipeline_options(p, "service")
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    import os

    try:
        from ferkit.apps.service import app as service
    except ImportError as e:
        raise FerkitError(f"serve needs FastAPI and uvicorn: pip install 'ferkit[serve]' ({e})") from None
    for flag, value, low in (("--port", args.port, 0), ("--workers", args.workers, 0), ("--queue", args.queue, 0)):
        if value < low:
            raise UsageError(f"{flag} must be >= {low}, got {value}")
    if args.port > 65535 or args.timeout <= 0 or args.max_upload_mb <= 0 or args.max_megapixels <= 0:
        raise UsageError("--port must be <= 65535; --timeout, --max-upload-mb and --max-megapixels must be > 0")
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise UsageError("--ssl-certfile and --ssl-keyfile go together")
    api_key = args.api_key or os.environ.get("FERKIT_API_KEY") or None
    for warning in service.check_bind(args.host, api_key, args.insecure):
        print(f"ferkit: warning: {warning}", file=sys.stderr, flush=True)
    try:
        settings = service.ServiceSettings(
            workers=args.workers, max_queue=args.queue, timeout_s=args.timeout, body_timeout_s=args.body_timeout,
            header_timeout_s=args.header_timeout, max_connections_per_client=args.max_client_connections,
            max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=int(args.max_megapixels * 1_000_000),
            max_streams=args.max_streams, api_key=api_key)
    except ConfigError as e:  # the settings' own checks
        raise UsageError(f"{e} (see ferkit serve --help)") from None
    if args.allow_host:
        settings.allowed_hosts = service.LOOPBACK_HOSTS + tuple(args.allow_host)
    # Workers share one Recognizer, built from the "service" profile (one thread per inference).
    rec = build_recognizer(args, "service", max_pixels=settings.max_pixels)
    print(f"ferkit: starting http{'s' if args.ssl_certfile else ''}://{args.host}:{args.port}/ "
          f"(model {rec.model_name}, detector {rec.detector_name}, {settings.workers} workers, "
          f"API key {'required' if api_key else 'off'}); API docs at /docs, Ctrl+C to stop",
          file=sys.stderr, flush=True)
    service.serve(rec, settings, host=args.host, port=args.port, ssl_certfile=args.ssl_certfile,
                  ssl_keyfile=args.ssl_keyfile, log_level=args.log_level)
    return EXIT_OK


def add_parsers(sub) -> None:
    """Register ``serve``."""
    _add_serve(sub)
