"""The web phone (tests/clients/web/) and JsSIP, bundled here from the npm registry at
test time and served on loopback; nothing is fetched by the page at run time.

By hand: `.venv/bin/python -m tests.clients.webphone --port 8080`, then open
http://127.0.0.1:8080/phone.html in two tabs (README: "A browser call by hand").
"""

from __future__ import annotations

import argparse
import http.server
import pathlib
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tests.helpers import ROOT

WEB = pathlib.Path(__file__).resolve().parent / "web"
BUILD = ROOT / "build" / "webphone"
BUNDLE = BUILD / "jssip.js"
JSSIP, ESBUILD = "jssip@3.13.8", "esbuild@0.28.2"


class Unavailable(RuntimeError):
    """What is missing to bundle JsSIP (tests skip with this reason)."""


def bundle() -> pathlib.Path:
    """JsSIP as one browser script (`window.JsSIP`), built once into build/webphone."""
    if BUNDLE.exists():
        return BUNDLE
    npm = shutil.which("npm")
    if npm is None:
        raise Unavailable("npm (Node.js) not found: it installs JsSIP from the npm registry")
    BUILD.mkdir(parents=True, exist_ok=True)
    steps = [[npm, "install", "--prefix", str(BUILD), "--no-audit", "--no-fund", JSSIP, ESBUILD],
             [str(BUILD / "node_modules" / ".bin" / "esbuild"), str(BUILD / "node_modules/jssip/lib/JsSIP.js"),
              "--bundle", "--format=iife", "--global-name=JsSIP", "--minify", f"--outfile={BUNDLE}"]]
    for step in steps:
        proc = subprocess.run(step, capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode != 0:
            BUNDLE.unlink(missing_ok=True)
            raise Unavailable(f"{' '.join(step[:2])} failed: {proc.stderr[-1500:]}")
    return BUNDLE


class _Files(http.server.SimpleHTTPRequestHandler):
    def translate_path(self, path: str) -> str:
        name = path.split("?", 1)[0].lstrip("/")
        return str(BUNDLE if name == "jssip.js" else WEB / (name or "phone.html"))

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serving(port: int = 0) -> Iterator[str]:
    """The page's base URL (http://127.0.0.1:PORT/), served from a thread until the block ends."""
    bundle()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the JsSIP web phone on loopback.")
    parser.add_argument("--port", type=int, default=8080)
    port = parser.parse_args().port
    with serving(port) as url:
        print(f"open {url}phone.html in two browser tabs (Ctrl-C stops)", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
