"""``fsm ui`` in a real headless browser: Debian's chromium and chromium-driver, driven by
selenium (``.ci/run`` installs them; locally, a missing one skips the browser tests).

Every test runs a real ``python -m fsm ui`` process on the embedded runtime, on a sqlite
store in ``tmp_path`` that ``python -m fsm start`` processes share with it. The browser
test goes through what an operator does: the instance another process started is listed,
its diagram highlights its state, an event sent from the form moves it, and the page
shows the new state without a reload. ``FSM_UI_SCREENSHOT=PATH`` keeps a screenshot of
the end of that test, to look at.

The access rules are tested over plain HTTP: no credentials on 127.0.0.1 (but no foreign
``Host`` and no cross-site write), and a token on any other address.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, unavailable

OK, BAD_INPUT = 0, 2
TOKEN = "s3cret-dashboard-token"
MACHINES = """
machines:
  - name: order
    states:
      - {name: placed, initial: true, do_action: ui_acts.Accept, transitions: [{event: accepted, target: waiting}]}
      - name: waiting
        transitions:
          - {event: PAY, target: paying}
          - {event: CANCEL, target: cancelled}
      - {name: paying, do_action: ui_acts.Pay, transitions: [{event: paid, target: shipped}]}
      - {name: shipped, final: true}
      - {name: cancelled, final: true}
"""
ACTIONS = """
from fsm import Action


class Accept(Action):
    def execute(self, context, obj):
        return "accepted"


class Pay(Action):
    def execute(self, context, obj):
        context["receipt"] = "R-" + context.correlation_id[:6]
        return "paid"
"""


class Dashboard:
    """A running ``fsm ui`` and the ``fsm`` commands that share its store."""

    def __init__(self, folder: Path, *flags: str):
        self.folder = folder
        self.store = f"sqlite:///{folder / 'ui.sqlite3'}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FSM_")}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.process = subprocess.Popen(self.argv("ui", "--port", str(self.port), "--interval", "0.1", *flags),
                                        cwd=folder, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        deadline = time.monotonic() + 30
        while not self._listening():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"fsm ui did not start: {self.process.communicate()}")
            time.sleep(0.1)

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "fsm", *args, "--store", self.store]

    def fsm(self, *args: str) -> str:
        done = subprocess.run(self.argv(*args), cwd=self.folder, env=self.env, capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == OK, done.stderr
        return done.stdout.strip()

    def _listening(self) -> bool:
        try:
            self.request("GET", "/static/style.css")
        except OSError:
            return False
        return True

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            payload = None if body is None else json.dumps(body).encode()
            sent = {"Content-Type": "application/json"} if payload is not None else {}
            connection.request(method, path, payload, {**sent, **(headers or {})})
            reply = connection.getresponse()
            return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
        finally:
            connection.close()

    def stop(self) -> tuple[int, str]:
        """Ctrl-C: its exit code and stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            _, stderr = self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, stderr = self.process.communicate()
            pytest.fail(f"fsm ui ignored Ctrl-C for 10 s: {stderr}")
        return self.process.returncode, stderr


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "fsm.yaml").write_text(MACHINES.lstrip(), encoding="utf-8")
    (tmp_path / "ui_acts.py").write_text(ACTIONS, encoding="utf-8")
    return tmp_path


@pytest.fixture
def dashboard(folder: Path) -> Iterator[Dashboard]:
    running = Dashboard(folder)
    yield running
    running.stop()


