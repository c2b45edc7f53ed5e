"""Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`),
for the tests and the bench of `xai report`.

Why not selenium: the registry's only selenium (4.52) requires a certifi release the
registry lacks, so `pip install selenium` fails here; the protocol over a pipe needs only
the `chromium` package and the standard library, and reports every network request and
console message, which is what the page tests check.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--disable-extensions", "--mute-audio", "--remote-debugging-pipe"]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(RuntimeError):
    pass


class Browser:
    """One headless Chromium with a fresh profile; `open` gives a Page."""

    def __init__(self, timeout: float = 30.0):
        exe = chromium_path()
        if exe is None:
            raise BrowserError("chromium is not installed (Debian: apt-get install chromium)")
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="xai-chromium-")
        self._log = open(Path(self.profile) / "stderr.log", "wb")     # a file: an unread pipe would fill and block
        to_child_r, self._w = os.pipe()       # we write, Chromium reads fd 3
        self._r, from_child_w = os.pipe()     # Chromium writes fd 4, we read

        def fds():
            # The protocol pipe is fds 3 and 4 of Chromium. Moved out of the way first, so neither
            # end overwrites the other; dup2 makes them inheritable (Python's own fds are not, so
            # nothing else leaks: no close_fds, whose pass_fds would need fds 3 and 4 to exist here).
            a = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                     close_fds=False, preexec_fn=fds, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self._log)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []
        try:
            self.call("Browser.getVersion")
        except BrowserError as exc:
            self.close()
            raise BrowserError(f"chromium did not start: {exc}") from None

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        try:
            os.write(self._w, json.dumps(msg).encode() + b"\0")
        except OSError as exc:
            raise BrowserError(f"{method}: {exc}") from None
        reply = self._until(lambda m: m.get("id") == self._id, self.timeout, method)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def pump(self, seconds: float) -> None:
        """Read events for a while (they are kept in self.events)."""
        try:
            self._until(lambda m: False, seconds, "")
        except TimeoutError:
            pass

    def _until(self, done, timeout: float, what: str) -> dict:
        end = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" not in msg:
                    self.events.append(msg)
                if done(msg):
                    return msg
            left = end - time.monotonic()
            if left <= 0:
                if what:
                    raise BrowserError(f"{what}: no answer in {timeout:g} s")
                raise TimeoutError
            ready, _, _ = select.select([self._r], [], [], left)
            if ready:
                data = os.read(self._r, 1 << 20)
                if not data:
                    err = (Path(self.profile) / "stderr.log").read_bytes().decode(errors="replace")[-2000:]
                    raise BrowserError(f"chromium closed the pipe ({what}): {err}")
                self._buf += data

    def open(self, url: str, width: int = 1280, height: int = 900) -> "Page":
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        for domain in ("Page", "Runtime", "Network", "Log"):
            page.call(f"{domain}.enable")
        page.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        page.goto(url)
        return page

    def close(self) -> None:
        for fd in (self._w, self._r):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Page:
    def __init__(self, browser: Browser, session: str):
        self.browser, self.session = browser, session

    def call(self, method: str, params: dict | None = None) -> dict:
        return self.browser.call(method, params, self.session)

    def goto(self, url: str, timeout: float = 30.0) -> None:
        start = len(self.browser.events)
        self.call("Page.navigate", {"url": url})
        end = time.monotonic() + timeout
        while not any(e.get("method") == "Page.loadEventFired" and e.get("sessionId") == self.session
                      for e in self.browser.events[start:]):
            if time.monotonic() > end:
                raise BrowserError(f"{url}: no load event in {timeout:g} s")
            self.browser.pump(0.05)

    def eval(self, expression: str, timeout: float | None = None) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}: {result['exceptionDetails'].get('exception', {}).get('description')}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 10.0) -> Any:
        end = time.monotonic() + timeout
        while True:
            value = self.eval(expression)
            if value:
                return value
            if time.monotonic() > end:
                raise BrowserError(f"timed out waiting for {expression}")
            self.browser.pump(0.05)

    def settle(self) -> None:
        """Two animation frames, and every image in the window loaded (lazy ones out of it are not)."""
        self.eval("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        self.wait_for("Array.prototype.every.call(document.images, i => { const b = i.getBoundingClientRect();"
                      " return i.complete || b.top > innerHeight || b.left > innerWidth || b.bottom < 0"
                      " || b.right < 0; })")

    def click(self, selector: str) -> None:
        """A real mouse click (pressed and released) at the middle of the element."""
        box = self.eval(f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
            if (!e) return null; e.scrollIntoView({{block: 'center'}});
            const b = e.getBoundingClientRect(); return [b.left + b.width / 2, b.top + b.height / 2]; }})()""")
        if box is None:
            raise BrowserError(f"no element {selector}")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left",
                                                   "clickCount": 1})
        self.settle()

    def type(self, selector: str, text: str) -> None:
        self.eval(f"document.querySelector({json.dumps(selector)}).focus()")
        self.call("Input.insertText", {"text": text})

    def screenshot(self, path: str | Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    # -- what the page did ----------------------------------------------------------------
    def _events(self, method: str) -> list[dict]:
        return [e["params"] for e in self.browser.events if e.get("method") == method
                and e.get("sessionId") == self.session]

    def requests(self) -> list[str]:
        return [e["request"]["url"] for e in self._events("Network.requestWillBeSent")]

    def failed_requests(self) -> list[str]:
        return [f"{e.get('errorText')}" for e in self._events("Network.loadingFailed")]

    def console_errors(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions, and the browser's own error log (a missing file)."""
        out = [json.dumps(e.get("args")) for e in self._events("Runtime.consoleAPICalled")
               if e.get("type") in ("error", "warning", "assert")]
        out += [e["exceptionDetails"].get("exception", {}).get("description", "exception")
                for e in self._events("Runtime.exceptionThrown")]
        out += [e["entry"].get("text", "") for e in self._events("Log.entryAdded")
                if e["entry"].get("level") in ("error", "warning")]
        return out
