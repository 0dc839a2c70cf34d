"""What the browser tests share (a pytest plugin, named in `conftest.py`'s
`pytest_plugins`): Debian's chromium driven by Playwright (`browser`; its own browsers are
never downloaded), a live `lipon-hw serve` with an operator and a viewer (`served`), where
screenshots go (`shots`), and a few looks at a server and a page.

Screenshots go to the test's own directory, or to the directory `LIPON_HW_SCREENSHOTS`
names (`LIPON_HW_SCREENSHOTS=docs/screenshots` renews the README's). Without
/usr/bin/chromium the tests are skipped, saying why — except in CI (`CI` set), where they
fail: `.ci/run` installs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from served import cli_process, stop_process

SHOTS_ENV = "LIPON_HW_SCREENSHOTS"
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
OPERATOR, VIEWER = "otto-operator-token-0123", "vera-viewer-token-01234"
WAIT_MS = 40_000


def shots(tmp_path: Path) -> Path:
    """Where the screenshots go (see the module's docstring)."""
    where = Path(os.environ[SHOTS_ENV]) if os.environ.get(SHOTS_ENV) else tmp_path
    where.mkdir(parents=True, exist_ok=True)
    return where


@pytest.fixture
def browser(tmp_path):
    if not CHROMIUM.exists():
        why = (f"{CHROMIUM} is missing: install Debian's chromium "
               "(apt-get install chromium) for the browser tests")
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True,
            args=ARGS, viewport={"width": 1400, "height": 900})
        try:
            yield context
        finally:
            context.close()


def get(url: str, token: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
        return json.loads(r.read())


class Server:
    """`lipon-hw serve` on a port of its own with an operator and a viewer; `restart()`
    stops it and serves again on the same port, as after a server's restart."""

    def __init__(self, tmp_path: Path):
        self.cwd, self.data = tmp_path, tmp_path / "data"
        self.tokens = tmp_path / "tokens"
        self.tokens.write_text(f"otto operator {OPERATOR}\nvera viewer {VIEWER}\n",
                               encoding="utf-8")
        self.tokens.chmod(0o600)
        self.url = self.start("127.0.0.1:0")

    def start(self, bind: str) -> str:
        announced = self.data / "serve.json"
        announced.unlink(missing_ok=True)
        self.process = cli_process("serve", "--bind", bind, "--token-file", self.tokens, "--data",
                           self.data, cwd=self.cwd)
        deadline = time.monotonic() + 30
        while not announced.exists():
            assert self.process.poll() is None and time.monotonic() < deadline, \
                self.process.stderr.read()
            time.sleep(0.05)
        return json.loads(announced.read_text(encoding="utf-8"))["url"]

    def restart(self) -> None:
        stop_process(self.process)
        assert self.process.returncode == 0, self.process.stderr.read()
        assert self.start(self.url.removeprefix("http://")) == self.url


@pytest.fixture
def served(tmp_path):
    server = Server(tmp_path)
    try:
        yield server
    finally:
        stop_process(server.process)


def started(url: str, run: subprocess.Popen) -> int:
    """The id of the run the engine started (once the store has it)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            runs = get(f"{url}/api/runs", VIEWER)
        except urllib.error.HTTPError as exc:  # 503 while the engine makes the store
            assert exc.code == 503, exc
            runs = []
        if runs:
            return runs[-1]["id"]
        assert run.poll() is None and time.monotonic() < deadline, run.stderr.read()
        time.sleep(0.1)


def open_run(browser, url: str, run_id: int, token: str):
    page = browser.new_page()
    page.goto(f"{url}/runs/{run_id}")
    page.fill("#token", token)
    page.press("#token", "Enter")  # kept in sessionStorage, the page reloads with it
    page.wait_for_function("() => document.querySelector('#link')?.textContent === 'live'",
                           timeout=WAIT_MS)
    return page


def count(page, selector: str, attr: str) -> int:
    return int(page.get_attribute(selector, f"data-{attr}") or 0)
