"""``canfar-local``: run the embedded CANFAR platform from the command line.

``canfar-local serve`` prints ``CANFAR_URL=...`` and ``CANFAR_TOKEN=...`` (ready to paste
into a shell or to read from a parent process) and serves until interrupted.  Sessions keep
running under their supervisors when the server stops, and a later ``serve`` on the same
root adopts them, unless ``--kill-on-exit`` is given.  User errors are one line on stderr
and exit status 1; there are no tracebacks for them.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from .config import PlatformConfig, default_root
from .errors import PlatformError


def build_parser() -> argparse.ArgumentParser:
    """The `canfar-local` argument parser."""
    parser = argparse.ArgumentParser(
        prog="canfar-local", description="The embedded CANFAR (Skaha v1) platform."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the Skaha API and run sessions locally")
    defaults = PlatformConfig()
    serve.add_argument("--root", type=Path, help=f"state directory (default {default_root()})")
    serve.add_argument("--host", default=defaults.host, help="address to bind (default loopback)")
    serve.add_argument("--port", type=int, default=0, help="port to bind (default: any free one)")
    serve.add_argument("--cores", type=float, default=defaults.cores, help="machine capacity")
    serve.add_argument("--ram", type=float, default=defaults.ram_gib, help="capacity in GiB")
    serve.add_argument(
        "--retention",
        type=float,
        default=defaults.retention_seconds,
        help="seconds a finished headless session stays visible",
    )
    serve.add_argument(
        "--deadline", type=int, default=defaults.deadline_seconds, help="headless deadline (s)"
    )
    serve.add_argument(
        "--max-interactive",
        type=int,
        default=defaults.max_interactive_sessions,
        help="interactive sessions per user",
    )
    serve.add_argument(
        "--start-delay",
        type=float,
        default=defaults.start_delay_seconds,
        metavar="S",
        help="seconds from admission to the command's start (CANFAR's image start)",
    )
    serve.add_argument(
        "--session-nice",
        type=int,
        default=defaults.session_nice,
        metavar="N",
        help="CPU priority of sessions (nice 0-19; sessions on CANFAR never take the server's "
        "or the driver's CPU, here they share it)",
    )
    serve.add_argument("--user", help="name of the default user (default: the OS user)")
    serve.add_argument(
        "--forbid", action="append", default=[], metavar="USER", help="answer 403 to this user"
    )
    serve.add_argument(
        "--registry",
        action="append",
        default=[],
        metavar="HOST",
        help="allowed image registry (repeatable; default images.canfar.net)",
    )
    serve.add_argument(
        "--unpullable",
        action="append",
        default=[],
        metavar="IMAGE",
        help="an image whose pull fails: its sessions stay Pending with ErrImagePull events",
    )
    serve.add_argument("--tls-cert", type=Path, help="server certificate (PEM) for HTTPS")
    serve.add_argument("--tls-key", type=Path, help="server key (PEM), if not in --tls-cert")
    serve.add_argument("--client-ca", type=Path, help="CA that issues client certificates")
    serve.add_argument(
        "--client-ca-key",
        type=Path,
        help="key of --client-ca: write a proxy certificate into each session's $HOME/.ssl",
    )
    serve.add_argument(
        "--proxy-lifetime",
        type=float,
        default=defaults.proxy_lifetime_seconds,
        help="seconds those proxy certificates are valid (default 7 days)",
    )
    serve.add_argument(
        "--session-ca",
        type=Path,
        help="a CA that sessions trust (their SSL_CERT_FILE adds it to the host's roots)",
    )
    serve.add_argument(
        "--access-token-seconds",
        type=int,
        default=defaults.access_token_seconds,
        help="lifetime of the access tokens of the OIDC token endpoint (/oidc/token)",
    )
    serve.add_argument(
        "--kill-on-exit", action="store_true", help="kill running sessions when stopping"
    )
    chaos = commands.add_parser(
        "chaos",
        help="a fault-injecting proxy in front of a Skaha server (try a pipeline on a bad night)",
    )
    chaos.add_argument("upstream", help="the server's URL, e.g. http://127.0.0.1:8000/skaha/v1")
    chaos.add_argument("--port", type=int, default=0, help="port to bind (default: any free one)")
    for kind, text in (
        ("server-error", "answer 500 without forwarding"),
        ("unavailable", "answer 503 with Retry-After without forwarding"),
        ("reset-before", "reset the connection before forwarding"),
        ("reset-after", "forward, then reset the connection (the answer is lost)"),
        ("latency", "delay the request before forwarding"),
    ):
        chaos.add_argument(f"--{kind}", type=float, default=0.0, metavar="RATE", help=text)
    chaos.add_argument("--retry-after", type=int, default=1, help="Retry-After of a 503 (s)")
    chaos.add_argument("--seed", type=int, help="random seed, to replay a run")
    return parser


def chaos(args: argparse.Namespace) -> int:
    """Run the proxy until SIGINT/SIGTERM, printing its CANFAR_URL first."""
    from .chaos import ChaosProxy, FaultRates

    rates = FaultRates(
        server_error=args.server_error,
        unavailable=args.unavailable,
        reset_before=args.reset_before,
        reset_after=args.reset_after,
        latency=args.latency,
        retry_after=args.retry_after,
        seed=args.seed,
    )
    proxy = ChaosProxy.start(args.upstream, rates, port=args.port)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    print(f"CANFAR_URL={proxy.url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        proxy.stop()
        print(f"# {proxy.counts()}", file=sys.stderr)
    return 0


def config_from(args: argparse.Namespace) -> PlatformConfig:
    """A PlatformConfig from the command line, refusing inconsistent TLS options."""
    if args.tls_key is not None and args.tls_cert is None:
        raise PlatformError("--tls-key needs --tls-cert")
    if args.client_ca is not None and args.tls_cert is None:
        raise PlatformError("--client-ca needs --tls-cert")
    if args.client_ca_key is not None and args.client_ca is None:
        raise PlatformError("--client-ca-key needs --client-ca")
    for flag, number in (
        ("--proxy-lifetime", args.proxy_lifetime),
        ("--access-token-seconds", args.access_token_seconds),
    ):
        if not number > 0:
            raise PlatformError(f"{flag}={number:g} is not allowed: a number of seconds above 0.")
    for flag, value in (("--cores", args.cores), ("--ram", args.ram)):
        if not value > 0:
            raise PlatformError(
                f"{flag}={value:g} is not allowed: the machine's capacity must be greater than 0."
            )
    if not args.start_delay >= 0:
        raise PlatformError(
            f"--start-delay={args.start_delay:g} is not allowed: a number of seconds >= 0."
        )
    if not 0 <= args.session_nice <= 19:
        raise PlatformError(
            f"--session-nice={args.session_nice} is not allowed: a nice value from 0 to 19."
        )
    for path in (args.tls_cert, args.tls_key, args.client_ca, args.client_ca_key, args.session_ca):
        if path is not None and not path.is_file():
            raise PlatformError(f"no such file: {path}")
    changes: dict[str, object] = {
        "root": args.root,
        "host": args.host,
        "port": args.port,
        "cores": args.cores,
        "ram_gib": args.ram,
        "retention_seconds": args.retention,
        "deadline_seconds": args.deadline,
        "start_delay_seconds": args.start_delay,
        "session_nice": args.session_nice,
        "max_interactive_sessions": args.max_interactive,
        "default_user": args.user,
        "forbidden_users": frozenset(args.forbid),
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "client_ca": args.client_ca,
        "client_ca_key": args.client_ca_key,
        "proxy_lifetime_seconds": args.proxy_lifetime,
        "session_ca_file": args.session_ca,
        "access_token_seconds": args.access_token_seconds,
        "unpullable_images": tuple(args.unpullable),
    }
    if args.registry:
        changes["registries"] = tuple(args.registry)
    return PlatformConfig().with_overrides(**changes)


def serve(args: argparse.Namespace) -> int:
    """Run the server until SIGINT/SIGTERM, printing CANFAR_URL and CANFAR_TOKEN first."""
    from .server import LocalPlatform  # imported here so that --help stays fast

    platform = LocalPlatform.start(config_from(args))
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"CANFAR_URL={platform.url}", flush=True)
    print(f"CANFAR_TOKEN={platform.token}", flush=True)
    print(f"# user {platform.user}, root {platform.root}, pid-lock held", file=sys.stderr)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        platform.stop(kill_sessions=args.kill_on_exit)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: errors become one line on stderr and exit status 1, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return serve(args)
        if args.command == "chaos":
            return chaos(args)
    except PlatformError as exc:
        print(f"canfar-local: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. the port is taken, or the root cannot be created
        where = f": {exc.filename}" if exc.filename else ""
        print(f"canfar-local: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
