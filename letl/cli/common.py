"""What several command groups share: the lake from the environment, and the one "not found" message
for a dataset, so that every command names the same mistake in the same words."""


def open_lake():
    from letl.lake.lake import Lake

    return Lake.from_env()


def no_versions(lake, asset: str, partition: str | None = None, branch: str | None = None, latest: bool = False):
    """The NotFound for a dataset selection that matched nothing: an unknown dataset lists the known ones."""
    from letl.lake.errors import NotFound

    known = sorted({v.asset_key for v in lake.catalog.list_versions()})
    if asset not in known:
        return NotFound(f"unknown dataset {asset!r}; known datasets: {', '.join(known) or 'none'}")
    where = (f" partition {partition}" if partition else "") + (f" on branch {branch!r}" if branch else "")
    return NotFound(f"no {'latest ' if latest else ''}version of {asset!r}{where}")
