"""The VisualDL page as a user sees it: start the server on a log directory, open it in headless Chromium.

Used by ``tools/visualize.py visualdl`` (a screenshot of a run's curves, for reports and
the README) and by ``tests/test_visualdl_page.py`` (the page really serves a run's scalars
and images). Browser control goes through Playwright's Python package driving the system's
Chromium (Debian's ``chromium``); Playwright's own browser download is never used.

What VisualDL 2.5.3 was seen to do (see also ../shared/PADDLE_NOTES.md):
- without ``--language``, page routes answer HTTP 500 to a client that sends no
  Accept-Language header, so the server is always started with ``--language en``;
- ``/alive`` answers 204 about 1 s after start;
- the scalar page polls its API, so the network never goes idle: wait for elements, not for
  "networkidle";
- tag groups (``train``, ``eval``, ...) are collapsed except the first; each chart is a
  canvas, its title is drawn inside it (not in the DOM), so charts are counted as canvases
  and the tags they show are read from the API requests the page makes.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Callable

from PIL import Image

from utils.errors import UserError
from utils.visual.common import PlotResult

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

# Flags a root, display-less, offline machine needs: without the background-networking ones
# Chromium keeps opening connections that this sandbox refuses, many at a time.
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable: ``$CHROMIUM`` first, then the usual names; None if absent."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env if os.path.isfile(env) else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


class VisualDLServer:
    """``visualdl --logdir LOGDIR`` on a free loopback port, for as long as the ``with`` block lasts.

    Started as a child process and stopped by its PID (terminate, then kill after 10 s);
    its output goes to a log file so a failure to start can be reported.

    Args:
        logdir: the directory VisualDL scans (a run directory or a folder of runs).
        host: interface to bind; loopback by default, nothing is exposed.
        port: TCP port; a free one when None.
        language: ``en`` or ``zh`` (see the module notes on why it is always passed).
        start_timeout: seconds to wait for ``/alive``.
    """

    def __init__(self, logdir: str, host: str = "127.0.0.1", port: int | None = None, language: str = "en",
                 start_timeout: float = 60.0) -> None:
        if not os.path.isdir(logdir):
            raise UserError(f"{logdir}: no such log directory (pass a run directory or the output folder)")
        self.logdir = logdir
        self.host = host
        self.port = port or free_port(host)
        self.language = language
        self.start_timeout = start_timeout
        self.proc = None
        self.log_path = None

    @property
    def url(self) -> str:
        """The server's base address, ``http://HOST:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs (None before :meth:`start`)."""
        return self.proc.pid if self.proc else None

    def command(self) -> list[str]:
        """The ``visualdl`` command line that serves :attr:`logdir`."""
        # The console script's own interpreter: `python -m visualdl` is not a module entry point.
        exe = shutil.which("visualdl") or os.path.join(os.path.dirname(sys.executable), "visualdl")
        return [exe, "--logdir", self.logdir, "--host", self.host, "--port", str(self.port),
                "--language", self.language]

    def start(self) -> VisualDLServer:
        """Start the server and wait for ``/alive``; a UserError when it exits or does not answer in time."""
        fd, self.log_path = tempfile.mkstemp(prefix="visualdl-", suffix=".log")
        with os.fdopen(fd, "w") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + self.start_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                tail = open(self.log_path, encoding="utf-8", errors="replace").read()[-300:].strip().replace("\n", " | ")
                raise UserError(f"visualdl exited with code {self.proc.returncode} before serving: {tail}")
            try:
                _get(self.url + "/alive", timeout=1.0)
                return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.3)
        self.stop()
        raise UserError(f"visualdl did not answer on {self.url} within {self.start_timeout:.0f}s (log: {self.log_path})")

    def stop(self) -> int | None:
        """Stop the server by its PID; returns its exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode

    def api(self, path: str, **params: str) -> dict:
        """GET ``/app/api/<path>`` and return its ``data`` field (the VisualDL API wraps every answer)."""
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        status, body = _get(f"{self.url}/app/api/{path}{query}")
        answer = json.loads(body)
        if answer.get("status") != 0:
            raise RuntimeError(f"VisualDL API {path}: {answer.get('msg')}")
        return answer["data"]

    def __enter__(self) -> VisualDLServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self.log_path and os.path.exists(self.log_path):
            os.remove(self.log_path)


def _launch(playwright: Playwright, chromium: str) -> Browser:
    return playwright.chromium.launch(executable_path=chromium, args=list(CHROMIUM_ARGS))


def _need_browser() -> tuple[str, Callable]:
    chromium = find_chromium()
    if chromium is None:
        raise UserError("no Chromium found: install it (Debian/Ubuntu: apt-get install chromium) or set CHROMIUM=/path/to/chrome")
    try:
        from playwright.sync_api import sync_playwright  # optional and heavy: only the visualdl command needs it
    except ImportError:
        raise UserError("the Python package playwright is missing: pip install playwright "
                        "(its browser download is not needed, the system Chromium is used)") from None
    return chromium, sync_playwright


def scalar_page(server: VisualDLServer, screenshot: str | None = None, groups: tuple[str, ...] = ("train", "eval"),
                width: int = 1400, height: int = 900, timeout: float = 30.0) -> dict:
    """Open the server's scalar page, expand ``groups``, and report what the page shows.

    Args:
        server: a started :class:`VisualDLServer`.
        screenshot: PNG path for a full-page screenshot (None: none).
        groups: tag groups to expand (the first group is open already; clicking it would close it).
        width, height: viewport in CSS pixels.
        timeout: seconds to wait for each group header and for its charts.

    Returns:
        dict with ``groups`` (header texts found), ``tags`` (scalar tags whose data the page
        fetched, by run), ``charts`` (canvas count) and ``screenshot``.
    """
    chromium, sync_playwright = _need_browser()
    fetched = {}

    def on_response(response):
        parts = urllib.parse.urlparse(response.url)
        if parts.path.endswith("/api/scalar/list") and response.status == 200:
            q = urllib.parse.parse_qs(parts.query)
            fetched.setdefault(q["run"][0], set()).add(q["tag"][0])

    with sync_playwright() as pw:
        browser = _launch(pw, chromium)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("response", on_response)
            page.goto(server.url + "/app/scalar", wait_until="domcontentloaded")
            found = []
            for g in groups:
                header = page.get_by_text(g, exact=True).first
                header.wait_for(timeout=timeout * 1000)
                found.append(g)
            # The first group in the page's (alphabetical) order starts open; open the others.
            all_groups = server.api("scalar/tags")["tags"]
            names = sorted({t.split("/")[0] for run_tags in all_groups for t in run_tags})
            first = names[0] if names else None
            for g in groups:
                if g != first:
                    page.get_by_text(g, exact=True).first.click()
            want = {t for run_tags in all_groups for t in run_tags if t.split("/")[0] in groups}
            deadline = time.time() + timeout
            while time.time() < deadline and not want <= set().union(*fetched.values(), set()):
                page.wait_for_timeout(200)
            page.wait_for_timeout(500)  # let the charts draw the data they fetched
            charts = page.locator("canvas").count()
            if screenshot:
                page.screenshot(path=screenshot, full_page=True)
        finally:
            browser.close()
    return {"groups": found, "tags": {r: sorted(t) for r, t in fetched.items()}, "charts": charts,
            "screenshot": screenshot}


def image_page(server: VisualDLServer, screenshot: str | None = None, width: int = 1400, height: int = 900,
               timeout: float = 30.0) -> dict:
    """Open the server's image (samples) page; report the images it displays with their natural size.

    Returns:
        dict with ``images``: [(src, width, height)] of the sample images drawn (the page
        shows them as blob URLs, decoded from the log), and ``screenshot``.
    """
    chromium, sync_playwright = _need_browser()
    with sync_playwright() as pw:
        browser = _launch(pw, chromium)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(server.url + "/app/sample/image", wait_until="domcontentloaded")
            script = ("Array.from(document.images).filter(i => i.src.startsWith('blob:') && i.complete"
                      " && i.naturalWidth > 0).map(i => [i.src, i.naturalWidth, i.naturalHeight])")
            images = []
            deadline = time.time() + timeout
            while time.time() < deadline and not images:
                page.wait_for_timeout(300)
                images = page.evaluate(script)
            if screenshot:
                page.screenshot(path=screenshot, full_page=True)
        finally:
            browser.close()
    return {"images": [tuple(i) for i in images], "screenshot": screenshot}


def screenshot(logdir: str, out: str, page: str = "scalar", groups: tuple[str, ...] | list[str] = ("train", "eval"),
               width: int = 1400) -> PlotResult:
    """Serve ``logdir`` with VisualDL, open ``page`` in headless Chromium and save a full-page PNG.

    Args:
        logdir: a run directory or a folder of runs (each run is a line on every chart).
        out: the PNG to write (its folder is created).
        page: ``scalar`` (the curves, ``groups`` opened) or ``image`` (the samples page).
        groups: scalar tag groups to open, e.g. ``train eval``; a group the log does not have
            is a one-line error listing the groups it has.
        width: viewport width in CSS pixels (the height follows the page).

    Returns:
        :class:`utils.visual.common.PlotResult`: panels = charts (scalar) or images (image) shown.
    """
    _need_browser()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with VisualDLServer(logdir) as server:
        notes = []
        if page == "scalar":
            tags = server.api("scalar/tags")
            if not tags["runs"]:
                raise UserError(f"{logdir}: no VisualDL scalars found in it (train with VisualDL.enable: true)")
            have = sorted({t.split("/")[0] for run_tags in tags["tags"] for t in run_tags})
            unknown = [g for g in groups if g not in have]
            if unknown:
                raise UserError(f"--groups {' '.join(unknown)}: not in this log; its groups are: {', '.join(have)}")
            seen = scalar_page(server, out, tuple(groups), width=width)
            panels = seen["charts"]
            notes.append(f"{len(tags['runs'])} run(s): " + ", ".join(tags["runs"]))
        else:
            if not server.api("image/tags")["runs"]:
                raise UserError(f"{logdir}: no VisualDL images in it (VisualDL.sample_images > 0 logs them)")
            seen = image_page(server, out, width=width)
            panels = len(seen["images"])
    with Image.open(out) as im:
        size = im.size
    return PlotResult(out, size, panels, notes)
