"""`letl serve`: the tiering service's HTTP API (letl.api.app) on uvicorn."""

TOKEN_HINT = "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def cmd_serve(args) -> int:
    import sys

    from letl.lake.config import setting
    from letl.lake.errors import InvalidInput

    token = setting("LETL_API_TOKEN")
    if not token:
        raise InvalidInput(f"refusing to start: set LETL_API_TOKEN to the bearer token clients must send; {TOKEN_HINT}")
    import uvicorn

    from letl.api.app import MIN_TOKEN_LENGTH, create_app

    if len(token) < MIN_TOKEN_LENGTH:  # a short token can be guessed over the network
        raise InvalidInput(f"refusing to start: LETL_API_TOKEN is shorter than {MIN_TOKEN_LENGTH} characters; {TOKEN_HINT}")

    print(f"LETL API on http://{args.host}:{args.port} (bearer token: LETL_API_TOKEN)", file=sys.stderr)
    uvicorn.run(create_app(), host=args.host, port=args.port)
    return 0


def add_commands(sub) -> None:
    srv = sub.add_parser("serve", help="the tiering service's HTTP API (needs LETL_API_TOKEN)",
                         description="Serve the tiering service's HTTP API. Every request needs "
                         "'Authorization: Bearer $LETL_API_TOKEN' (at least 32 characters).")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    srv.add_argument("--port", type=int, default=8700, help="port (default 8700)")
    srv.set_defaults(func=cmd_serve)
