"""An executed notebook, opened in JupyterLab in a real (headless) Chromium, looks right.

What a person sees: the title heading, every figure as a loaded image, no
traceback. JupyterLab runs from the venv on 127.0.0.1 with a token and a temp
root and config folder; Chromium is the system one, driven by its chromedriver.
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.support.ui import WebDriverWait

from pcam.core.paths import PROJ_ROOT

pytestmark = pytest.mark.slow

# The published run's executed notebook; PCAM_BROWSER_NOTEBOOK checks another one
# (e.g. results/demo/mobilenet-demo/01_mobilenet_transfer.ipynb after `make demo`).
NOTEBOOK = Path(os.environ.get("PCAM_BROWSER_NOTEBOOK") or
                PROJ_ROOT / "results" / "mobilenet-subset" / "01_mobilenet_transfer.ipynb")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1400,1000"]
IMAGES = ".jp-OutputArea-output img"
STDERR = '.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]'
# JupyterLab settings for the temp config folder: no news or update requests.
SETTINGS = {"@jupyterlab/apputils-extension/notification.jupyterlab-settings":
            {"fetchNews": "false", "checkForUpdates": False}}


def _browser_paths() -> tuple[str, str]:
    """The system Chromium and chromedriver; skip (never pass) when either is missing."""
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
    if browser is None:
        pytest.skip("Chromium is not installed (no chromium or chromium-browser on PATH); "
                    "apt-get install chromium chromium-driver")
    driver = shutil.which("chromedriver")
    if driver is None:
        pytest.skip("chromedriver is not installed (no chromedriver on PATH); "
                    "apt-get install chromium-driver")
    return browser, driver


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _expected(notebook) -> dict:
    """From the .ipynb: title, number of PNG outputs, number of error outputs."""
    cells = json.loads(notebook.read_text())["cells"]
    outputs = [o for c in cells if c["cell_type"] == "code" for o in c["outputs"]]
    markdown = "".join(next(c for c in cells if c["cell_type"] == "markdown")["source"])
    title = next(line[2:].strip() for line in markdown.splitlines() if line.startswith("# "))
    return {"title": title,
            "png": sum("image/png" in o.get("data", {}) for o in outputs),
            "errors": sum(o["output_type"] == "error" for o in outputs)}


def _stop(server: subprocess.Popen) -> None:
    """End the server and the kernel it started (its own process group)."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=15)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


@pytest.fixture
def lab(tmp_path):
    """JupyterLab from this venv on a free port; yields (base URL, token, root folder)."""
    root, config = tmp_path / "root", tmp_path / "jupyter-config"
    root.mkdir()
    for name, values in SETTINGS.items():
        path = config / "lab" / "user-settings" / name
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(values))
    token, port = secrets.token_hex(16), _free_port()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config),
           "JUPYTER_DATA_DIR": str(tmp_path / "jupyter-data"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
           "IPYTHONDIR": str(tmp_path / "ipython")}
    log = (tmp_path / "jupyterlab.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
         f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}", *(["--allow-root"] if os.geteuid() == 0 else [])],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited ({server.returncode}): "
                            f"{(tmp_path / 'jupyterlab.log').read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("JupyterLab did not answer within 60 s")
                time.sleep(0.5)
        yield base, token, root
    finally:
        _stop(server)
        log.close()


@pytest.fixture
def browser(tmp_path):
    """Headless system Chromium through chromedriver, with a fresh profile."""
    browser_path, driver_path = _browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser_path
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=driver_path)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _visible_images(driver) -> list[dict]:
    """Each output image scrolled into view, with whether it shows and its natural width."""
    found = []
    for image in driver.find_elements("css selector", IMAGES):
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", image)
        loaded = driver.execute_script(
            "const i = arguments[0]; return i.complete ? i.naturalWidth : 0;", image)
        found.append({"displayed": image.is_displayed(), "natural_width": loaded,
                      "width": image.rect["width"]})
    return found


@pytest.fixture
def notebook():
    """The committed executed MobileNet notebook."""
    if not NOTEBOOK.exists():
        pytest.skip(f"{NOTEBOOK} is absent (no executed notebook yet)")
    return NOTEBOOK


def test_executed_notebook_renders_in_jupyterlab(notebook, browser, lab, tmp_path):
    base, token, root = lab
    shutil.copy(notebook, root / notebook.name)
    expected = _expected(notebook)
    assert expected["png"] >= 1, "the executed notebook holds no figure"

    browser.get(f"{base}/lab/tree/{notebook.name}?token={token}")
    wait = WebDriverWait(browser, 60)
    heading = wait.until(lambda d: next(
        (h for h in d.find_elements("css selector", ".jp-Notebook .jp-RenderedMarkdown h1")
         if h.is_displayed() and expected["title"] in h.text), None),
        message=f"no visible heading {expected['title']!r} within 60 s")
    assert heading.is_displayed()
    # Outputs render with the cells; wait until every PNG output has its <img>.
    wait.until(lambda d: len(d.find_elements("css selector", IMAGES)) >= expected["png"],
               message=f"fewer than {expected['png']} output images within 60 s")
    top = tmp_path / "notebook-top.png"
    browser.save_screenshot(str(top))

    images = _visible_images(browser)
    assert len(images) == expected["png"], images
    assert all(i["displayed"] and i["natural_width"] > 0 and i["width"] > 0 for i in images), images
    figure = tmp_path / "notebook-figure.png"
    browser.save_screenshot(str(figure))  # the last figure, scrolled into view

    stderr = [e.text for e in browser.find_elements("css selector", STDERR)]
    tracebacks = [t for t in stderr if "Traceback" in t or "Error:" in t]
    assert not tracebacks, tracebacks
    assert expected["errors"] == 0, "the executed notebook holds error outputs"
    print(f"\nscreenshots: {top} (title) and {figure} (last figure)")
