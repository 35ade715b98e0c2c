"""Which sockets the processes a test starts listen on, sampled while they run."""

import threading

import psutil

LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


class Listeners:
    """Every process under the given roots and its listening TCP sockets, sampled every two
    seconds by a background thread while the tests run."""

    def __init__(self):
        self.roots: set[int] = set()
        self.seen: set[tuple[str, str, int]] = set()
        self.procs: dict[tuple[int, float], str] = {}  # (pid, start time) -> name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        procs = {proc.pid: proc for root in list(self.roots) for proc in tree(root)}
        names = {}
        for proc in procs.values():
            try:
                names[proc.pid] = proc.name()
                self.procs[(proc.pid, proc.create_time())] = names[proc.pid]
            except psutil.Error:
                pass
        for conn in psutil.net_connections(kind="tcp"):  # one read of /proc for all of them
            if conn.status == psutil.CONN_LISTEN and conn.pid in names:
                self.seen.add((names[conn.pid], conn.laddr.ip, conn.laddr.port))

    def alive(self) -> list[str]:
        """The sampled processes still running."""
        left = []
        for (pid, started), name in self.procs.items():
            try:
                if psutil.Process(pid).create_time() == started:
                    left.append(f"{pid} {name}")
            except psutil.NoSuchProcess:
                pass
        return left

    def _run(self) -> None:
        while not self._stop.wait(2.0):
            self.sample()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
