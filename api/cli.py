"""The `resynth` console script: detector's subcommands plus `serve` (kept here so imports flow api -> detector)."""

from __future__ import annotations

import sys

from detector import cli as detector_cli


def server_config(app, settings, **overrides):
    """uvicorn's configuration for the service: the guarded HTTP protocol (api/protocol.py), and no WebSocket
    protocol, so an upgrade request reaches the app as a plain request and gets its JSON answer instead of
    uvicorn's bare 403."""
    import uvicorn

    from .protocol import guarded_protocol

    http = guarded_protocol(max_connections=settings.max_connections, header_timeout_s=settings.header_timeout_s,
                            retry_after_s=settings.retry_after_s)
    options = {"host": settings.host, "port": settings.port, "log_level": "info", "http": http, "ws": "none",
               "timeout_keep_alive": 5, **overrides}
    return uvicorn.Config(app, **options)


def cmd_serve(args) -> int:
    import uvicorn

    from .app import create_app
    from .memory import limit_arenas
    from .settings import settings_from_env

    settings = settings_from_env(detector=args.detector, host=args.host, port=args.port, device=args.device)
    limit_arenas(settings.malloc_arenas)  # before the server's threads exist (api/memory.py)
    print(f"resynth: serving {settings.detector} on http://{settings.host}:{settings.port}", flush=True)
    uvicorn.Server(server_config(create_app(settings), settings)).run()
    return 0


def add_serve(sub) -> None:
    s = sub.add_parser("serve", help="run the HTTP service (settings from RESYNTH_* environment variables)")
    s.add_argument("--host", default=None, help="default RESYNTH_HOST or 127.0.0.1")
    s.add_argument("--port", type=int, default=None, help="default RESYNTH_PORT or 8000")
    s.add_argument("--detector", default=None, help="default RESYNTH_DETECTOR or the embedded model")
    s.add_argument("--device", default=None, help="default RESYNTH_DEVICE or auto (CUDA when present, else CPU)")
    s.set_defaults(func=cmd_serve)


def build_parser():
    return detector_cli.build_parser(extra=(add_serve,))


def main(argv: list[str] | None = None) -> int:
    return detector_cli.run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
