"""What several command groups share: the lake from the environment, and the one "not found" message
for a dataset, so that every command names the same mistake in the same words."""


def open_lake(create: bool = False):
    """The configured lake. Only a command that makes a lake (``create``: `letl run`, `letl tier write`,
    `letl catalog rebuild`) may open one that is not there: a reader must not leave an empty
    ./.letl/catalog.sqlite behind, which would then pass for a lake (the same guard as gros://)."""
    from letl.lake.lake import Lake

    if not create:
        require_a_lake()
    return Lake.from_env()


def require_a_lake() -> None:
    """A reader never creates a lake (``config.missing_default_lake``): the CLI's NotFound."""
    from letl.lake.config import missing_default_lake
    from letl.lake.errors import NotFound

    if problem := missing_default_lake():
        raise NotFound(problem)


def no_versions(lake, asset: str, partition: str | None = None, branch: str | None = None, latest: bool = False,
                what: str = "dataset"):
    """The NotFound for a dataset selection that matched nothing: an unknown dataset lists the known ones.
    ``what`` names what the user could have meant ("version or dataset" where either is taken)."""
    from letl.lake.errors import NotFound

    known = sorted({v.asset_key for v in lake.catalog.list_versions()})
    if asset not in known:
        return NotFound(f"unknown {what} {asset!r}; known datasets: {', '.join(known) or 'none'}")
    where = (f" partition {partition}" if partition else "") + (f" on branch {branch!r}" if branch else "")
    return NotFound(f"no {'latest ' if latest else ''}version of {asset!r}{where}")