# ---- the browser --------------------------------------------------------------------------


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium", "it is not installed (pip install 'lambda-fsm[test]')")
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        unavailable("chromium", "chromium and chromium-driver are not installed (apt-get install chromium "
                                "chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(options=options, service=Service(driver))
    try:
        yield chrome
    finally:
        chrome.quit()


def shown(browser: Any, css: str, timeout: float = 15.0, visible: bool = True) -> Any:
    """The element ``css`` finds, once it is there (and visible)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    found = expected_conditions.visibility_of_element_located if visible else \
        expected_conditions.presence_of_element_located
    return WebDriverWait(browser, timeout).until(found((By.CSS_SELECTOR, css)), f"nothing shows {css!r}")


def rows_become(browser: Any, ids: list[str], timeout: float = 15.0) -> None:
    """Wait until the instance list shows exactly ``ids``, in that order."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def listed(driver: Any) -> bool:
        rows = driver.find_elements(By.CSS_SELECTOR, "#instances tbody tr")
        return [row.get_attribute("data-id") for row in rows] == ids

    WebDriverWait(browser, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(
        listed, f"the list never showed exactly {ids}")


def text_becomes(browser: Any, css: str, text: str, timeout: float = 15.0) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, timeout).until(
        expected_conditions.text_to_be_present_in_element((By.CSS_SELECTOR, css), text),
        f"{css!r} never showed {text!r}")


def click(browser: Any, css: str) -> None:
    """Click ``css``; a live update may replace the element between finding and clicking."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(5):
        try:
            shown(browser, css).click()
            return
        except StaleElementReferenceException:
            time.sleep(0.1)
    pytest.fail(f"{css!r} kept being replaced")


def test_an_event_sent_from_the_page_moves_the_instance_and_the_page_follows(
        dashboard: Dashboard, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    cid = dashboard.fsm("start", "--machine", "order", "--context", '{"customer": "Ada"}')
    browser.get(dashboard.url)
    text_becomes(browser, f'#instances tr[data-id="{cid}"] .cell-state', "waiting")
    browser.execute_script("window.sameDocument = true")   # gone if the page reloads

    click(browser, f'#instances tr[data-id="{cid}"]')
    assert shown(browser, '#diagram g.state.active').get_attribute("data-state") == "waiting"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#diagram g.state")) == 5
    assert browser.find_element(By.ID, "d-status").text == "waiting"
    assert json.loads(browser.find_element(By.ID, "d-context").text) == {"customer": "Ada"}

    # Another process starts an instance: the list shows it, pushed by the server.
    other = dashboard.fsm("start", "--machine", "order")
    shown(browser, f'#instances tr[data-id="{other}"]')

    events = Select(shown(browser, "#event-name"))
    assert sorted(option.text for option in events.options) == ["CANCEL", "PAY"]
    events.select_by_visible_text("PAY")
    data = browser.find_element(By.ID, "event-data")
    data.clear()
    data.send_keys('{"paid_by": "card"}')
    click(browser, "#event-send")

    shown(browser, '#diagram g.state.active[data-state="shipped"]')
    text_becomes(browser, "#d-status", "done")
    text_becomes(browser, f'#instances tr[data-id="{cid}"] .cell-status', "done")
    context = json.loads(browser.find_element(By.ID, "d-context").text)
    assert context == {"customer": "Ada", "paid_by": "card", "receipt": f"R-{cid[:6]}"}
    history = browser.find_element(By.ID, "history").text
    assert "waiting \u2014PAY\u2192 paying" in history and "paying \u2014paid\u2192 shipped" in history
    assert browser.find_element(By.CSS_SELECTOR, '#diagram g.edge.taken').get_attribute("data-to") == "shipped"
    assert browser.execute_script("return window.sameDocument") is True
    assert json.loads(dashboard.fsm("status", cid, "--json"))["state"] == "shipped"

    # The list filters: by status; by machine, then one of its states.
    Select(browser.find_element(By.ID, "filter-status")).select_by_visible_text("done")
    rows_become(browser, [cid])
    Select(browser.find_element(By.ID, "filter-status")).select_by_visible_text("any")
    Select(browser.find_element(By.ID, "filter-machine")).select_by_visible_text("order")
    shown(browser, '#filter-state:enabled option[value="waiting"]', visible=False)
    Select(browser.find_element(By.ID, "filter-state")).select_by_visible_text("waiting")
    rows_become(browser, [other])

    shot = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(shot))
    if os.environ.get("FSM_UI_SCREENSHOT"):
        shutil.copy(shot, os.environ["FSM_UI_SCREENSHOT"])
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors


# ---- access and shutdown, over plain HTTP -------------------------------------------------


def test_binding_another_address_without_a_token_is_refused(folder: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "fsm", "ui", "--host", "0.0.0.0", "--port", str(free_port()),
                           "--store", f"sqlite:///{folder / 'ui.sqlite3'}"], cwd=folder, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == BAD_INPUT
    assert done.stderr.splitlines() == [
        ("fsm ui: binding 0.0.0.0 serves the dashboard to other machines, so it needs a token: give --token TOKEN "
        "or set api.token_secret, or bind 127.0.0.1 (the default)")]


def test_with_a_token_every_api_request_must_carry_it(folder: Path) -> None:
    guarded = Dashboard(folder, "--host", "0.0.0.0", "--token", TOKEN)
    try:
        status, headers, _ = guarded.request("GET", "/api/machines")
        assert (status, headers["www-authenticate"]) == (401, "Bearer")
        assert guarded.request("GET", "/api/machines", headers={"Authorization": "Bearer nope"})[0] == 403
        assert guarded.request("GET", "/api/instances?token=nope")[0] == 403
        status, _, body = guarded.request("GET", "/api/machines", headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and [m["name"] for m in json.loads(body)["machines"]] == ["order"]
        assert guarded.request("GET", f"/api/instances?machine=order&token={TOKEN}")[0] == 200
        assert guarded.request("GET", "/")[0] == 200   # the page holds no data; it asks with the token
        assert guarded.request("GET", "/api/stream?instance=x")[0] == 401
        with urllib.request.urlopen(f"{guarded.url}api/stream?instance=x&token={TOKEN}", timeout=10) as stream:
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            assert stream.readline() == b"retry: 2000\n"
    finally:
        code, stderr = guarded.stop()
    assert (code, stderr) == (OK, "")


def test_on_loopback_no_token_but_no_foreign_host_or_cross_site_write(dashboard: Dashboard) -> None:
    assert dashboard.request("GET", "/api/machines")[0] == 200
    # A name of another site resolving to 127.0.0.1 (DNS rebinding) is not let in.
    assert dashboard.request("GET", "/api/machines", headers={"Host": "attacker.example"})[0] == 403
    start = {"machine": "order"}
    foreign = {"Origin": "http://attacker.example", "Sec-Fetch-Site": "cross-site"}
    assert dashboard.request("POST", "/api/instances", start, foreign)[0] == 403
    own = {"Origin": f"http://127.0.0.1:{dashboard.port}", "Sec-Fetch-Site": "same-origin"}
    status, headers, body = dashboard.request("POST", "/api/instances", start, own)
    assert status == 201 and headers["location"] == f"/api/instances/{json.loads(body)['correlation_id']}"
    assert dashboard.request("GET", "/static/../server.py")[0] == 404


def test_ctrl_c_stops_the_server_with_a_live_stream_open(dashboard: Dashboard) -> None:
    cid = dashboard.fsm("start", "--machine", "order")
    stream = urllib.request.urlopen(f"{dashboard.url}api/stream?instance={cid}", timeout=10)
    assert stream.readline() == b"retry: 2000\n"
    assert stream.readline() == b"\n"
    assert stream.readline() == b"event: status\n"
    assert json.loads(stream.readline().removeprefix(b"data: "))["state"] == "waiting"
    started = time.monotonic()
    code, stderr = dashboard.stop()
    stream.close()
    assert (code, stderr) == (OK, "")
    assert time.monotonic() - started < 5
