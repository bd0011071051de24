"""A ``chromium`` for ../shared/tools/sandbox-e2e/run.sh that works the Sandbox's order views.

Test tooling (standard library only), run as a script through a ``chromium`` shim that
tests/service/test_sandbox_orders.py puts first on run.sh's PATH; ../shared is not changed. It
passes run.sh's own flags through (loopback-only host rules, no proxy, background networking off,
net logs), and drives the ``--dump-dom`` run over the DevTools protocol like a clinician: the steps
in ``$ORDERS_STEPS`` (a JSON list) are done in order, then the page is printed as ``--dump-dom``
would. The outcome of every step goes to ``$ORDERS_PROBE_OUT`` and a screenshot to
``$ORDERS_SCREENSHOT``. Steps (each waits up to ``$ORDERS_STEP_SECONDS``, 30 s by default):

- ``{"op": "wait_text", "text": T}``: until the page shows T;
- ``{"op": "click", "text": T}``: click the button whose text is T (the view tabs, "Sign Order");
- ``{"op": "pick", "placeholder": P, "type": Q, "option": O}``: in the search box showing P, type Q
  and click the first offered option whose text contains O (a react-select);
- ``{"op": "type", "name": N, "text": Q}``: type Q in the input named N (the Rx views' medication box);
- ``{"op": "choose", "text": T}``: click the list item whose text contains T (fewest words wins);
- ``{"op": "cards", "name": N, "expect": T}``: until a card contains T; record every card's text
  and buttons under N;
- ``{"op": "accept", "card": T, "label": L}``: click the suggestion button L of the card containing T.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from sandbox_chromium import Pipe

__all__ = ["main"]

HELPERS = """
window.__t = el => (el.innerText || '').trim();
window.__cards = () => [...document.querySelectorAll('[class*=decision-card]')].map(card => ({
  text: window.__t(card),
  buttons: [...card.querySelectorAll('button')].map(window.__t).filter(Boolean)}));
window.__card = needle => [...document.querySelectorAll('[class*=decision-card]')]
  .find(card => window.__t(card).includes(needle)) || null;
true
"""


def _step(pipe: Pipe, session: str, step: dict[str, Any]) -> dict[str, Any]:
    """Do one step, retrying until it succeeds or its time is up; what happened."""
    op = step["op"]
    deadline = time.monotonic() + float(os.environ.get("ORDERS_STEP_SECONDS", "30"))
    while True:
        pipe.evaluate(HELPERS, session)
        if op == "wait_text":
            done = pipe.evaluate(f"document.body.innerText.includes({json.dumps(step['text'])})", session)
            result: dict[str, Any] = {"ok": bool(done)}
        elif op == "click":
            expression = f"""(() => {{
              const b = [...document.querySelectorAll('button')].find(el => window.__t(el) === {json.dumps(step["text"])});
              if (!b || b.disabled) return false; b.click(); return true; }})()"""
            result = {"ok": bool(pipe.evaluate(expression, session))}
        elif op == "pick":
            focus = f"""(() => {{
              const holder = [...document.querySelectorAll('div')]
                .find(el => el.children.length === 0 && window.__t(el) === {json.dumps(step["placeholder"])});
              if (!holder) return false;
              let box = holder; while (box && !box.querySelector('input')) box = box.parentElement;
              if (!box) return false; const input = box.querySelector('input'); input.focus();
              return document.activeElement === input; }})()"""
            if pipe.evaluate(focus, session):
                pipe.call("Input.insertText", {"text": step["type"]}, session)
                chosen = None
                option_wait = time.monotonic() + 10
                while chosen is None and time.monotonic() < option_wait:
                    time.sleep(0.3)
                    chosen = pipe.evaluate(
                        f"""(() => {{
                          const o = [...document.querySelectorAll('[id*=-option-]')]
                            .find(el => window.__t(el).includes({json.dumps(step["option"])}));
                          if (!o) return null; const text = window.__t(o); o.click(); return text; }})()""",
                        session,
                    )
                result = {"ok": chosen is not None, "chosen": chosen}
            else:
                result = {"ok": False, "error": "no search box " + step["placeholder"]}
        elif op == "type":
            focus = f"""(() => {{ const input = document.querySelector('input[name={step["name"]}]');
              if (!input) return false; input.focus(); return document.activeElement === input; }})()"""
            result = {"ok": bool(pipe.evaluate(focus, session))}
            if result["ok"]:
                pipe.call("Input.insertText", {"text": step["text"]}, session)
        elif op == "choose":
            expression = f"""(() => {{
              const items = [...document.querySelectorAll('li, [role=button], [role=option]')]
                .filter(el => window.__t(el).includes({json.dumps(step["text"])}))
                .sort((a, b) => window.__t(a).length - window.__t(b).length);
              if (!items.length) return null; items[0].click(); return window.__t(items[0]); }})()"""
            chosen = pipe.evaluate(expression, session)
            result = {"ok": chosen is not None, "chosen": chosen}
            if chosen is None:
                result["offered"] = pipe.evaluate(
                    "[...document.querySelectorAll('li')].map(window.__t).slice(0, 30)", session
                )
        elif op == "cards":
            cards = pipe.evaluate("window.__cards()", session) or []
            result = {"ok": any(step["expect"] in card["text"] for card in cards), "cards": cards}
        elif op == "accept":
            expression = f"""(() => {{
              const card = window.__card({json.dumps(step["card"])}); if (!card) return false;
              const b = [...card.querySelectorAll('button')].find(el => window.__t(el) === {json.dumps(step["label"])});
              if (!b) return false; b.click(); return true; }})()"""
            result = {"ok": bool(pipe.evaluate(expression, session))}
        else:
            raise ValueError(f"unknown step {op!r}")
        if result["ok"] or time.monotonic() > deadline:
            return {**step, **result}
        time.sleep(0.3)


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
    outcomes: list[dict[str, Any]] = []
    try:
        target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        pipe.call("Emulation.setDeviceMetricsOverride",
                  {"width": 1280, "height": 1000, "deviceScaleFactor": 1, "mobile": False}, session)  # fmt: skip
        pipe.call("Page.enable", {}, session)
        pipe.call("Page.navigate", {"url": url}, session)
        for step in json.loads(os.environ.get("ORDERS_STEPS", "[]")):
            outcomes.append(_step(pipe, session, step))
            if not outcomes[-1]["ok"]:
                break
        time.sleep(1.0)  # let a feedback POST started by the last click leave the page
        if os.environ.get("ORDERS_SCREENSHOT"):
            shot = pipe.call("Page.captureScreenshot", {"format": "png"}, session)
            Path(os.environ["ORDERS_SCREENSHOT"]).write_bytes(base64.b64decode(shot["data"]))
        sys.stdout.write(pipe.evaluate("document.documentElement.outerHTML", session) or "")
        sys.stdout.flush()
        pipe.call("Browser.close")
    finally:
        if os.environ.get("ORDERS_PROBE_OUT"):
            Path(os.environ["ORDERS_PROBE_OUT"]).write_text(json.dumps(outcomes, indent=2), "utf-8")
        try:
            browser.wait(timeout=30)
        except subprocess.TimeoutExpired:
            browser.kill()
            browser.wait()
    return 0


def main(args: list[str]) -> int:
    real = os.environ["REAL_CHROMIUM"]
    if "--dump-dom" in args:
        return drive(real, args)
    os.execv(real, [real, *args])  # noqa: S606 - run.sh's own flags, passed through
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
