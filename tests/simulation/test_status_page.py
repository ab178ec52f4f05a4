"""The coordinator's read-only status page: its JSON is metrics.jsonl, it renders in headless Chromium,
it binds loopback by default, refuses writes and shows device-quoted text as text."""
from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.identity import device_id
from simulation.coordinator.config import CoordinatorConfig
from simulation.coordinator.rounds import Coordinator
from simulation.coordinator.server import start_server
from simulation.coordinator.status_page import StatusServer, coordinator_status, render_html
from tests.conftest import REPO_ROOT
from tests.simulation.serving import enrolled, metrics, published
from tests.simulation.test_coordinator import run_round

pytestmark = pytest.mark.slow
ARTIFACTS = REPO_ROOT / "build" / "test-artifacts"
MARKUP = "<script>alert(1)</script> stale model: quoted by a device"


@pytest.fixture(scope="module")
def page(tmp_path_factory, federation_dir):  # noqa: F811
    """A coordinator after two closed rounds, with round 3 open and one rejection quoting markup, and its page."""
    tmp_path = tmp_path_factory.mktemp("status")
    config = CoordinatorConfig(
        address="127.0.0.1:0", state_dir=str(tmp_path / "state"), devices_file=enrolled(tmp_path, ("a", "b", "c")), rounds=3, clients_per_round=2,
        overselect=1.0, codec="fp16", dataset="mitdb", data_dir=str(federation_dir), export_tflite=False, insecure=True, status_port=0,
    )
    coordinator = Coordinator(config)
    server, port = start_server(coordinator, config)
    size = coordinator.manifest["parameters"]
    rng = np.random.default_rng(0)
    for _ in range(2):
        run_round(coordinator, f"127.0.0.1:{port}", {t: (rng.normal(0, 1e-3, size).astype(np.float32), 300) for t in ("a", "b")})
    coordinator.store.reject(3, device_id("c"), MARKUP)
    published(Path(config.state_dir), lines=3)
    status = StatusServer(config.status_host, config.status_port, lambda: coordinator_status(Path(config.state_dir), coordinator.store)).start()
    yield coordinator, status, f"http://{status.host}:{status.port}"
    status.stop()
    server.stop(grace=0)
    coordinator.close()


def fetch(url: str, method: str = "GET") -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_status_json_is_metrics_jsonl_plus_the_open_round(page):
    coordinator, _, url = page
    code, headers, body = fetch(url + "/status.json")
    status = json.loads(body)
    assert code == 200 and headers["Content-Type"] == "application/json"
    assert status["rounds"] == metrics(Path(coordinator.config.state_dir)) and [r["round"] for r in status["rounds"]] == [0, 1, 2]
    assert status["open_round"]["round"] == 3 and status["open_round"]["reported"] == 0
    assert status["rejections_by_reason"] == {"<script>alert(1)</script> stale model": 1}
    assert status["model_versions"] == [r["model_version"] for r in status["rounds"]] and len(set(status["model_versions"])) == 3
    assert status["epsilon_spent"] is None  # no DP in this federation


def test_the_page_is_read_only_and_shows_quoted_markup_as_text(page):
    _, status, url = page
    code, headers, body = fetch(url + "/")
    text = body.decode()
    assert code == 200 and "default-src 'none'" in headers["Content-Security-Policy"]
    assert "<script" not in text and "&lt;script&gt;alert(1)&lt;/script&gt; stale model" in text
    for method in ("POST", "PUT", "DELETE"):
        assert fetch(url + "/status.json", method)[0] == 405
    assert fetch(url + "/metrics.jsonl")[0] == 404 and fetch(url + "/../coordinator.sqlite")[0] == 404
    assert status.host == "127.0.0.1" and CoordinatorConfig.__dataclass_fields__["status_port"].default is None  # off unless asked for


def chromium(*args: str, user_data: Path) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("headless Chromium not installed (Debian package chromium; .ci/run installs it)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={user_data}"]
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=120)


def test_headless_chromium_renders_the_round_table_and_the_metric_plots(page, tmp_path):
    _, _, url = page
    dom = chromium("--dump-dom", url + "/", user_data=tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    rounds_table = dom.stdout.split('<table id="rounds">', 1)[1].split("</table>", 1)[0]
    assert rounds_table.count("<tr>") == 1 + 3  # header + rounds 2, 1, 0
    assert dom.stdout.count("<polyline") == 3 and "round 3 open" in dom.stdout
    assert "<script" not in dom.stdout  # the quoted markup stayed text: nothing ran, nothing was inserted
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = chromium(f"--screenshot={ARTIFACTS / 'status_page.png'}", "--window-size=1200,900", url + "/", user_data=tmp_path / "profile-shot")
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert (ARTIFACTS / "status_page.png").stat().st_size > 10_000


def test_an_abandoned_round_shows_its_reason_as_text():
    status = {
        "rounds": [{"round": 1, "model_version": "ab" * 8, "abandoned": True, "abandoned_reason": "cannot unmask: the seed of <b>dev</b>: 4 shares, 5 needed"}],
        "open_round": None, "rejections_by_reason": {}, "model_versions": [], "epsilon_spent": None,
    }
    text = render_html(status)
    assert "cannot unmask: the seed of &lt;b&gt;dev&lt;/b&gt;: 4 shares, 5 needed" in text and "<b>dev" not in text
