"""Install 3Dmol.js for the atoms viewer: ``python -m app.fetch_js`` (``--force`` to fetch again).

The dashboard must not load anything from outside its own server, and third-party JavaScript is not kept in
this repository, so this fetches the npm package ``3dmol`` (BSD-3-Clause) at install time, with ``npm pack``
when npm is installed and straight from the npm registry otherwise, checks it against the pinned integrity
hash and copies ``build/3Dmol-min.js`` and the licence into ``app/static/vendor/`` (ignored by git). The
server hands the file out itself (see :mod:`app.atoms_view`).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

VERSION = "2.5.5"  # the version py3Dmol 2.5.5 itself would load from a CDN
INTEGRITY = "sha512-kqNHouGqq3YfW58174tdERvm0XYTmP0tavQKOqIw1ouc2OJ7epkXEFrtEkVXV0clBZT2Ze2xHRC/qxX0u0qCdw=="
VENDOR_DIR = Path(__file__).resolve().parent / "static" / "vendor"
JS_PATH = VENDOR_DIR / "3Dmol-min.js"
VERSION_PATH = VENDOR_DIR / "3Dmol.version"
WANTED = {  # member of the npm tarball -> file name in VENDOR_DIR
    "package/build/3Dmol-min.js": JS_PATH.name,
    "package/build/3Dmol-min.js.LICENSE.txt": "3Dmol-min.js.LICENSE.txt",
    "package/LICENSE": "3Dmol-LICENSE.txt",
}
DEFAULT_REGISTRY = "https://registry.npmjs.org/"


def installed_version() -> str | None:
    """The version of 3Dmol.js in ``app/static/vendor``; None when the file is missing."""
    if not JS_PATH.is_file():
        return None
    try:
        return VERSION_PATH.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def _check_integrity(data: bytes) -> None:
    algorithm, _, expected = INTEGRITY.partition("-")
    actual = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if actual != expected:
        raise SystemExit(f"3dmol-{VERSION}.tgz does not match its pinned {algorithm} hash; not installing it")


def _tarball_with_npm(npm: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="gcd-3dmol-") as tmp:
        command = [npm, "pack", f"3dmol@{VERSION}", "--pack-destination", tmp, "--silent"]
        subprocess.run(command, check=True, cwd=tmp, stdout=subprocess.DEVNULL)
        return (Path(tmp) / f"3dmol-{VERSION}.tgz").read_bytes()


def _tarball_from_registry() -> bytes:
    environ = os.environ
    registry = environ.get("NPM_CONFIG_REGISTRY") or environ.get("npm_config_registry") or DEFAULT_REGISTRY  # noqa: SIM112
    url = f"{registry.rstrip('/')}/3dmol/-/3dmol-{VERSION}.tgz"
    with urllib.request.urlopen(url, timeout=120) as response:
        return response.read()


def fetch(force: bool = False, quiet: bool = False) -> Path:
    """Install 3Dmol.js into ``app/static/vendor`` unless this version is already there; returns its path."""
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr))
    if not force and installed_version() == VERSION:
        say(f"3Dmol.js {VERSION} is already installed: {JS_PATH}")
        return JS_PATH
    npm = shutil.which("npm")
    if npm:
        say(f"fetching 3dmol@{VERSION} with npm pack")
        data = _tarball_with_npm(npm)
    else:
        say(f"npm not found; fetching 3dmol-{VERSION}.tgz from the npm registry")
        data = _tarball_from_registry()
    _check_integrity(data)
    VENDOR_DIR.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member, name in WANTED.items():
            source = archive.extractfile(member)  # only these regular files are read; nothing else is unpacked
            if source is None:
                raise SystemExit(f"{member} is missing from 3dmol-{VERSION}.tgz")
            temporary = VENDOR_DIR / f".{name}.part"
            temporary.write_bytes(source.read())
            temporary.replace(VENDOR_DIR / name)
    VERSION_PATH.write_text(VERSION + "\n")
    say(f"installed 3Dmol.js {VERSION} ({JS_PATH.stat().st_size // 1024} KiB): {JS_PATH}")
    return JS_PATH


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.fetch_js", description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="fetch again even if this version is installed")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    fetch(force=args.force, quiet=args.quiet)


if __name__ == "__main__":
    main()
