"""`strata serve --model DIR [--host 127.0.0.1] [--port 8000]`: the HTTP API and web page."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the HTTP API (OpenAI-compatible) and the web page")
    p.add_argument("--model", type=Path, default=None, help="checkpoint directory (or STRATA_MODEL)")
    p.add_argument("--weights", choices=("auto", "fp8", "bf16", "fp32"), default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--log-level", default="info")
    p.set_defaults(handler=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.auth import check_auth_mode
    from strata.errors import ConfigError
    from strata.settings import get_settings

    settings = get_settings()
    changes = {k: v for k, v in (("model", args.model), ("weights", args.weights)) if v is not None}
    settings = settings.model_copy(update=changes)
    if settings.model is None:
        raise ConfigError("no model: pass --model DIR or set STRATA_MODEL")
    check_auth_mode(settings, args.host)
    app = create_app(settings)
    from jobs.worker import embedded_worker

    with embedded_worker(settings):  # /v1/jobs without Redis: a worker process beside the server
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                    timeout_graceful_shutdown=5)
    return 0
