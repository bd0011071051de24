"""A ``chromium`` for ../shared/tools/sandbox-e2e/run.sh that looks at the page at 1280×800.

Test tooling (standard library only), run as a script through a ``chromium`` shim that the
Sandbox test puts first on run.sh's PATH; ../shared is not changed. It passes run.sh's own flags
through — loopback-only host rules, no proxy, background networking off, net logs — and changes
two things:

- every run uses a 1280×800 window instead of 1600×1000;
- the ``--dump-dom`` run is driven over the DevTools protocol (``--remote-debugging-pipe``): it
  waits until the first card's summary is on the page, measures the first card's summary, its
  suggestion button and its explanation link (``$CARDS_PROBE_OUT``), takes the 1280×800
  screenshot of the live page (``$CARDS_SCREENSHOT``), and prints the DOM as ``--dump-dom`` would.

``$REAL_CHROMIUM`` is the browser; ``$CARDS_SUMMARY`` the summary to wait for; ``$CARDS_BUTTON``
and ``$CARDS_LINK`` the labels of the suggestion and the explanation link.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from typing import Any

WINDOW = "--window-size=1280,800"
PROBE = """(() => {
  const vh = window.innerHeight, vw = window.innerWidth;
  const box = el => { if (!el) return null; const b = el.getBoundingClientRect();
    return {top: b.top, bottom: b.bottom, left: b.left, right: b.right,
            text: (el.innerText || '').trim().slice(0, 300),
            inView: b.height > 0 && b.top >= 0 && b.bottom <= vh && b.left >= 0 && b.right <= vw}; };
  const text = el => (el.innerText || '').trim();
  const all = [...document.querySelectorAll('*')];
  const summary = all.find(el => el.children.length === 0 && text(el) === SUMMARY) || null;
  let card = summary;
  while (card && card.parentElement && !(card.className || '').toString().includes('decision-card')) {
    card = card.parentElement; }
  const inCard = card ? [...card.querySelectorAll('button, a')] : [];
  const button = BUTTON ? inCard.find(el => text(el) === BUTTON) || null : null;
  const link = inCard.find(el => text(el) === LINK) || null;
  const cards = [...document.querySelectorAll('[class*=decision-card]')];
  return JSON.stringify({viewport: [vw, vh], scrollY: window.scrollY,
    firstCardIsThisOne: cards.length > 0 && cards[0] === card,
    summary: box(summary), button: box(button), link: box(link), card: box(card)});
})()"""


class Pipe:
    """The DevTools protocol over --remote-debugging-pipe (fd 3 in, fd 4 out; NUL-separated JSON)."""

    def __init__(self, write_fd: int, read_fd: int) -> None:
        self.write_fd, self.read_fd = write_fd, read_fd
        self.buffer = b""
        self.next_id = 0

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self.buffer:
                chunk = os.read(self.read_fd, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium closed the pipe during {method}")
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def evaluate(self, expression: str, session: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session)
        return result.get("result", {}).get("value")


def drive(real: str, args: list[str]) -> int:
    url = args[-1]
    flags = [a for a in args[:-1] if a != "--dump-dom" and not a.startswith("--virtual-time-budget")]
    to_chromium_read, to_chromium_write = os.pipe()
    from_chromium_read, from_chromium_write = os.pipe()
    command = ["bash", "-c", f'exec "$0" "$@" 3<&{to_chromium_read} 4>&{from_chromium_write}', real,
               *flags, "--remote-debugging-pipe", "about:blank"]  # fmt: skip
    browser = subprocess.Popen(command, pass_fds=(to_chromium_read, from_chromium_write))
    os.close(to_chromium_read)
    os.close(from_chromium_write)
    pipe = Pipe(to_chromium_write, from_chromium_read)
    try:
        target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        pipe.call("Emulation.setDeviceMetricsOverride",
                  {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False}, session)  # fmt: skip
        pipe.call("Page.enable", {}, session)
        pipe.call("Page.navigate", {"url": url}, session)
        summary = os.environ.get("CARDS_SUMMARY", "")
        deadline = time.monotonic() + 90
        found = False
        while time.monotonic() < deadline and not found:
            found = bool(
                pipe.evaluate(
                    f"document.body && document.body.innerText.includes({json.dumps(summary)})", session
                )
            )
            time.sleep(0.5)
        time.sleep(1.5)  # let the card list settle (fonts, the second service call)
        probe = (
            PROBE.replace("SUMMARY", json.dumps(summary))
            .replace("BUTTON", json.dumps(os.environ.get("CARDS_BUTTON", "")))
            .replace("LINK", json.dumps(os.environ.get("CARDS_LINK", "")))
        )
        layout = pipe.evaluate(probe, session) if found else json.dumps({"error": "summary never shown"})
        if os.environ.get("CARDS_PROBE_OUT"):
            with open(os.environ["CARDS_PROBE_OUT"], "w", encoding="utf-8") as handle:
                handle.write(layout)
        if os.environ.get("CARDS_SCREENSHOT"):
            shot = pipe.call("Page.captureScreenshot", {"format": "png"}, session)
            with open(os.environ["CARDS_SCREENSHOT"], "wb") as handle:
                handle.write(base64.b64decode(shot["data"]))
        sys.stdout.write(pipe.evaluate("document.documentElement.outerHTML", session) or "")
        sys.stdout.flush()
        pipe.call("Browser.close")
    finally:
        try:
            browser.wait(timeout=30)
        except subprocess.TimeoutExpired:
            browser.kill()
            browser.wait()
    return 0


def main(args: list[str]) -> int:
    real = os.environ["REAL_CHROMIUM"]
    args = [WINDOW if a.startswith("--window-size=") else a for a in args]
    if "--dump-dom" in args:
        return drive(real, args)
    os.execv(real, [real, *args])  # noqa: S606 - run.sh's own flags, passed through
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
