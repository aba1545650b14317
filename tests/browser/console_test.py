"""Browser tests of the web console (run by scripts/console-test.sh).

Headless Chromium, driven by Selenium, against a live `capecontrol serve --demo`:
CONSOLE_URL (the server), CONSOLE_ADMIN_KEY, CONSOLE_DEMO_KEY (a user with the `user` role),
CONSOLE_SCREENSHOTS (where the screenshots go, docs/img by default).

Each test is a function named test_*; they run in order, in one browser, and share the server
(the demo user installs the slow counter once). A failure prints which test and why, saves a
screenshot of the page as failure-<test>.png in CONSOLE_FAILURES (the temporary directory by
default), and exits 1.
"""

import os
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

URL = os.environ["CONSOLE_URL"].rstrip("/")
CONSOLE = URL + "/console"
ADMIN_KEY = os.environ["CONSOLE_ADMIN_KEY"]
DEMO_KEY = os.environ["CONSOLE_DEMO_KEY"]
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS", "docs/img")
FAILURES = os.environ.get("CONSOLE_FAILURES", tempfile.gettempdir())
SECRET = "hook-s3cret-7d41"


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--window-size=1280,900", "--lang=en-US"):
        options.add_argument(arg)
    service = Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.implicitly_wait(0)
    return driver


D = None


def wait(seconds=15):
    # The live pages replace elements as events arrive: a poll that found an element just
    # before it was swapped out polls again instead of failing the wait.
    return WebDriverWait(D, seconds, poll_frequency=0.1,
                         ignored_exceptions=[StaleElementReferenceException])


def shot(name):
    os.makedirs(SHOTS, exist_ok=True)
    D.save_screenshot(os.path.join(SHOTS, "console-%s.png" % name))


def go(path):
    D.get(CONSOLE + path)


def text(css):
    return D.find_element(By.CSS_SELECTOR, css).text


def sign_in(key):
    D.delete_all_cookies()
    go("/sign-in")
    field = D.find_element(By.ID, "key")
    field.send_keys(key)
    field.submit()
    wait().until(EC.presence_of_element_located((By.ID, "who")))


def names_on_page():
    return [e.text for e in D.find_elements(By.CSS_SELECTOR, "#agents h2")]


def submit_task(to, delay_ms):
    go("/agents/slow-counter/tasks/count")
    D.find_element(By.ID, "input.to").send_keys(str(to))
    delay = D.find_element(By.ID, "input.delay_ms")
    delay.clear()
    delay.send_keys(str(delay_ms))
    D.find_element(By.CSS_SELECTOR, "#task-form button[type=submit]").click()
    wait().until(EC.presence_of_element_located((By.ID, "task-id")))
    return text("#task-id")


# --------------------------------------------------------------------------------------------


