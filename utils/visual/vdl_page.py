"""The VisualDL page as a user sees it: start the server on a log directory, open it in headless Chromium.

Used by ``tools/visualize.py visualdl`` (a screenshot of a run's curves, for reports and
the README) and by ``tests/test_visualdl_page.py`` (the page really serves a run's scalars
and images). Browser control goes through Playwright's Python package driving the system's
Chromium (Debian's ``chromium``); Playwright's own browser download is never used.

What VisualDL 2.5.3 was seen to do (see also ../shared/PADDLE_NOTES.md):
- without ``--language``, page routes answer HTTP 500 to a client that sends no
  Accept-Language header, so the server is always started with ``--language en``;
- ``/alive`` answers 204 about 1 s after start;
- the root address lands on the first entry of ``/app/api/component_tabs``, which the server
  builds from a Python set: its order follows the process's string hashing, so the same log
  opened on PR CURVE, SAMPLES or SCALARS from one start to the next (PYTHONHASHSEED 2, 4, 1).
  (A second redirect, to the first tab in the page's own order, SCALARS, races it: with
  PR CURVE listed first, 4 of 5 page loads landed there.) ``--component_tabs scalar ...``
  fixes that list and its order, and both redirects then agree: the server is started with
  the log's tabs, SCALARS first (:func:`component_tabs`);
- the scalar page sorts tag groups by name, case-insensitively, and opens only the first:
  ``eval`` opens, ``train`` follows collapsed (the doctor's group, ``training_doctor``, sorts
  after both);
- the scalar page polls its API, so the network never goes idle: wait for the charts, not for
  "networkidle". Each chart is an ECharts canvas; its title (the tag), loading spinner and
  points are read from the ECharts instance (the page's own ``echarts.js`` module).
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
    from playwright.sync_api import Browser, Page, Playwright

# Flags a root, display-less, offline machine needs: without the background-networking ones
# Chromium keeps opening connections that this sandbox refuses, many at a time.
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync")


# VisualDL's tab names, SCALARS first: the root address lands on the first tab the server lists.
TAB_ORDER = ("scalar", "image", "text", "histogram", "pr_curve", "roc_curve", "hyper_parameters", "audio", "embeddings")


def component_tabs(logdir: str) -> list[str]:
    """The tabs the log under ``logdir`` has data for, in :data:`TAB_ORDER` (all of it when unreadable or empty)."""
    try:
        from visualdl import LogReader  # heavy (~0.5 s with the read): only the server needs it

        have = LogReader(logdir=logdir).component_tabs(update=True)
    except Exception:  # an unreadable log: the server reports it; list every tab rather than fail here
        have = set()
    tabs = [t for t in TAB_ORDER if t in have]
    if not tabs:
        return list(TAB_ORDER)  # nothing logged yet: every tab, so what a run logs later has one
    return tabs if tabs[0] == "scalar" else ["scalar"] + tabs


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
        tabs: VisualDL tabs to show, the first is where the root address lands; None: the
            log's own (:func:`component_tabs`, SCALARS first).
    """

    def __init__(self, logdir: str, host: str = "127.0.0.1", port: int | None = None, language: str = "en",
                 start_timeout: float = 60.0, tabs: list[str] | None = None) -> None:
        if not os.path.isdir(logdir):
            raise UserError(f"{logdir}: no such log directory (pass a run directory or the output folder)")
        self.logdir = logdir
        self.host = host
        self.port = port or free_port(host)
        self.language = language
        self.start_timeout = start_timeout
        self.tabs = list(tabs) if tabs else component_tabs(logdir)
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
                "--language", self.language, "--component_tabs", *self.tabs]

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


