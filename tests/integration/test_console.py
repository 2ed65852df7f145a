"""The operator console in a real browser (headless Chromium from the Debian packages, driven by
Selenium through the system chromedriver) against the session's real service: sign in, create a
gallery, enrol LFW photos, identify, erase, read the audit trail. Each screen's screenshot goes to
docs/console/ (the README shows them)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import REPO_ROOT
from tests.integration.conftest import lfw_people

pytestmark = pytest.mark.ray

GALLERY = "it-console"
SCREENSHOTS = REPO_ROOT / "docs" / "console"
CHROMIUM = "/usr/bin/chromium"
WAIT_S = 90  # an enrolment on the 2-core test cluster takes seconds; a first one longer


@pytest.fixture(scope="module")
def browser():
    # Selenium Manager must never fetch a browser or a driver: this machine has no internet.
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    driver_path = shutil.which("chromedriver")
    if not Path(CHROMIUM).exists() or driver_path is None:
        pytest.fail(
            f"the console test needs the Debian packages chromium ({CHROMIUM}) and chromium-driver "
            f"(chromedriver on PATH; found {driver_path}): apt-get install chromium chromium-driver (.ci/run does)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--window-size=1280,1000",
        # getUserMedia answers with Chromium's test pattern, without a permission prompt.
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def people(faces_dir: Path) -> list[tuple[str, Path, Path]]:
    return lfw_people(faces_dir, 3)


class Console:
    """The console in the browser: waits on what the page shows, never sleeps."""

    def __init__(self, driver, url: str):
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver, self.url = driver, url
        # A screen redraws its table when an answer comes: an element found just before is gone.
        self.wait = WebDriverWait(driver, WAIT_S, ignored_exceptions=(StaleElementReferenceException,))

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def visible(self, css: str):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as seen

        return self.wait.until(seen.visibility_of_element_located((By.CSS_SELECTOR, css)))

    def until(self, predicate, message: str):
        return self.wait.until(lambda _: predicate(), message)

    def go(self, screen: str, ready_css: str):
        # A fresh page each time (the key stays in the tab's sessionStorage): getting the URL the
        # tab already shows would change nothing.
        self.driver.get("about:blank")
        self.driver.get(f"{self.url}/console/#/{screen}")
        return self.visible(ready_css)

    def type_into(self, css: str, text: str) -> None:
        field = self.find(css)
        field.clear()
        field.send_keys(text)

    def banner(self, kind: str) -> str:
        """The banner's text once it shows a message of this kind (error, ok)."""
        self.until(lambda: self.find("#banner").is_displayed() and kind in self.find("#banner").get_attribute("class"),
                   f"no {kind} banner")
        return self.find("#banner-text").text

    def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))

    def sign_in(self, key: str) -> None:
        self.type_into("#key-input", key)
        self.find("#sign-in").click()

    def choose_photo(self, picker: str, photo: Path) -> None:
        self.find(f"#{picker} input[type=file]").send_keys(str(photo))

    def enrol(self, subject_id: str, photo: Path) -> None:
        self.go("enrol", "#enrol-photo")
        self.type_into("#enrol-gallery", GALLERY)
        self.type_into("#enrol-subject", subject_id)
        self.choose_photo("enrol-photo", photo)
        self.visible("#enrol-faces .hint")  # analyzed: the faces are drawn
        self.find("#enrol-submit").click()


@pytest.fixture(scope="module")
def console(service, browser):
    yield Console(browser, service.url)
    service.http.delete(f"/api/v1/galleries/{GALLERY}")  # whatever a failed run left


