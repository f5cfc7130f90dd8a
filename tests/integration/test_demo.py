"""`make demo` is the README's first command on a fresh Debian machine: it must
install the build dependencies (scripts/bootstrap.sh) before it runs meson."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from conftest import ROOT  # noqa: E402


def test_make_demo_bootstraps_before_building(tmp_path):
    # A build directory that does not exist yet, as on a fresh checkout, so
    # the dry run shows the meson setup step.
    build = tmp_path / "fresh-build"
    r = subprocess.run(["make", "-n", "demo", f"BUILD={build}"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()

    def first(needle):
        hits = [i for i, line in enumerate(lines) if needle in line]
        assert hits, f"{needle!r} not in the dry run:\n{r.stdout}"
        return hits[0]

    bootstrap = first("scripts/bootstrap.sh")
    setup = first("meson setup")
    ninja = first("ninja -C")
    demo = first("scripts/demo.sh")
    assert bootstrap < setup < ninja < demo, r.stdout
    assert not build.exists()  # a dry run
