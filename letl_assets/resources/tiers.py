"""The lake as a Dagster resource: LETL_HOME, branch, catalog and tier settings."""

from typing import Optional

import dagster as dg
from pydantic import PrivateAttr

from letl.lake.lake import Lake


class LakeResource(dg.ConfigurableResource):
    """Where the lake lives. Unset fields fall back to LETL_* variables, read at run time."""

    home: Optional[str] = None
    branch: Optional[str] = None
    catalog_url: Optional[str] = None
    pmem_path: Optional[str] = None
    ssd_path: Optional[str] = None
    hdd_path: Optional[str] = None
    pmem_quota: Optional[str] = None
    ssd_quota: Optional[str] = None
    hdd_quota: Optional[str] = None

    _lake: Optional[Lake] = PrivateAttr(default=None)

    def get_lake(self) -> Lake:
        if self._lake is None:
            self._lake = Lake.from_env(
                home=self.home,
                branch=self.branch,
                catalog_url=self.catalog_url,
                tier_paths={"pmem": self.pmem_path, "ssd": self.ssd_path, "hdd": self.hdd_path},
                tier_quotas={"pmem": self.pmem_quota, "ssd": self.ssd_quota, "hdd": self.hdd_quota},
            )
        return self._lake
