"""A headless Chromium driven over the DevTools protocol, for testing the HTML viewer.

Debian's `chromium` package plus the small `websocket-client` library: no browser download,
no node. In CI (the `CI` variable set) a missing Chromium is a failure, not a skip.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_or_skip() -> str:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    message = "headless Chromium not found (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(message + "; .ci/run installs it")
    pytest.skip(message)


class Browser:
    """One headless Chromium with one page; `evaluate` runs JavaScript, `screenshot` returns
    an (H, W, 3) uint8 array."""

    def __init__(self, executable: str, width: int = 1400, height: int = 900):
        import websocket

        self.profile = tempfile.mkdtemp(prefix="amoseg-chromium-")
        self.proc = subprocess.Popen(
            [
                executable, "--headless", "--no-sandbox", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
                "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
                f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
                "--force-device-scale-factor=1", "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        port = self._port()
        deadline = time.monotonic() + 30
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page"]
            if pages or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        # no Origin header: Chromium refuses DevTools connections from other origins
        url = pages[0]["webSocketDebuggerUrl"]
        self.ws = websocket.create_connection(url, timeout=30, suppress_origin=True)
        self.ids = itertools.count(1)

    def _port(self) -> int:
        marker = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}")
            if marker.exists():
                lines = marker.read_text().split()
                if lines:
                    return int(lines[0])
            time.sleep(0.1)
        raise RuntimeError("chromium did not open its DevTools port within 30 s")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def open(self, path: Path, timeout: float = 30.0) -> str:
        """Load a file and wait until the viewer says it is ready (or failed)."""
        self.send("Page.enable")
        self.send("Page.navigate", url=path.resolve().as_uri())
        deadline = time.monotonic() + timeout
        state = "0"
        while time.monotonic() < deadline:
            state = self.evaluate("document.body ? document.body.dataset.ready : '0'")
            if state not in ("0", None):
                return state
            time.sleep(0.1)
        return state

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def box(self, selector: str) -> tuple[float, float, float, float]:
        """(x, y, width, height) of an element in the viewport's CSS pixels."""
        return tuple(
            self.evaluate(
                f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                ".getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })()"
            )
        )

    def _mouse(self, selector: str, fx: float, fy: float, **event: Any) -> None:
        x, y, w, h = self.box(selector)
        self.send("Input.dispatchMouseEvent", x=x + fx * w, y=y + fy * h, **event)

    def wheel(self, selector: str, delta_y: float, shift: bool = False) -> None:
        """One real wheel notch over the element's centre (negative = away from the user)."""
        self._mouse(selector, 0.5, 0.5, type="mouseWheel", deltaX=0, deltaY=delta_y,
                    modifiers=8 if shift else 0)  # fmt: skip

    def click(self, selector: str, fx: float, fy: float) -> None:
        """A real left click at the fractions (fx, fy) of the element's width and height."""
        for kind in ("mousePressed", "mouseReleased"):
            self._mouse(selector, fx, fy, type=kind, button="left", clickCount=1)

    def screenshot(self, selector: str | None = None) -> np.ndarray:
        from PIL import Image

        params: dict[str, Any] = {"format": "png"}
        if selector is not None:
            box = self.box(selector)
            params["clip"] = {"x": box[0], "y": box[1], "width": box[2], "height": box[3],
                              "scale": 1}  # fmt: skip
        data = base64.b64decode(self.send("Page.captureScreenshot", **params)["data"])
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            shutil.rmtree(self.profile, ignore_errors=True)


def colour_share(pixels: np.ndarray, rgb: tuple[int, int, int], tol: int = 3) -> float:
    """Share of the screenshot's pixels that show exactly `rgb` (± tol per channel)."""
    close = np.abs(pixels.astype(int) - np.asarray(rgb)).max(axis=-1) <= tol
    return float(close.mean())
