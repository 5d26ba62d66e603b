"""Headless Chromium (Debian's chromium and chromium-driver) driven with Selenium,
each page a JsSIP web phone (tests/clients/web/phone.js) whose state the test reads."""

from __future__ import annotations

import pathlib
import shutil
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

import pytest

from tests.clients.webphone import Unavailable, bundle, serving
from tests.helpers import eventually

# as root, without GPU or network beyond loopback; fake camera and microphone, no permission prompt;
# loopback ICE candidates (Chromium leaves them out by default)
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
         "--allow-loopback-in-peer-connection", "--autoplay-policy=no-user-gesture-required")


@contextmanager
def web_phone_site() -> Iterator[str]:
    try:
        bundle()
    except Unavailable as err:
        pytest.skip(f"JsSIP cannot be bundled: {err}")
    with serving() as url:
        yield url


class WebPhone:
    """One Chromium showing the web phone for `user`."""

    def __init__(self, site: str, workdir: pathlib.Path, server: str, user: str, password: str,
                 target: str = "") -> None:
        try:
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service
        except ImportError:
            pytest.skip("selenium not installed (`make test-interop` installs the interop extra)")
        binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
        if binary is None or driver is None:
            pytest.skip("chromium or chromedriver missing (Debian packages chromium, chromium-driver)")
        self.user = user
        profile = workdir / f"chromium-{user}"
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(driver, log_output=str(workdir / f"chromedriver-{user}.log")),
                                       options=options)
        query = urllib.parse.urlencode({"server": server, "domain": "example.com", "user": user,
                                        "password": password, "target": target, "auto": "1", "media": "127.0.0.1"})
        self.driver.get(f"{site}phone.html?{query}")

    def js(self, script: str) -> Any:
        return self.driver.execute_script(f"return {script}")

    def click(self, button: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver.find_element(By.ID, button).click()

    def bytes_received(self) -> int:
        return int(self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1]; window.phone.bytesReceived().then(done);"))

    def receives_media(self, beyond: int = 0, timeout: float = 10.0) -> int:
        """Bytes of RTP received so far, once more than `beyond` (media is flowing)."""
        received = [0]

        def more() -> bool:
            received[0] = self.bytes_received()
            return received[0] > beyond

        assert eventually(more, timeout), f"{self.user}: no media beyond {beyond} bytes; timeline:\n{self.timeline()}"
        return received[0]

    def wait(self, script: str, timeout: float = 15.0) -> None:
        """Until the page's `script` is true; the page's timeline in the failure."""
        assert eventually(lambda: bool(self.js(script)), timeout), \
            f"{self.user}: not {script} in {timeout}s; timeline:\n{self.timeline()}"

    def timeline(self) -> str:
        return "\n".join(self.js("window.phone.events"))

    def close(self) -> None:
        self.driver.quit()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
