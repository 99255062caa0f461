"""Debian's headless Chromium driven over the DevTools protocol, with axe-core's WCAG checks.

Why this driver: Chromium's own `--remote-debugging-pipe` transport (the one Puppeteer uses):
JSON messages separated by NUL bytes on file descriptors 3 (commands) and 4 (answers and
events). It needs no chromedriver whose version must match the browser's, no websocket
library and no open debugging port (nothing listens, not even on loopback); the protocol is
Chromium's own, documented and kept by its authors. axe-core comes from the npm registry
(`scripts/lab install` puts the pinned version under the venv: AXE_JS).

    with Browser(tmp_path / "profile", host_rules="MAP portal.test 10.0.0.5") as browser:
        browser.goto("https://portal.test/", width=375)
        bad = [v for v in browser.axe() if v.impact in SERIOUS]
        browser.screenshot(tmp_path / "home-375.png")
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

#: axe-core pinned for the tests (scripts/lab install fetches exactly this one)
AXE_VERSION = "4.14.1"
AXE_JS = Path(
    os.environ.get("KALLIKRATIS_AXE_JS")
    or Path(sys.prefix) / "npm" / "node_modules" / "axe-core" / "axe.min.js"
)
#: the WCAG 2.1 AA rule sets
WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
SERIOUS = ("serious", "critical")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # the suite runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
]


class BrowserError(RuntimeError):
    """The browser failed, timed out, or a page did not load."""


@dataclass(frozen=True)
class Violation:
    id: str
    impact: str
    help: str
    targets: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.impact} {self.id}: {self.help} at {', '.join(self.targets[:5])}"


def axe_source() -> str:
    if not AXE_JS.is_file():
        raise BrowserError(
            f"axe-core is not installed at {AXE_JS}: run scripts/lab install "
            f"(npm install axe-core@{AXE_VERSION}) or set KALLIKRATIS_AXE_JS"
        )
    return AXE_JS.read_text(encoding="utf-8")


class Browser:
    """One headless Chromium with one tab; a context manager that always stops the browser."""

    def __init__(
        self,
        profile: Path,
        *,
        host_rules: str = "",
        env: dict[str, str] | None = None,
        timeout: float = 60.0,
        chromium: str = "chromium",
        extra_flags: list[str] | None = None,
    ) -> None:
        self.timeout = timeout
        profile.mkdir(parents=True, exist_ok=True)
        argv = [chromium, *CHROMIUM_FLAGS, *(extra_flags or []), f"--user-data-dir={profile}"]
        if host_rules:
            argv.append(f"--host-resolver-rules={host_rules}")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # above 2..4, so that the child's dup2 to 3 and 4 cannot overwrite one with the other
        cmd_fd = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
        out_fd = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
        for fd in (to_browser_r, from_browser_w):
            os.close(fd)

        def fds_3_and_4() -> None:
            os.dup2(cmd_fd, 3)
            os.dup2(out_fd, 4)

        self._proc = subprocess.Popen(
            [*argv, "about:blank"],
            # kept open after preexec_fn (which runs before the child closes other fds)
            pass_fds=(3, 4, cmd_fd, out_fd),
            preexec_fn=fds_3_and_4,  # noqa: PLW1509 (single-threaded test process)
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        os.close(cmd_fd)
        os.close(out_fd)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        self._session = ""
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)
            attached = self.call(
                "Target.attachToTarget",
                {"targetId": target["targetId"], "flatten": True},
                session=False,
            )
            self._session = attached["sessionId"]
            self.call("Page.enable")
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ the protocol

    def _send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._to_browser, data) :]

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"no answer from chromium within {self.timeout:.0f} s")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise BrowserError(f"chromium exited: {self._stderr_tail()}")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return dict(json.loads(raw))

    def call(
        self, method: str, params: dict[str, Any] | None = None, *, session: bool = True
    ) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self._session
        self._send(message)
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._receive(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error'].get('message')}")
                return dict(answer.get("result", {}))
            if "method" in answer:
                self._events.append(answer)

    def wait_for(self, event: str, timeout: float | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for i, seen in enumerate(self._events):
                if seen.get("method") == event:
                    return dict(self._events.pop(i).get("params", {}))
            self._events.append(self._receive(deadline))

    # ------------------------------------------------------------------ pages

    def goto(self, url: str, *, width: int = 1280, height: int = 900) -> None:
        """Load *url* in a window *width* px wide (below 600: as a phone) and wait for it."""
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
        )
        self._events = [e for e in self._events if e.get("method") != "Page.loadEventFired"]
        result = self.call("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"{url}: {result['errorText']}")
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str, *, await_promise: bool = False) -> Any:
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": await_promise},
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"JavaScript error: {text}")
        return result.get("result", {}).get("value")

    def axe(self, tags: list[str] | None = None) -> list[Violation]:
        """axe-core's violations of the loaded page (WCAG 2.1 A and AA rules by default)."""
        if not self.evaluate("typeof window.axe === 'object'"):
            self.evaluate(axe_source())
        options = json.dumps({"runOnly": {"type": "tag", "values": tags or WCAG_AA}})
        found = self.evaluate(
            f"axe.run(document, {options}).then(r => JSON.stringify(r.violations.map(v => "
            "({id: v.id, impact: v.impact || '', help: v.help, "
            "targets: v.nodes.map(n => n.target.join(' '))}))))",
            await_promise=True,
        )
        return [
            Violation(v["id"], v["impact"], v["help"], tuple(v["targets"]))
            for v in json.loads(found)
        ]

    def screenshot(self, path: Path, *, full_page: bool = True) -> None:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params["captureBeyondViewport"] = True
            params["clip"] = {
                "x": 0,
                "y": 0,
                "width": size["width"],
                "height": min(size["height"], 8000),
                "scale": 1,
            }
        data = self.call("Page.captureScreenshot", params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    # ------------------------------------------------------------------ lifetime

    def _stderr_tail(self) -> str:
        if self._proc.poll() is None or self._proc.stderr is None:
            return ""
        return self._proc.stderr.read().decode(errors="replace")[-2000:]

    def close(self) -> None:
        with_fds = [fd for fd in (self._to_browser, self._from_browser) if fd >= 0]
        if self._proc.poll() is None:
            try:  # a clean exit first: the profile is then written completely
                self._send({"id": 0, "method": "Browser.close", "params": {}})
                self._proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait(10)
        for fd in with_fds:
            os.close(fd)
        self._to_browser = self._from_browser = -1
        if self._proc.stderr is not None:
            self._proc.stderr.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
