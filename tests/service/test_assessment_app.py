"""The SMART app's files under /app/: served from the package, with a strict Content-Security-Policy."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from service.assessment.routes import STATIC, app_files


def test_the_app_page_is_served_with_a_strict_policy(client: TestClient) -> None:
    """index.html: scripts only from this origin (no inline, no eval), no base or form targets."""
    answer = client.get("/app/", auth=None)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self';" in policy
    assert "unsafe-eval" not in policy
    assert "default-src 'none'" in policy
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_pages_hold_no_inline_script_and_no_third_party_url() -> None:
    """Every script is a file of the app; nothing is loaded from a CDN."""
    for page in ("index.html", "launch.html"):
        text = (STATIC / page).read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), page
        assert not re.search(r"(src|href)=\"(https?:)?//", text), page


def test_the_vendored_renderer_is_served(client: TestClient) -> None:
    """LHC-Forms comes from the package (scripts/vendor-app.sh), cached for a day."""
    answer = client.get("/app/vendor/lforms/lhc-forms.js", auth=None)
    assert answer.status_code == 200
    assert "javascript" in answer.headers["content-type"]
    assert answer.headers["cache-control"] == "public, max-age=86400"
    version = (STATIC / "vendor" / "lforms" / "VERSION").read_text().strip()
    assert '"lforms": "' + version + '"' in (STATIC.parents[2] / "webapp" / "package.json").read_text()


@pytest.mark.parametrize(
    "path", ["/app/../routes.py", "/app/%2e%2e/routes.py", "/app/nothing.js", "/app/static"]
)
def test_nothing_outside_the_app_is_served(client: TestClient, path: str) -> None:
    """Only the files under static/ can be named: others are 404 OperationOutcomes."""
    answer = client.get(path, auth=None)
    assert answer.status_code == 404
    assert "import" not in answer.text


def test_app_without_slash_redirects(client: TestClient) -> None:
    """/app redirects to /app/ so that the app's relative URLs resolve."""
    answer = client.get("/app", auth=None, follow_redirects=False)
    assert (answer.status_code, answer.headers["location"]) == (308, "/app/")


def test_the_file_table_holds_only_app_files() -> None:
    """The served table is exactly the files under static/, by relative path."""
    files = app_files()
    assert {"index.html", "launch.html", "app.js", "smart.js", "launch.js", "app.css"} <= set(files)
    assert all(path.is_relative_to(STATIC) for path in files.values())
