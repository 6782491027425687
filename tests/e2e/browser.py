"""Headless Chromium (Debian's /usr/bin/chromium, driven by playwright) for the report tests.

The browser starts with the flags this machine needs (no sandbox as root, no
GPU, no background networking) and a fresh profile; every request the page
makes, every console message and page error is recorded, and any request
that is not the report file itself is aborted (a report must need nothing
else). Screenshots go to ``$COHORTFLOW_TEST_ARTIFACTS`` (default
``target/test-artifacts/`` of the repository).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGES = ("overview", "funnels", "retention", "engagement", "quality")


def artifacts_dir() -> Path:
    default = Path(__file__).resolve().parents[2] / "target" / "test-artifacts"
    path = Path(os.environ.get("COHORTFLOW_TEST_ARTIFACTS") or default)
    path.mkdir(parents=True, exist_ok=True)
    return path


def need_chromium() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI=true but {CHROMIUM} is missing: scripts/chromium.sh installs it")
        pytest.skip(f"no {CHROMIUM} (scripts/chromium.sh installs Debian's chromium)")


@dataclass
class Visit:
    page: object
    url: str
    requests: list[str] = field(default_factory=list)
    console: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def show(self, name: str) -> None:
        """Switch the report to one of its pages and wait until every chart of it is drawn."""
        self.page.evaluate(f"location.hash = {name!r}")
        self.page.wait_for_function(
            "name => document.body.getAttribute('data-page') === name && "
            "[...document.querySelectorAll('#page-' + name + ' .chart')].every(e => e.dataset.rendered === 'true')",
            arg=name,
            timeout=30_000,
        )

    def marks(self, name: str) -> dict[str, tuple[int, int]]:
        """Per chart of a page: (marks it must draw, data marks plotly drew: bars and markers)."""
        return {
            k: tuple(v)
            for k, v in self.page.evaluate(
                "name => Object.fromEntries([...document.querySelectorAll('#page-' + name + ' .chart')]"
                ".map(e => [e.id, [Number(e.dataset.marks), e.querySelectorAll('.point').length]]))",
                name,
            ).items()
        }

    def screenshot(self, name: str) -> Path:
        path = artifacts_dir() / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@contextmanager
def open_report(path: Path, width: int = 1440, height: int = 900):
    """Open a report file in headless Chromium; yields a :class:`Visit`."""
    need_chromium()
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="cohortflow-chromium-")
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, args=FLAGS, headless=True,
                viewport={"width": width, "height": height}, service_workers="block",
            )
            try:
                page = context.new_page()
                url = path.resolve().as_uri()
                visit = Visit(page, url)
                page.on("request", lambda r: visit.requests.append(r.url))
                page.on("console", lambda m: visit.console.append((m.type, m.text)))
                page.on("pageerror", lambda e: visit.errors.append(str(e)))

                def on_dialog(d):
                    visit.dialogs.append(d.message)
                    d.dismiss()

                page.on("dialog", on_dialog)
                context.route(
                    "**/*", lambda route: route.continue_() if route.request.url.split("#")[0] == url else route.abort()
                )
                page.goto(url)
                yield visit
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