def test_a_sign_in_form_posted_without_its_csrf_token_is_refused():
    data = urllib.parse.urlencode({"key": DEMO_KEY}).encode()
    try:
        urllib.request.urlopen(urllib.request.Request(CONSOLE + "/sign-in", data=data))
        raise AssertionError("a sign-in without a CSRF token was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 403, e.code
        assert "Set-Cookie" not in e.headers or "cc_console=" not in e.headers["Set-Cookie"]


def test_sign_in_with_an_api_key():
    go("/marketplace")
    assert D.current_url.endswith("/console/sign-in"), D.current_url
    assert D.find_element(By.CSS_SELECTOR, "label[for=key]").text == "API key"
    shot("sign-in")
    D.find_element(By.ID, "key").send_keys("cc_wrong_key")
    D.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait().until(EC.presence_of_element_located((By.ID, "sign-in-error")))
    sign_in(DEMO_KEY)
    assert text("#who") == "demo"
    cookie = D.get_cookie("cc_console")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
    assert DEMO_KEY not in cookie["value"]


def test_browse_and_filter_the_marketplace():
    go("/marketplace")
    names = names_on_page()
    assert "Onboarding Guide" in names and "Slow Counter" in names, names
    Select(D.find_element(By.ID, "category")).select_by_value("utility")
    D.find_element(By.CSS_SELECTOR, "form.filters button").click()
    wait().until(EC.url_contains("category=utility"))
    assert names_on_page() == ["Slow Counter"], names_on_page()
    shot("marketplace")
    go("/marketplace")
    Select(D.find_element(By.ID, "placement")).select_by_value("chat")
    D.find_element(By.CSS_SELECTOR, "form.filters button").click()
    wait().until(EC.url_contains("placement=chat"))
    assert names_on_page() == ["Onboarding Guide"], names_on_page()
    go("/marketplace?q=counter")
    assert names_on_page() == ["Slow Counter"], names_on_page()


def test_a_form_posted_without_its_csrf_token_is_refused():
    go("/agents/slow-counter")
    D.execute_script(
        "document.querySelector('#install-form input[name=csrf]').remove();")
    D.find_element(By.CSS_SELECTOR, "#install-form button[type=submit]").click()
    wait().until(EC.presence_of_element_located((By.ID, "problem")))
    assert "CSRF token" in text("#problem"), text("#problem")
    assert "Forbidden" in D.title, D.title
    go("/installations")
    assert "slow-counter" not in D.page_source


def test_install_with_grants_and_a_secret_setting_that_stays_masked():
    go("/agents/slow-counter")
    scopes = [e.text for e in D.find_elements(By.CSS_SELECTOR, "#scopes li")]
    assert scopes == ["Create and change your counter counter:write"], scopes
    grant = D.find_element(By.CSS_SELECTOR, "#install-form input[name=grant]")
    assert grant.is_selected() and grant.get_attribute("value") == "counter:write"
    secret = D.find_element(By.ID, "settings.webhook_token")
    assert secret.get_attribute("type") == "password"
    D.find_element(By.ID, "settings.label").send_keys("Nightly count")
    secret.send_keys(SECRET)
    shot("install")
    D.find_element(By.CSS_SELECTOR, "#install-form button[type=submit]").click()
    wait().until(EC.url_contains("/installations"))
    section = D.find_element(By.ID, "installation-slow-counter")
    assert "Create and change your counter" in section.text
    assert "Nightly count" in section.text
    masked = section.find_element(By.CSS_SELECTOR, ".setting-webhook_token").text
    assert "never shown" in masked and SECRET not in masked, masked
    assert SECRET not in D.page_source
    shot("installations")
    # The upgrade dialog never fills the secret in again either.
    go("/agents/slow-counter")
    assert "Installed: version 1.0.0" in text("#installed")
    assert D.find_element(By.ID, "settings.webhook_token").get_attribute("value") == ""
    assert SECRET not in D.page_source


def test_submit_a_task_and_watch_its_steps_arrive_live():
    submit_task(4, 900)
    # The live view lists the steps as they start and complete, before the task is over.
    wait().until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#live-events .event-step_completed")) >= 1)
    assert text("#task-status") in ("running",), text("#task-status")
    shot("task-live")
    wait(30).until(lambda d: d.find_elements(By.ID, "output"))
    assert text("#task-status") == "completed", text("#task-status")
    assert '"counted": 4' in text("#output"), text("#output")
    steps = D.find_elements(By.CSS_SELECTOR, "#steps tbody tr")
    assert len(steps) == 4, len(steps)
    shot("task-done")


def test_cancel_a_running_task_and_read_its_audit_trail():
    task_id = submit_task(40, 1000)
    wait().until(lambda d: d.find_elements(By.CSS_SELECTOR, "#live-events .event-step_started"))
    D.find_element(By.ID, "cancel").click()
    # The status is read in the page in one script: between finding the element and reading
    # its text, the live page can replace it, which Chrome reports as an inspector error (a
    # WebDriverException, not the stale element the wait ignores).
    wait(30).until(lambda d: d.execute_script(
        "var e = document.getElementById('task-status'); return e ? e.innerText.trim() : null;"
    ) == "cancelled" and not d.find_elements(By.ID, "live"))
    assert not D.find_elements(By.ID, "cancel")
    shot("task-cancelled")
    D.find_element(By.ID, "task-audit").click()
    wait().until(EC.presence_of_element_located((By.ID, "audit")))
    types = [e.text for e in D.find_elements(By.CSS_SELECTOR, "#audit .event-type")]
    assert "task.queued" in types and "task.cancelled" in types, types
    assert D.find_element(By.ID, "task").get_attribute("value") == task_id
    shot("audit")
    go("/tasks?status=cancelled")
    rows = D.find_elements(By.CSS_SELECTOR, "#tasks tbody tr")
    assert len(rows) == 1 and task_id in rows[0].text, [r.text for r in rows]
    go("/tasks")
    shot("tasks")


def test_a_user_cannot_reach_the_admin_pages():
    assert "/admin/" not in D.page_source
    for path in ("/admin/keys", "/admin/agents"):
        go(path)
        assert "Forbidden" in D.title, (path, D.title)
        assert "needs the `admin` role" in text("#problem"), text("#problem")


def test_an_admin_manages_agents_and_keys():
    sign_in(ADMIN_KEY)
    go("/admin/agents")
    assert "Slow Counter" in D.page_source and "Onboarding Guide" in D.page_source
    shot("admin-agents")
    go("/admin/keys")
    D.find_element(By.ID, "user_id").send_keys("erin")
    D.find_element(By.ID, "name").send_keys("browser test")
    D.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
    wait().until(EC.presence_of_element_located((By.ID, "created-key")))
    key = text("#created-key")
    assert key.startswith("cc_"), key
    assert "erin" in text("#keys")
    # Revoke it; the key no longer signs in.
    key_id = key.split("_")[1]
    D.find_element(By.XPATH, "//button[text()='Revoke %s']" % key_id).click()
    wait().until(EC.url_matches(r".*/admin/keys$"))
    shot("admin-keys")
    D.delete_all_cookies()
    go("/sign-in")
    D.find_element(By.ID, "key").send_keys(key)
    D.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait().until(EC.presence_of_element_located((By.ID, "sign-in-error")))


def main():
    global D
    D = browser()
    failed = 0
    try:
        tests = [(n, f) for n, f in globals().items() if n.startswith("test_") and callable(f)]
        for name, test in tests:
            started = time.monotonic()
            try:
                test()
                print("ok   %s (%.1fs)" % (name, time.monotonic() - started))
            except Exception:
                failed += 1
                print("FAIL %s" % name)
                traceback.print_exc()
                try:
                    path = os.path.join(FAILURES, "failure-%s.png" % name)
                    D.save_screenshot(path)
                    print("  screenshot: %s" % path)
                    print("  page: %s" % D.current_url)
                except Exception:
                    pass
                break
    finally:
        D.quit()
    print("%d browser test(s) failed" % failed if failed else "all browser tests passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
