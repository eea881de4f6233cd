"""Real services for the tests of the team's deployment (docs/cluster.md): a PostgreSQL 15 and an
MLflow tracking server on it that proxies artifacts, both started by the test session, once.

    postgres        initdb + pg_ctl in a fresh temp dir, on a free 127.0.0.1 port, run as the
                    `postgres` user when the session is root (the server refuses root)
    mlflow_schema   once: a database holding MLflow's migrated schema (`mlflow db upgrade`), which
                    every server's database is created from (CREATE DATABASE ... TEMPLATE), so no
                    server start runs MLflow's ~50 schema migrations again
    mlflow_server   `mlflow server --backend-store-uri postgresql://... --artifacts-destination DIR`
                    in its own session (its workers die with it); yields its http:// URL

No skip: a machine without the PostgreSQL binaries fails these tests with how to get them.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_USER = "postgres"   # the database superuser initdb creates (-U), and the OS user it runs as under root
MLFLOW_DB = "mlflow"
MLFLOW_SCHEMA_DB = "mlflow_schema"   # the template: MLflow's tables, no runs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bindir() -> Path | None:
    """The folder of initdb/pg_ctl/psql: initdb's on PATH, else `pg_config --bindir`'s."""
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    path = Path(out.stdout.strip()) if out.returncode == 0 else None
    return path if path is not None and (path / "initdb").is_file() else None


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    bindir: Path
    root: Path                  # data dir (root/data), socket dir (root) and log (root/log)

    def uri(self, db: str) -> str:
        return f"postgresql://{PG_USER}@{self.host}:{self.port}/{db}"

    def restart(self) -> None:
        """pg_ctl restart -m fast (the server's clients lose their connections). -l: the new
        postmaster writes to the log, not to pg_ctl's pipes (which would keep run_as_pg waiting)."""
        run_as_pg([self.bindir / "pg_ctl", "-D", self.root / "data", "-l", self.root / "log", "-w", "-t", "60",
                   "-m", "fast", "restart"], cwd=self.root, timeout=90)

    def psql(self, sql: str) -> None:
        run_as_pg([self.bindir / "psql", "-h", self.host, "-p", str(self.port), "-U", PG_USER, "-d", "postgres",
                   "-v", "ON_ERROR_STOP=1", "-c", sql], cwd=self.root)


def _as_pg(cmd: list) -> list[str]:
    cmd = [str(c) for c in cmd]
    return ["runuser", "-u", PG_USER, "--", *cmd] if os.geteuid() == 0 else cmd


def run_as_pg(cmd: list, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run(_as_pg(cmd), capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc


def _stop_postgres(pg: Postgres) -> None:
    """pg_ctl stop -m fast; failing that, SIGQUIT (immediate shutdown) then SIGKILL its postmaster."""
    data = pg.root / "data"
    try:
        run_as_pg([pg.bindir / "pg_ctl", "-D", data, "-w", "-t", "30", "stop", "-m", "fast"], cwd=pg.root, timeout=40)
        return
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"pg_ctl stop failed ({e}); killing the postmaster", file=sys.stderr)
    pidfile = data / "postmaster.pid"
    if not pidfile.is_file():
        return
    pid = int(pidfile.read_text().split()[0])
    for sig, wait in ((signal.SIGQUIT, 10), (signal.SIGKILL, 5)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + wait
        while time.time() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of its own (trust auth on 127.0.0.1 only), stopped at the session's end."""
    bindir = pg_bindir()
    if bindir is None:
        pytest.fail("PostgreSQL server binaries not found (no initdb on PATH, no `pg_config --bindir`): "
                    "install them, on Debian/Ubuntu `apt-get install postgresql`", pytrace=False)
    # the postgres user must enter it: under /tmp, never under root's closed home (pytest's tmp_path)
    root = Path(tempfile.mkdtemp(prefix="mlora-pg-", dir="/tmp"))
    if os.geteuid() == 0:
        import pwd
        try:
            user = pwd.getpwnam(PG_USER)
        except KeyError:
            shutil.rmtree(root)
            pytest.fail(f"running as root and there is no `{PG_USER}` user to run PostgreSQL as (it refuses root): "
                        "on Debian/Ubuntu `apt-get install postgresql` creates it", pytrace=False)
        os.chown(root, user.pw_uid, user.pw_gid)
    data = root / "data"
    pg = None
    try:
        run_as_pg([bindir / "initdb", "-A", "trust", "-U", PG_USER, "-E", "UTF8", "-D", data], cwd=root, timeout=120)
        for attempt in range(3):  # a free port can be taken between free_port() and the bind: try another
            port = free_port()
            try:
                run_as_pg([bindir / "pg_ctl", "-D", data, "-l", root / "log", "-w", "-t", "60",
                           "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"], cwd=root, timeout=90)
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        pg = Postgres("127.0.0.1", port, bindir, root)
        yield pg
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        log = (root / "log").read_text(errors="replace")[-3000:] if (root / "log").is_file() else ""
        pytest.fail(f"PostgreSQL did not start: {e}\n{log}", pytrace=False)
    finally:
        if (data / "postmaster.pid").is_file():
            _stop_postgres(pg or Postgres("127.0.0.1", 0, bindir, root))
        shutil.rmtree(root, ignore_errors=True)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's whole process group (leader + uvicorn workers), SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        try:  # the leader is gone; its workers may not be yet
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(1)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class MlflowServer:
    """`mlflow server` on a PostgreSQL database, proxying artifacts to a local folder
    (--artifacts-destination, so clients see `mlflow-artifacts:` URIs), one uvicorn worker, on a
    fixed 127.0.0.1 port: `kill()` SIGKILLs it (the fault tests) and `start()` brings it back on
    the same port and store, as an operator's restart would."""

    def __init__(self, postgres: Postgres, db: str, home: Path, schema: str | None = None):
        postgres.psql(f"CREATE DATABASE {db}" + (f" TEMPLATE {schema}" if schema else ""))
        self.store, self.home, self.port = postgres.uri(db), home, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> MlflowServer:
        env = _mlflow_env()
        # no job runner (huey consumer): mlora uses no server-side jobs, and it is one more process on 2 cores
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        log_path = self.home / "server.log"
        with open(log_path, "a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.store,
                 "--artifacts-destination", str(self.home / "artifacts"), "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", "1"],
                cwd=self.home, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 90
        while not _healthy(self.url):
            if self.proc.poll() is not None or time.time() > deadline:
                why = f"exited {self.proc.returncode}" if self.proc.poll() is not None else "no /health answer in 90 s"
                self.stop()
                pytest.fail(f"mlflow server on {self.store}: {why}\n"
                            f"{log_path.read_text(errors='replace')[-4000:]}", pytrace=False)
            time.sleep(0.5)
        return self

    def kill(self) -> None:
        """SIGKILL the whole server (leader and workers) at once: a crash, no clean shutdown."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc)


def _mlflow_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}


@pytest.fixture(scope="session")
def mlflow_schema(postgres) -> str:
    """A database with MLflow's schema, migrated once (`mlflow db upgrade`, what a server does on
    an empty database: ~50 alembic revisions, several seconds of Python): its name, the template
    of each server's database. Nothing connects to it afterwards (a template must be idle)."""
    postgres.psql(f"CREATE DATABASE {MLFLOW_SCHEMA_DB}")
    proc = subprocess.run([sys.executable, "-m", "mlflow", "db", "upgrade", postgres.uri(MLFLOW_SCHEMA_DB)],
                          capture_output=True, text=True, timeout=300, env=_mlflow_env())
    if proc.returncode != 0:
        pytest.fail(f"mlflow db upgrade exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}",
                    pytrace=False)
    return MLFLOW_SCHEMA_DB


@pytest.fixture(scope="session")
def mlflow_server(postgres, mlflow_schema, tmp_path_factory):
    """The session's tracking server (MlflowServer) on PostgreSQL. Yields http://127.0.0.1:PORT."""
    server = MlflowServer(postgres, MLFLOW_DB, tmp_path_factory.mktemp("mlflow-server"), mlflow_schema)
    try:
        yield server.start().url
    finally:
        server.stop()


@pytest.fixture
def own_mlflow_server(postgres, mlflow_schema, tmp_path):
    """A tracking server of the test's own (its own database), for tests that kill and restart it."""
    server = MlflowServer(postgres, f"mlflow_{tmp_path.name.lower().replace('-', '_')[:40]}", tmp_path / "server",
                          mlflow_schema)
    (tmp_path / "server").mkdir()
    try:
        yield server.start()
    finally:
        server.stop()
