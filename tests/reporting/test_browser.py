"""report.html opened in a real browser: headless Chromium driven over the DevTools protocol.

A small run (tiny network, fake Fashion-MNIST, one epoch) goes through `bofexits train`,
`sweep`, `compare` and `report`, which renders report.html. Chromium then loads the file
with the network cut off and is asked, over `--remote-debugging-pipe` (NUL-separated JSON on
file descriptors 3 and 4: no websocket, no port), for what it saw:

* no uncaught exception, console error or failed load;
* no request other than the file itself and its `data:` images (the page is self-contained);
* one <table> per markdown table, each row as wide as its header;
* every <img> decoded at the size of the PNG it embeds, and painted: its region of a
  full-page screenshot is not blank.

A broken page (an error, an undecodable image, a remote image) must fail the same checks.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import io
import json
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageStat

from bofexits.cli import main

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",  # root in a container: Chromium's sandbox needs user namespaces
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # small /dev/shm in containers
    "--host-resolver-rules=MAP * ~NOTFOUND",  # no name resolves: nothing leaves the machine
    "--hide-scrollbars",
    "--window-size=1200,900",
]
TIMEOUT_S = 30.0  # per DevTools reply; the whole page loads in about a second

# Read back from the page once it has loaded.
PROBE = """JSON.stringify({
  title: document.title,
  tables: Array.from(document.querySelectorAll('table')).map(t => ({
    head: t.querySelectorAll('thead th').length,
    rows: Array.from(t.querySelectorAll('tbody tr')).map(r => r.children.length)})),
  images: Array.from(document.images).map(i => {
    const r = i.getBoundingClientRect();
    return {alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight,
            x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height};
  }),
  page: [document.documentElement.scrollWidth, document.documentElement.scrollHeight],
  text: document.body.innerText.length})"""


@dataclass
class PageVisit:
    """What Chromium reported about one page."""

    probe: dict[str, Any]
    screenshot: Image.Image
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


class DevTools:
    """The DevTools protocol over Chromium's `--remote-debugging-pipe`."""

    def __init__(self, write_fd: int, read_fd: int) -> None:
        self.write_fd, self.read_fd = write_fd, read_fd
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.read_fd], [], [], max(left, 0.0))
            if not ready:
                raise TimeoutError(f"Chromium sent nothing for {TIMEOUT_S:.0f} s")
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                raise EOFError("Chromium closed the DevTools pipe (it exited)")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)  # type: ignore[no-any-return]

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            reply = self._receive(deadline)
            if reply.get("id") != self.next_id:
                self.events.append(reply)
            elif "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            else:
                return reply.get("result", {})

    def wait_for(self, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT_S
        seen = [e for e in self.events if e.get("method") == method]
        while not seen:
            event = self._receive(deadline)
            self.events.append(event)
            if event.get("method") == method:
                seen.append(event)
        return seen[0]


def _high_fd(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_DUPFD, 10)  # out of the way of 3 and 4


@contextmanager
def chromium() -> Iterator[DevTools]:
    """A headless Chromium with a throw-away profile, in its own process group; always stopped on exit."""
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()
    child_fds = (_high_fd(to_chrome_r), _high_fd(from_chrome_w))
    for fd in (to_chrome_r, from_chrome_w):
        os.close(fd)

    def pipes_on_3_and_4() -> None:  # runs in the child before exec
        os.dup2(child_fds[0], 3)
        os.dup2(child_fds[1], 4)

    with tempfile.TemporaryDirectory(prefix="bofexits-chromium-") as profile:
        log = Path(profile) / "stderr.log"
        with log.open("wb") as stderr:
            profile_flags = [f"--user-data-dir={profile}/user", "--remote-debugging-pipe", "about:blank"]
            proc = subprocess.Popen(
                [CHROMIUM, *FLAGS, *profile_flags],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                pass_fds=(3, 4),
                preexec_fn=pipes_on_3_and_4,
                start_new_session=True,  # its own process group: renderers go down with it
                env={**os.environ, "HOME": profile, "XDG_CONFIG_HOME": profile, "XDG_CACHE_HOME": profile},
            )
        for fd in child_fds:
            os.close(fd)
        try:
            yield DevTools(to_chrome_w, from_chrome_r)
        except (TimeoutError, EOFError) as exc:
            tail = log.read_text(errors="replace")[-2000:]
            raise AssertionError(f"{exc}; Chromium's stderr ends with:\n{tail}") from exc
        finally:
            try:
                os.write(to_chrome_w, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
                proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError):  # renderers left over, in the group started here
                os.killpg(proc.pid, signal.SIGKILL)
            os.close(to_chrome_w)
            os.close(from_chrome_r)


def visit(path: Path) -> PageVisit:
    """Load `path` in headless Chromium; collect errors, requests, the page's probe and a screenshot."""
    with chromium() as browser:
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.call(f"{domain}.enable", session=session)
        browser.call("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired")
        result = browser.call(
            "Runtime.evaluate", {"expression": PROBE, "returnByValue": True}, session=session
        )["result"]
        probe = json.loads(result["value"])
        width, height = probe["page"]
        shot = browser.call(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            },
            session=session,
        )
        events = browser.events
    out = PageVisit(probe, Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB"))
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            out.errors.append(
                f"uncaught: {details.get('exception', {}).get('description') or details['text']}"
            )
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            out.errors.append(
                "console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            )
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            out.errors.append(f"log: {params['entry']['text']} {params['entry'].get('url', '')}")
        elif method == "Network.loadingFailed":
            out.errors.append(f"failed load: {params['errorText']}")
        elif method == "Network.requestWillBeSent":
            out.requests.append(params["request"]["url"])
    return out


def problems(page: PageVisit, html_path: Path) -> list[str]:
    """Everything wrong with a visit, as readable lines (empty: the page is fine)."""
    found = list(page.errors)
    own = html_path.resolve().as_uri()
    found += [f"request to {u[:80]}" for u in page.requests if u != own and not u.startswith("data:")]
    for i, img in enumerate(page.probe["images"]):
        name = img["alt"] or f"image {i + 1}"
        if not (img["complete"] and img["width"] > 0 and img["height"] > 0):
            found.append(f"{name}: not decoded")
            continue
        box = (round(img["x"]), round(img["y"]), round(img["x"] + img["w"]), round(img["y"] + img["h"]))
        region = page.screenshot.crop(box)
        if region.width < 10 or region.height < 10 or max(ImageStat.Stat(region).stddev) < 5:
            found.append(f"{name}: blank or not painted on screen ({box})")
    return found


# --- a real report --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, write_fake_data: Callable[..., Path]) -> Path:
    """report.html of a one-epoch run, with the knob sweep and the policy comparison, made as a user would."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(
            f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium (apt-get, as root); "
            "without it report.html is not opened in a browser"
        )
    root = tmp_path_factory.mktemp("browser")
    data = str(write_fake_data(root / "data", n_train=200, n_test=60))
    run = root / "run"
    tiny = ["--mode", "joint", "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--threads", "1"]
    tiny += ["--widths", "4", "8", "8", "16", "--codewords", "8"]  # a small vgg28
    timing = ["--timing-samples", "4", "--timing-rounds", "1", "--threads", "1"]
    ckpt = str(run / "checkpoint.pt")
    for argv in (
        ["train", "--data-dir", data, "--out", str(run), *tiny],
        ["sweep", ckpt, "--data-dir", data, "--betas", "0", "0.5", "1", *timing],
        ["compare", ckpt, "--data-dir", data, "--points", "11", "--timed-points", "2", *timing],
        ["report", str(run)],
    ):
        assert main(["-q", *argv]) == 0, argv
    return run / "report.html"


@pytest.fixture(scope="module")
def page(report: Path) -> PageVisit:
    return visit(report)


def test_report_loads_without_errors_or_requests(page: PageVisit, report: Path) -> None:
    assert page.errors == [], page.errors
    own = report.resolve().as_uri()
    assert page.requests[0] == own
    assert [u for u in page.requests if u != own and not u.startswith("data:")] == []
    assert page.probe["title"].startswith("bofexits report")
    assert page.probe["text"] > 1000


def test_every_table_is_rendered_and_rectangular(page: PageVisit, report: Path) -> None:
    markdown = (report.parent / "report.md").read_text()
    md_tables = len(re.findall(r"(?m)^\|[-|]+\|$", markdown))  # one separator row per table
    tables = page.probe["tables"]
    assert len(tables) == md_tables > 0
    for t in tables:
        assert t["rows"] and all(cells == t["head"] for cells in t["rows"]), t


def test_every_plot_is_decoded_at_its_size_and_painted(page: PageVisit, report: Path) -> None:
    linked = re.findall(r"(?m)^!\[.*\]\((.+\.png)\)$", (report.parent / "report.md").read_text())
    images = page.probe["images"]
    assert len(images) == len(linked) >= 5  # the sweep's 2 plots and the comparison's 3
    for img, name in zip(images, linked, strict=True):
        with Image.open(report.parent / name) as png:
            assert (img["width"], img["height"]) == png.size, name
    assert problems(page, report) == []
    assert max(ImageStat.Stat(page.screenshot).stddev) > 20  # the page as a whole is not blank


def test_the_checks_catch_a_broken_page(tmp_path: Path) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM}")
    buf = io.BytesIO()
    drawn = Image.new("RGB", (40, 30), (200, 30, 30))
    drawn.paste((30, 30, 200), (20, 0, 40, 30))  # two colours: painted, not blank
    drawn.save(buf, "PNG")
    good = base64.b64encode(buf.getvalue()).decode()
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><head><title>t</title></head><body><table><tr><td>1</td></tr></table>"
        f'<img alt="good" src="data:image/png;base64,{good}">'
        '<img alt="truncated" src="data:image/png;base64,iVBORw0KGgo=">'
        '<img alt="remote" src="http://example.invalid/plot.png">'
        "<script>console.error('boom')</script><script>notDefined()</script></body></html>"
    )
    found = problems(visit(bad), bad)
    assert any("boom" in f for f in found), found
    assert any(f.startswith("uncaught") and "notDefined" in f for f in found), found
    assert any("request to http://example.invalid" in f for f in found), found
    assert "truncated: not decoded" in found and "remote: not decoded" in found
    assert not any(f.startswith("good") for f in found), found
