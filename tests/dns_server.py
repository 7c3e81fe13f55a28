"""NSD, Debian's authoritative DNS server, in a test namespace, with reverse zones."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

import dns.reversename

from tests.netns import NetnsPair

SOA = "ns1.example.test. hostmaster.example.test. 1 3600 600 86400 45"


def label(text: str) -> str:
    """A zone-file label for any text: everything but letters and digits as \\DDD."""
    return "".join(c if c.isalnum() else f"\\{ord(c):03d}" for c in text)


def relative(address: str, origin: str) -> str:
    full = dns.reversename.from_address(address).to_text()
    assert full.endswith("." + origin + ".")
    return full[:-len(origin) - 2]


class NsdServer:
    """`records`: zone origin -> zone-file lines; `broken`: zones whose file is missing."""

    def __init__(self, pair: NetnsPair, workdir: Path, records: dict[str, list[str]],
                 broken: tuple[str, ...] = ()) -> None:
        self.pair, self.dir = pair, workdir / "nsd"
        self.dir.mkdir()
        self.records = records
        self.broken = broken
        self.proc: subprocess.Popen[str] | None = None

    def write_zones(self) -> None:
        for origin, lines in self.records.items():
            (self.dir / f"{origin}.zone").write_text(
                f"$ORIGIN {origin}.\n$TTL 300\n@ IN SOA {SOA}\n@ IN NS ns1.example.test.\n"
                + "\n".join(lines) + "\n")

    def __enter__(self) -> NsdServer:
        self.write_zones()
        zones = "".join(f"zone:\n  name: {origin}\n  zonefile: {self.dir}/{origin}.zone\n"
                        for origin in (*self.records, *self.broken))
        config = self.dir / "nsd.conf"
        config.write_text(
            "server:\n"
            f"  ip-address: {self.pair.remote_v4}\n  port: 53\n  username: \"\"\n"
            f"  chroot: \"\"\n  zonesdir: \"{self.dir}\"\n  pidfile: \"{self.dir}/nsd.pid\"\n"
            f"  logfile: \"{self.dir}/nsd.log\"\n  xfrdfile: \"{self.dir}/xfrd.state\"\n"
            f"  zonelistfile: \"{self.dir}/zone.list\"\n  database: \"\"\n  verbosity: 2\n"
            "remote-control:\n  control-enable: no\n" + zones)
        self.proc = self.pair.popen(self.pair.remote, "nsd", "-d", "-c", str(config))
        deadline = time.monotonic() + 20
        log = self.dir / "nsd.log"
        while time.monotonic() < deadline:
            if log.exists() and "nsd started" in log.read_text():
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.__exit__(None, None, None)
        raise AssertionError(f"nsd did not start: {log.read_text() if log.exists() else ''}")

    def reload(self) -> None:
        """Re-read the zone files (NSD reloads them on SIGHUP)."""
        self.write_zones()
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.communicate(timeout=10)
