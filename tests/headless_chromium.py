"""Open pages in headless Chromium (Debian's `chromium` package) over the Chrome DevTools protocol and
report what a reader would see go wrong: failed or off-site requests, images that did not load, raw `$…$`
left in headings, links to pages or anchors that do not exist.

The protocol is spoken directly over a WebSocket (websocket-client, already a Jupyter dependency), so the
check needs no browser-automation package. Off-site requests are made to fail (`--host-resolver-rules`)
and reported, so a page that works only online fails here too.
"""
from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import websocket

IN_PAGE = ("data:", "blob:", "about:")
"""URL schemes whose content is in the page itself: never a request that can fail or leave the site."""

BROWSER_OWN = ("/favicon.ico",)
"""Paths the browser asks every origin for by itself, whatever the page says: not the page's requests."""

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")

MATH_SETTLED = """(() => {
  if (!window.MathJax || !MathJax.Hub) return true;          // a page without math
  const q = MathJax.Hub.queue;
  return MathJax.isReady === true && q.pending === 0 && q.running === 0;
})()"""

PAGE_REPORT = """(() => ({
  broken_images: Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
  raw_math_headings: Array.from(document.querySelectorAll('h1,h2,h3,h4,h5,h6'))
      .map(h => h.innerText.trim()).filter(t => /\\$[^$]+\\$/.test(t)),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
}))()"""


def find_chromium() -> str:
    """The Chromium executable, or an AssertionError saying how to install it (never a silent skip)."""
    for name in CHROMIUM_NAMES:
        if path := shutil.which(name):
            return path
    raise AssertionError("headless Chromium is missing: install Debian's package "
                         "(`apt-get install -y chromium`; .ci/run does this in CI)")


@dataclass
class PageReport:
    """What went wrong on one page."""
    url: str
    """The page."""
    failed_requests: list[str] = field(default_factory=list)
    """'URL (reason)' for each request that failed, returned ≥ 400, or left the site."""
    broken_images: list[str] = field(default_factory=list)
    """<img> sources that did not load."""
    raw_math_headings: list[str] = field(default_factory=list)
    """Headings whose text still holds `$…$` after MathJax finished."""
    links: list[str] = field(default_factory=list)
    """Every link's resolved href (checked against the files by `broken_links`)."""


class SiteServer:
    """A static HTTP server for a folder on 127.0.0.1, in a thread (a context manager)."""

    def __init__(self, root: Path):
        handler = functools.partial(_QuietHandler, directory=str(root))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base = f"http://127.0.0.1:{self._server.server_port}/"

    def __enter__(self) -> "SiteServer":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # failures are read from the browser, not from stderr
        pass


class Chromium:
    """One headless Chromium with one tab, driven over the DevTools protocol (a context manager)."""

    def __init__(self, timeout_s: float = 30.0):
        self.timeout_s = timeout_s
        self._profile = tempfile.mkdtemp(prefix="cgt-chromium-")
        self._process = subprocess.Popen(
            [find_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", "--remote-debugging-port=0", "--remote-allow-origins=*",
             f"--user-data-dir={self._profile}",
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._next_id = 0
        self._events: list[dict] = []
        self._socket = websocket.create_connection(self._page_socket_url(), timeout=self.timeout_s)
        self.call("Network.enable")
        self.call("Page.enable")
        self.call("Network.setCacheDisabled", cacheDisabled=True)

    def _page_socket_url(self) -> str:
        port_file = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout_s
        while not port_file.exists() or not port_file.read_text().strip():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("headless Chromium did not start (no DevToolsActivePort)")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as response:
            targets = json.load(response)
        return next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc) -> None:
        self._socket.close()
        self._process.terminate()
        self._process.wait(timeout=10)
        shutil.rmtree(self._profile, ignore_errors=True)

    def call(self, method: str, **params) -> dict:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        self._socket.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv())
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._events.append(message)

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def _drain(self, seconds: float) -> None:
        """Collect events for `seconds` (requests started late, e.g. MathJax's fonts)."""
        self._socket.settimeout(seconds)
        try:
            while True:
                self._events.append(json.loads(self._socket.recv()))
        except websocket.WebSocketTimeoutException:
            pass
        finally:
            self._socket.settimeout(self.timeout_s)

    def check_page(self, url: str, origin: str) -> PageReport:
        """Load `url`, wait for the load event and for MathJax to finish, and report."""
        self._events.clear()
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + self.timeout_s
        while not any(e.get("method") == "Page.loadEventFired" for e in self._events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not finish loading in {self.timeout_s:.0f} s")
            self._drain(0.2)
        while not self.evaluate(MATH_SETTLED):
            if time.monotonic() > deadline:
                raise TimeoutError(f"MathJax did not finish typesetting {url} in {self.timeout_s:.0f} s")
            self._drain(0.2)
        self._drain(0.5)
        report = PageReport(url=url, **self.evaluate(PAGE_REPORT))
        report.failed_requests = failed_requests(self._events, origin)
        return report


def failed_requests(events: list[dict], origin: str) -> list[str]:
    """'URL (reason)' for each request in a DevTools event log that failed, answered ≥ 400, or went
    anywhere but `origin` (data:, blob: and about: URLs are in the page itself)."""
    urls = {e["params"]["requestId"]: e["params"]["request"]["url"]
            for e in events if e.get("method") == "Network.requestWillBeSent"}
    urls = {request_id: url for request_id, url in urls.items()
            if not url.startswith(IN_PAGE) and urllib.parse.urlparse(url).path not in BROWSER_OWN}
    failed = []
    for request_id, url in urls.items():
        if not url.startswith(origin):
            failed.append(f"{url} (off-site)")
    for e in events:
        params = e.get("params", {})
        if e.get("method") == "Network.loadingFailed" and params["requestId"] in urls and not params.get("canceled"):
            failed.append(f"{urls.get(params['requestId'], '?')} ({params.get('errorText')})")
        elif e.get("method") == "Network.responseReceived" and params["requestId"] in urls \
                and params["response"]["status"] >= 400:
            failed.append(f"{params['response']['url']} (HTTP {params['response']['status']})")
    return sorted(set(failed))


def broken_links(links: list[str], origin: str, site: Path) -> list[str]:
    """The links among `links` that point into the site (`origin`, served from the folder `site`) at a
    file that does not exist, or at an anchor that its page does not have."""
    broken = []
    for link in links:
        if not link.startswith(origin):
            continue
        parsed = urllib.parse.urlparse(link)
        path = site / urllib.parse.unquote(parsed.path).lstrip("/")
        if path.is_dir():
            path = path / "index.html"
        if not path.is_file():
            broken.append(f"{link} (no such file)")
        elif parsed.fragment and path.suffix == ".html":
            anchor = urllib.parse.unquote(parsed.fragment)
            text = path.read_text(errors="replace")
            if f'id="{anchor}"' not in text and f'id="{parsed.fragment}"' not in text:
                broken.append(f"{link} (no such anchor)")
    return broken
