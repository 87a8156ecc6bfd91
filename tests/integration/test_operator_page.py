"""The operator page (`GET /`) in a real browser: headless Chromium (Debian's
`chromium` and `chromium-driver`) driven by Selenium, against a real
`monitor run` subprocess, the local broker and a real registry file.

The scenario of test_actions_daemon's `test_approval_over_http`, through the
page: the pending rollback of legal (v2 -> v1) is shown with its domain's
verdicts; Approve without a token says 401 and changes nothing; with the token
it executes the rollback, which the page then shows, and the registry file says
v1. One daemon, one browser session.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.integration.test_actions_daemon import (  # noqa: F401
    ROLLBACK_RULE,
    TOKEN,
    active,
    start,
    world,
)

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
_MISSING = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
if _MISSING:
    pytest.skip(f"{' and '.join(_MISSING)} missing: apt-get install chromium chromium-driver "
                "(make debs does it as root)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                "(pip install -e '.[test]')")

from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def browser(tmp_path, monkeypatch):
    """Headless Chromium with a throwaway profile; always quit, even on failure."""
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download
    profile = tmp_path / "chromium-profile"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--user-data-dir={profile}", "--no-proxy-server", "--window-size=1400,1000",
                "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER),
                      log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _text(driver, css: str) -> str | None:
    """The text of the first element matching `css`, None when there is none
    (the page may redraw a section between the lookup and the read)."""
    try:
        found = driver.find_elements(By.CSS_SELECTOR, css)
        return found[0].text if found else None
    except StaleElementReferenceException:
        return None


def _click(driver, css: str) -> None:
    for _ in range(20):
        try:
            driver.find_element(By.CSS_SELECTOR, css).click()
            return
        except StaleElementReferenceException:
            time.sleep(0.1)
    raise AssertionError(f"{css} kept being redrawn")


def _message(driver, status: int):
    box = driver.find_element(By.ID, "message")
    return box.text if box.get_attribute("data-status") == str(status) else None


def test_the_operator_page_approves_a_pending_rollback(world, browser):  # noqa: F811
    daemon = start(world, ROLLBACK_RULE.format(extra="          approval: required\n"))
    waiter = WebDriverWait(browser, 60, poll_frequency=0.2)

    def until(check, message: str = ""):
        return waiter.until(check, message)

    browser.get(daemon.url + "/")
    assert browser.title == "LLM monitor: operator"

    # the pending rollback, with the change approving it would make
    pending = '#pending tr[data-domain="legal"][data-action="rollback"]'
    until(lambda d: _text(d, pending + " .change") == "v2 -> v1",
          "the pending rollback of legal (v2 -> v1) is not shown")
    action_id = browser.find_element(By.CSS_SELECTOR, pending).get_attribute("data-action-id")
    assert action_id and "GoldenRegression" in _text(browser, pending)
    # the domain: active v2, regressed; v1 good and passing
    legal = '#domains [data-domain="legal"]'
    until(lambda d: _text(d, legal + " .active-version") == "v2")
    assert _text(browser, legal + ' tr[data-version="v2"] .verdict') == "regressed"
    assert _text(browser, legal + ' tr[data-version="v1"] .verdict') == "pass"
    assert _text(browser, legal + ' tr[data-version="v1"] .status') == "good"
    assert browser.find_element(By.CSS_SELECTOR, legal + ' tr[data-version="v2"]') \
        .get_attribute("data-active") == "true"
    # the alert that asked for it
    until(lambda d: _text(d, '#alerts tr[data-alertname="GoldenRegression"]'),
          "the GoldenRegression alert is not shown")

    # Approve without the token: 401, nothing changes
    approve = f'#pending button.approve[data-action-id="{action_id}"]'
    _click(browser, approve)
    refused = until(lambda d: _message(d, 401), "no 401 shown")
    assert "wrong token" in refused
    assert active(world) == "v2"
    assert _text(browser, pending + " .change") == "v2 -> v1"  # still pending

    # with the token: executed
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    _click(browser, approve)
    done = until(lambda d: _message(d, 200), "no success shown")
    assert "Approved" in done and "executed" in done and "v2 -> v1" in done, done
    assert "ok" in browser.find_element(By.ID, "message").get_attribute("class")
    assert active(world) == "v1"

    # the page follows: recent actions, the domain's active version, no pending
    recent = f'#recent tr[data-action-id="{action_id}"]'
    until(lambda d: _text(d, recent + " .status") == "executed",
          "the executed rollback is not in recent actions")
    assert _text(browser, recent + " .change") == "v2 -> v1"
    assert "token:api" in _text(browser, recent)
    until(lambda d: _text(d, legal + " .active-version") == "v1",
          "legal's active version is not shown as v1")
    until(lambda d: _text(d, "#pending") == "nothing awaits approval")

    # the token was kept nowhere but its field
    kept = browser.execute_script(
        "return [localStorage.length, sessionStorage.length, document.cookie, location.href]")
    assert kept == [0, 0, "", daemon.url + "/"]
    # no script error, no policy violation (the refused request's 401 is expected)
    problems = [e["message"] for e in browser.get_log("browser")
                if e["level"] == "SEVERE" and "status of 401" not in e["message"]]
    assert problems == []
    assert daemon.terminate() == 0
