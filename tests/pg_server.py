"""A throwaway PostgreSQL server for tests: a new cluster in a temporary directory, on 127.0.0.1.

Uses Debian's ``postgresql`` package (installed by ``.ci/run``). The server refuses to run
as root, so when the tests run as root the cluster belongs to the ``postgres`` system user
and its commands run through ``runuser``. Nothing outside the temporary directory is used:
no system cluster, no systemd, TCP on loopback only, trust authentication.
"""
import glob
import os
import shutil
import socket
import subprocess
import tempfile


def pg_bin():
    """Directory of initdb/pg_ctl (Debian keeps them out of PATH), or None."""
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.isfile(os.path.join(d, "initdb")):
            return d
    found = shutil.which("initdb")
    return os.path.dirname(found) if found else None


def missing():
    """Why a server cannot be started here, or None."""
    if pg_bin() is None:
        return "PostgreSQL server binaries not found (apt-get install postgresql)"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed (pip install -r requirements.txt)"
    if os.geteuid() == 0:
        try:
            import pwd
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to own the cluster"
    return None


class PostgresServer:
    """``with PostgresServer() as pg: pg.url`` -> ``postgresql://postgres@127.0.0.1:PORT/tests``."""

    def __init__(self, dbname="tests"):
        self.dbname = dbname
        self.bin = pg_bin()
        self.port = None
        self.root = None

    def _run(self, *cmd, check=True):
        cmd = [os.path.join(self.bin, cmd[0]), *cmd[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=120)

    def __enter__(self):
        self.root = tempfile.mkdtemp(prefix="pgtest-")
        os.chmod(self.root, 0o755)
        data = os.path.join(self.root, "data")
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
        opts = f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} -c fsync=off"
        try:
            self._run("pg_ctl", "-D", data, "-o", opts, "-l", os.path.join(self.root, "server.log"), "-w", "start")
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", self.dbname)
        except subprocess.CalledProcessError as e:
            log = os.path.join(self.root, "server.log")
            tail = open(log).read()[-500:] if os.path.exists(log) else ""
            self.__exit__()
            raise RuntimeError(f"PostgreSQL did not start: {e.stderr.strip()} {tail}") from None
        return self

    @property
    def url(self):
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.dbname}"

    def __exit__(self, *exc):
        if self.root:
            self._run("pg_ctl", "-D", os.path.join(self.root, "data"), "-m", "immediate", "-w", "stop", check=False)
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