def test_console_end_to_end(service, console, people, tmp_path):
    ui = console
    admin_key = service.keys["admin"]

    # Sign in: /console redirects to the page; a bad key shows the API's message and is not kept.
    ui.driver.get(f"{service.url}/console")
    ui.visible("#key-input")
    assert ui.driver.current_url == f"{service.url}/console/"
    ui.screenshot("sign-in")
    ui.sign_in("ufme.nobody.not-a-key")
    assert "the API key is not valid (HTTP 401 unauthenticated)" in ui.banner("error")
    ui.sign_in(admin_key)
    assert ui.visible("#whoami").text == "test-admin · admin · every gallery"
    assert admin_key not in ui.driver.current_url

    # Galleries: create one.
    ui.go("galleries", "#gallery-create")
    ui.type_into("#gallery-new-id", GALLERY)
    ui.type_into("#gallery-new-description", "console test")
    ui.find("#gallery-create").click()
    assert f"Created gallery {GALLERY}." in ui.banner("ok")
    row = ui.visible(f"tr[data-gallery='{GALLERY}']")
    assert [cell.text for cell in row.find_elements("css selector", "td")][:4] == [GALLERY, "console test", "0", "0"]
    ui.screenshot("galleries")

    # Enrol three people from stored photos (the file input: capture stored).
    for subject_id, photo, _ in people:
        ui.enrol(subject_id, photo)
        assert f"Enrolled {subject_id} in {GALLERY}" in ui.banner("ok")
        assert ui.visible(".enrolled h2").text == f"Enrolled: {subject_id}"
        assert "capture stored" in ui.find(".enrolled").text
    ui.screenshot("enrol")
    listed = service.http.get(f"/api/v1/galleries/{GALLERY}/subjects").json()
    assert sorted(listed["subject_ids"]) == sorted(p[0] for p in people)

    # A photo without a face: the API's refusal is shown.
    blank = tmp_path / "blank.png"
    Image.new("RGB", (320, 240), (128, 128, 128)).save(blank)
    ui.enrol("nobody", blank)
    assert ui.find("#enrol-faces .hint").text == "No face found in this photo."
    assert "(HTTP 422 no_face)" in ui.banner("error")
    assert ui.visible(".refused h2").text == "Refused: no_face"
    ui.screenshot("enrol-refused")

    # The webcam (Chromium's fake camera): the picture taken is a live capture.
    ui.find("#enrol-photo .webcam").click()
    ui.visible("#enrol-photo .take").click()
    ui.until(lambda: ui.find("#enrol-stage .capture").text.startswith("Capture: live capture"), "no live capture shown")

    # Identify the second photo of the second person: they come first.
    subject_id, _, probe = people[1]
    ui.go("match", "#match-photo")
    ui.type_into("#match-galleries", GALLERY)
    ui.choose_photo("match-photo", probe)
    ui.visible("#match-stage canvas")
    ui.find("#match-submit").click()
    main_face = ui.visible(".face-result")
    assert main_face.get_attribute("data-decision") == "match"
    candidates = main_face.find_elements("css selector", "tr.candidate")
    assert candidates[0].get_attribute("data-subject") == subject_id
    assert main_face.find_element("css selector", ".decision").text.startswith(f"match: {subject_id} (gallery {GALLERY}")
    ui.screenshot("identify")

    # Erase that subject, after a confirmation naming it.
    ui.go(f"galleries/{GALLERY}/{subject_id}", "#subject-erase")
    assert len(ui.all("#subject-list tr[data-subject]")) == 3
    ui.screenshot("subjects")
    ui.find("#subject-erase").click()
    confirmation = ui.visible("#confirm-dialog").text
    assert f'subject "{subject_id}" of gallery "{GALLERY}"' in confirmation
    ui.screenshot("erase-confirm")
    ui.find("#confirm-ok").click()
    assert f"Erased subject {subject_id}" in ui.banner("ok")
    ui.until(lambda: len(ui.all("#subject-list tr[data-subject]")) == 2, "the erased subject is still listed")
    assert service.http.get(f"/api/v1/galleries/{GALLERY}/subjects/{subject_id}").status_code == 404

    # Operations: every shard ready, and the writer of its log (this cluster took traffic).
    ui.go("operations", "#shards")
    rows = [[td.text for td in row.find_elements("css selector", "td")] for row in ui.all("#shards tbody tr")]
    assert rows and all(cells[1] == "ready" and cells[7] == "writer" for cells in rows), rows
    sessions = [[td.text for td in row.find_elements("css selector", "td")] for row in ui.all("#stages tbody tr")]
    assert ["embedder", "mobilefacenet_foamliu", "CPUExecutionProvider"] in sessions, sessions
    assert {cells[0] for cells in sessions} == {"detector", "quality", "liveness", "embedder"}, sessions
    ui.screenshot("operations")

    # The audit trail of the gallery holds what was done here.
    ui.go("audit", "#audit-filters")
    ui.type_into("#audit-gallery", GALLERY)
    ui.find("#audit-apply").click()
    ui.until(lambda: {"gallery_create", "enrol", "identify", "delete"}
             <= {r.get_attribute("data-operation") for r in ui.all("#audit-records tr[data-operation]")},
             "the audit screen lacks the records of this test's operations")
    # Read inside `until`: the list may render again (the filtered answer) while it is read.
    ui.until(lambda: any("no_face" in r.text for r in ui.all("#audit-records tr[data-operation='enrol']")),
             "the refused enrolment is not in the trail")
    ui.screenshot("audit")

    # Delete the gallery, after a confirmation naming what goes with it.
    ui.go("galleries", f"tr[data-gallery='{GALLERY}']")
    ui.find(f"tr[data-gallery='{GALLERY}'] .delete-gallery").click()
    assert f'erases gallery "{GALLERY}" with its 2 subjects and 2 templates' in ui.visible("#confirm-dialog").text
    ui.find("#confirm-ok").click()
    assert f"Deleted gallery {GALLERY}: 2 templates erased." in ui.banner("ok")
    ui.until(lambda: not ui.all(f"tr[data-gallery='{GALLERY}']"), "the deleted gallery is still listed")