def _save(page, path: str) -> None:
    """Full-page PNG at ``path``, written whole: a failed capture leaves an earlier file as it was."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.part.png"
    page.evaluate("window.scrollTo(0, 0)")  # clicking a group scrolls; the fixed navbar would land mid-picture
    try:
        page.screenshot(path=tmp, full_page=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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


# Per chart on the page: [title (the tag), loading spinner shown, points in its series]. The page's ECharts module
# is imported by its URL: modules are singletons per URL, so this is the instance the page draws with.
_CHARTS_JS = """async (base) => {
  const ec = await import(base + '/__snowpack__/pkg/echarts.js');
  return Array.from(document.querySelectorAll('[_echarts_instance_]')).map(div => {
    const chart = ec.getInstanceByDom(div);
    if (!chart) return [null, true, 0];
    const opt = chart.getOption() || {};
    const title = opt.title && opt.title[0] ? opt.title[0].text : null;
    const points = (opt.series || []).reduce((n, s) => n + (Array.isArray(s.data) ? s.data.length : 0), 0);
    return [title, !!chart._loadingFX, points];
  });
}"""
# Group headers in page order: elements whose whole text is a group name (the count beside it is a sibling).
_HEADERS_JS = """(names) => Array.from(document.querySelectorAll('body *'))
  .filter(e => e.children.length === 0 && names.includes(e.textContent.trim())).map(e => e.textContent.trim())"""


def _charts(page, base: str) -> list[tuple[str | None, bool, int]]:
    return [tuple(c) for c in page.evaluate(_CHARTS_JS, base)]


def scalar_page(server: VisualDLServer, screenshot: str | None = None, groups: tuple[str, ...] = ("train", "eval"),
                width: int = 1400, height: int = 900, timeout: float = 30.0, start: str = "/app/scalar",
                on_page: Callable[[Page], None] | None = None) -> dict:
    """Open the scalar page, open ``groups``, wait until their charts have drawn data, report what it shows.

    Args:
        server: a started :class:`VisualDLServer`.
        screenshot: PNG path for a full-page screenshot, taken only once every chart of
            ``groups`` has data (None: none).
        groups: tag groups to show; those not open on arrival are clicked open.
        width, height: viewport in CSS pixels.
        timeout: seconds to wait for the page and, then, for the charts.
        start: the address opened, ``/`` to check where the root address lands.
        on_page: called with the new page before it loads, e.g. to route its requests.

    Returns:
        dict with ``landing`` (URL path the page settled on), ``groups`` (group headers in page
        order), ``open_on_arrival`` (groups open before any click), ``tags`` (scalar tags whose
        data the page fetched, by run), ``charts`` ({tag: points drawn}) and ``screenshot``.

    Raises:
        UserError: the scalar page did not show, or a chart of ``groups`` was still loading or
            empty after ``timeout`` seconds (one line; no screenshot is written).
    """
    chromium, sync_playwright = _need_browser()
    base = urllib.parse.urlparse(server.url).path + "/app"
    listed = server.api("scalar/tags")
    all_tags = {t for run_tags in listed["tags"] for t in run_tags}
    names = sorted({t.split("/")[0] for t in all_tags}, key=str.upper)  # the page's own order
    want = {t for t in all_tags if t.split("/")[0] in groups}
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
            if on_page is not None:
                on_page(page)
            page.goto(server.url + start, wait_until="domcontentloaded")
            # Arrived once every group header is shown and the open group's charts carry their titles.
            deadline = time.time() + timeout
            headers, charts = [], []
            while time.time() < deadline:
                headers = page.evaluate(_HEADERS_JS, names)
                charts = _charts(page, base)
                if set(headers) >= set(names) and charts and all(c[0] for c in charts):
                    break
                page.wait_for_timeout(200)
            landing = urllib.parse.urlparse(page.url).path
            if not (set(headers) >= set(names) and charts):
                raise UserError(f"VisualDL page {server.url}{start}: no scalar charts after {timeout:.0f}s "
                                f"(landed on {landing}, group headers seen: {', '.join(headers) or 'none'})")
            opened = sorted({c[0].split("/")[0] for c in charts if c[0]}, key=str.upper)
            for g in groups:
                if g not in opened:
                    page.get_by_text(g, exact=True).first.click()
            deadline = time.time() + timeout
            while True:
                charts = [c for c in _charts(page, base) if c[0] in want]
                pending = {t for t in want if not any(c[0] == t and not c[1] and c[2] > 0 for c in charts)}
                if not pending or time.time() > deadline:
                    break
                page.wait_for_timeout(200)
            if pending:
                loading = sorted(t for t in pending if any(c[0] == t and c[1] for c in charts))
                empty = sorted(pending - set(loading))
                raise UserError(f"VisualDL page {server.url}{start}: {len(pending)} of {len(want)} charts of "
                                f"{' '.join(groups)} not drawn after {timeout:.0f}s (still loading: "
                                f"{', '.join(loading) or 'none'}; no data: {', '.join(empty) or 'none'}); "
                                f"no screenshot written")
            page.wait_for_timeout(400)  # ECharts animates a new series for 100 ms: let it finish
            if screenshot:
                _save(page, screenshot)
        finally:
            browser.close()
    return {"landing": landing, "groups": headers, "open_on_arrival": opened,
            "tags": {r: sorted(t) for r, t in fetched.items()}, "charts": {c[0]: c[2] for c in charts},
            "screenshot": screenshot}


def image_page(server: VisualDLServer, screenshot: str | None = None, width: int = 1400, height: int = 900,
               timeout: float = 30.0) -> dict:
    """Open the server's image (samples) page; report the images it displays with their natural size.

    Returns:
        dict with ``images``: [(src, width, height)] of the sample images drawn (the page
        shows them as blob URLs, decoded from the log), and ``screenshot``.

    Raises:
        UserError: no image drawn after ``timeout`` seconds (no screenshot is written).
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
            if not images:
                raise UserError(f"VisualDL page {server.url}/app/sample/image: no image drawn after {timeout:.0f}s; "
                                f"no screenshot written")
            if screenshot:
                _save(page, screenshot)
        finally:
            browser.close()
    return {"images": [tuple(i) for i in images], "screenshot": screenshot}


def screenshot(logdir: str, out: str, page: str = "scalar", groups: tuple[str, ...] | list[str] = ("train", "eval"),
               width: int = 1400, timeout: float = 30.0) -> PlotResult:
    """Serve ``logdir`` with VisualDL, open ``page`` in headless Chromium and save a full-page PNG.

    Args:
        logdir: a run directory or a folder of runs (each run is a line on every chart).
        out: the PNG to write (its folder is created).
        page: ``scalar`` (the curves, ``groups`` opened) or ``image`` (the samples page).
        groups: scalar tag groups to open, e.g. ``train eval``; a group the log does not have
            is a one-line error listing the groups it has.
        width: viewport width in CSS pixels (the height follows the page).
        timeout: seconds to wait for the page, then for its charts (images) to show data.

    Returns:
        :class:`utils.visual.common.PlotResult`: panels = charts with data (scalar) or images
        (image) shown.

    Raises:
        UserError: no such directory, nothing of ``page`` in the log, or the charts (images)
            still loading or empty after ``timeout``; ``out`` is then not written.
    """
    _need_browser()
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
            seen = scalar_page(server, out, tuple(groups), width=width, timeout=timeout)
            panels = len(seen["charts"])
            notes.append(f"{len(tags['runs'])} run(s): " + ", ".join(tags["runs"]))
        else:
            if not server.api("image/tags")["runs"]:
                raise UserError(f"{logdir}: no VisualDL images in it (VisualDL.sample_images > 0 logs them)")
            seen = image_page(server, out, width=width, timeout=timeout)
            panels = len(seen["images"])
    with Image.open(out) as im:
        size = im.size
    return PlotResult(out, size, panels, notes)
