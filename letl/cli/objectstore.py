"""`letl objectstore up|down|status`: the local S3 server (SeaweedFS, letl.devstore) behind tier 'cortx'."""


def start_for_run() -> None:
    """`letl run` gives the embedded default a working 'cortx' tier; without one, placement skips that tier."""
    from letl.devstore import server
    from letl.lake.config import LakeConfig, setting

    if not setting("LETL_OBJECTSTORE"):
        return
    try:
        info = server.up(LakeConfig.resolve().home)
        print(f"object store (tier 'cortx'): {info.endpoint}, bucket {info.bucket}; stop it with: letl objectstore down")
    except Exception as exc:  # the lake works without its object tier
        print(f"warning: object store could not start, tier 'cortx' is unavailable: {exc}")


def cmd_objectstore(args) -> int:
    """`status` exits 1 when the server is not running, so scripts can test it."""
    from letl.cli.report import dumps
    from letl.devstore import server
    from letl.lake.config import LakeConfig

    home = LakeConfig.resolve().home
    if args.action == "up":
        info = server.up(home)
        print(f"object store up: {info.endpoint} bucket {info.bucket} (pid {info.pid}); tier 'cortx' uses it")
    elif args.action == "down":
        print("object store stopped" if server.down(home) else "object store was not running")
    else:
        state = server.status(home)
        print(dumps(state) if args.json else "\n".join(f"{k}: {v}" for k, v in state.items()))
        return 0 if state.get("running") else 1
    return 0


def add_commands(sub) -> None:
    store = sub.add_parser("objectstore", help="the local S3 server (SeaweedFS) behind the 'cortx' tier",
                           description="Start, stop or inspect the local S3 server (SeaweedFS) that holds tier "
                           "'cortx' under LETL_HOME. `status` exits 1 when it is not running.")
    store.add_argument("action", choices=["up", "down", "status"])
    store.add_argument("--json", action="store_true", help="machine-readable status")
    store.set_defaults(func=cmd_objectstore)
