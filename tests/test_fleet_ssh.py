"""`ncebpf report ssh://...` over real sshd servers (Debian's openssh-server), one in each of
three test namespaces where ncebpf counts known traffic, with keys the test makes: the merged
report's numbers are exact, and a host that is down and one that refuses the key are named
as such, the report partial, the exit status 1 (0 with --partial-ok).

Topology: three NetnsPairs (ncebpf counts frames on each pair's own link) and a hub namespace
joined to each pair's local side by a veth of its own, 10.77.1{i}.0/24: the report runs in
the hub, and ssh's traffic never crosses a counted link.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ncebpf.filter.frames import ip_frame
from tests.netns import (
    CREATED,
    NCEBPF,
    PREFIX,
    TIME_SCALE,
    DaemonProcess,
    NetnsPair,
    run,
    stop_process,
)

pytestmark = pytest.mark.privileged

HOSTS = 3
REFUSING_PORT = 2222  # a second sshd on the last host whose authorized key is another one
SHARED_PEER = NetnsPair.remote_v4  # every pair's remote side: a peer all hosts see
SSHD = "/usr/sbin/sshd"


def host_address(index: int) -> str:
    return f"10.77.{11 + index}.1"


def hub_address(index: int) -> str:
    return f"10.77.{11 + index}.2"


DOWN = "10.77.11.9"  # on the hub's first link, where no one answers: ARP fails


@contextlib.contextmanager
def hub(pairs: list[NetnsPair]) -> Iterator[str]:
    """A namespace with a veth to each pair's local namespace; removed on the way out."""
    name = f"{PREFIX}{secrets.token_hex(3)}h"
    CREATED.add(name)
    run("ip", "netns", "add", name)
    try:
        for index, pair in enumerate(pairs):
            inside, outside = f"{name}{index}", f"{name}x{index}"
            run("ip", "link", "add", "name", inside, "netns", name, "type", "veth", "peer",
                "name", outside, "netns", pair.local)
            for ns, ifname, address in ((name, inside, hub_address(index)),
                                        (pair.local, outside, host_address(index))):
                run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{address}/24", "dev",
                    ifname)
                run("ip", "netns", "exec", ns, "ip", "link", "set", ifname, "up")
        run("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield name
    finally:
        for pid in run("ip", "netns", "pids", name, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), 9)
        run("ip", "netns", "del", name, check=False)


def keygen(path: Path) -> str:
    """A new ed25519 key pair at path (no passphrase); returns the public key line."""
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path))
    return path.with_suffix(".pub").read_text().strip()


@contextlib.contextmanager
def sshd(ns: str, workdir: Path, address: str, port: int, authorized: str) -> Iterator[None]:
    """Debian's sshd in namespace ns on address:port, root logging in with the authorized
    key only; stopped on the way out. Its host key is workdir/host_key."""
    tag = f"{address}-{port}"
    (workdir / f"authorized-{tag}").write_text(authorized + "\n")
    config = workdir / f"sshd-{tag}.conf"
    config.write_text(
        f"ListenAddress {address}:{port}\nHostKey {workdir / 'host_key'}\n"
        f"PidFile {workdir / f'sshd-{tag}.pid'}\n"
        f"AuthorizedKeysFile {workdir / f'authorized-{tag}'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        "LogLevel VERBOSE\n")
    log = (workdir / f"sshd-{tag}.log").open("w")
    server = subprocess.Popen(["ip", "netns", "exec", ns, SSHD, "-D", "-e", "-f", str(config)],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = 30 * TIME_SCALE
        waited = 0.0
        # Listening: a TCP connect from the namespace succeeds.
        probe = ("import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), "
                 "1).close()")
        while run("ip", "netns", "exec", ns, "python3", "-c", probe, address, str(port),
                  check=False).returncode != 0:
            assert server.poll() is None, (workdir / f"sshd-{tag}.log").read_text()
            assert waited < deadline, "sshd never listened"
            waited += 0.2
            time.sleep(0.2)
        yield
    finally:
        stop_process(server)
        log.close()


@contextlib.contextmanager
def privilege_separation_dir() -> Iterator[None]:
    """/run/sshd, which sshd requires (systemd makes it for the service, which never ran
    here); removed again if this test made it."""
    path = Path("/run/sshd")
    made = not path.exists()
    path.mkdir(mode=0o755, exist_ok=True)
    try:
        yield
    finally:
        if made:
            with contextlib.suppress(OSError):
                path.rmdir()


def report(ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run("ip", "netns", "exec", ns, *NCEBPF, "report", *args, check=False,
               timeout=120)


def test_a_report_over_three_hosts_is_exact_and_names_failing_hosts(
        privileged: None, tmp_path: Path) -> None:
    if shutil.which(SSHD) is None and not Path(SSHD).exists():
        pytest.fail("sshd is missing: make test installs openssh-server "
                    "(scripts/install-system-deps --test)")
    workdir = tmp_path
    client_key = keygen(workdir / "client_key")
    other_key = keygen(workdir / "other_key")
    host_key = keygen(workdir / "host_key").split()
    addresses = [host_address(i) for i in range(HOSTS)]
    known = ",".join([*addresses, f"[{addresses[-1]}]:{REFUSING_PORT}"])
    (workdir / "known_hosts").write_text(f"{known} {host_key[0]} {host_key[1]}\n")
    ssh_config = workdir / "ssh_config"
    ssh_config.write_text(
        f"Host *\n  User root\n  IdentityFile {workdir / 'client_key'}\n"
        f"  IdentitiesOnly yes\n  UserKnownHostsFile {workdir / 'known_hosts'}\n"
        "  StrictHostKeyChecking yes\n")
    # How the hosts start ncebpf: this checkout's, with the test's directories (the
    # instances share them under names of their own).
    remote = workdir / "remote-ncebpf"
    remote.write_text(f"#!/bin/sh\nexec {shlex.join(NCEBPF)} \"$@\" --statedir "
                      f"{workdir / 'state'} --piddir {workdir / 'run'}\n")
    remote.chmod(0o755)

    with contextlib.ExitStack() as stack:
        stack.enter_context(privilege_separation_dir())
        pairs = [stack.enter_context(NetnsPair(remote_ipv6=False)) for _ in range(HOSTS)]
        hub_ns = stack.enter_context(hub(pairs))
        daemons: list[DaemonProcess] = []
        sent: dict[str, tuple[int, int]] = {}  # peer -> (packets, bytes), over all hosts
        for index, pair in enumerate(pairs):
            # pcap mode: no program to compile (seconds a host), and the counting path is
            # not what this test is about.
            daemon = DaemonProcess(pair, workdir, "--filter", "udp", "--mode", "pcap",
                                   name=f"h{index}")
            stack.callback(daemon.stop)
            daemons.append(daemon)
            stack.enter_context(sshd(pair.local, workdir, host_address(index), 22, client_key))
            own_peer = f"10.77.{51 + index}.9"  # one peer only this host sees
            frames: list[bytes] = []
            for peer, size, count in ((SHARED_PEER, 100 + index, 10 * (index + 1)),
                                      (own_peer, 30, index + 2)):
                frame = ip_frame(peer, pair.local_v4, "udp", size)
                frames += [frame] * count
                packets, nbytes = sent.get(peer, (0, 0))
                sent[peer] = (packets + count, nbytes + count * len(frame))
            pair.inject_ingress(frames, workdir)
        stack.enter_context(sshd(pairs[-1].local, workdir, addresses[-1], REFUSING_PORT,
                                 other_key))

        common = ["--ssh-config", str(ssh_config), "--remote-ncebpf", str(remote),
                  "--by", "peer", "--format", "json"]
        good = [f"ssh://root@{host_address(i)}/h{i}" for i in range(HOSTS)]
        whole = report(hub_ns, *common, *good)
        assert whole.returncode == 0, whole.stderr
        document = json.loads(whole.stdout)
        peers = {member["address"]: (member["packets"], member["bytes"])
                 for group in document["groups"] for member in group["members"]}
        assert peers == sent
        dump = document["dump"]
        assert dump["partial"] is False and dump["failures"] == []
        assert [host["source"] for host in dump["hosts"]] == good
        assert [host["totals"]["packets"] for host in dump["hosts"]] == \
            [10 * (i + 1) + i + 2 for i in range(HOSTS)]
        assert dump["totals"]["packets"] == sum(packets for packets, _ in sent.values())
        assert dump["users"] == len(sent) == HOSTS + 1

        refused = f"ssh://{addresses[-1]}:{REFUSING_PORT}/h{HOSTS - 1}"
        down = f"ssh://{DOWN}/h0"
        hosts_file = workdir / "fleet"
        hosts_file.write_text("# the fleet\n" + "\n".join([*good, refused, down]) + "\n")
        partial = report(hub_ns, *common[:4], "--by", "peer", "--hosts", str(hosts_file),
                         "--timeout", "20")
        assert partial.returncode == 1, partial.stderr
        text = partial.stdout
        assert f"# host:\t{refused}\tFAILED: ssh: root@{addresses[-1]}: Permission denied " \
               "(publickey)." in text, text
        assert f"# host:\t{down}\tFAILED: ssh: connect to host {DOWN} port 22: No route to " \
               "host" in text, text
        assert "# partial:\t2 of 5 hosts gave no dump" in text
        assert "the report is partial: 2 of 5 sources gave no dump" in partial.stderr
        shared_packets = sent[SHARED_PEER][0]
        assert f"# users:\t{HOSTS + 1}\n" in text
        for index in range(HOSTS):
            assert f"# host:\t{good[index]}\tmode pcap, 2 peers, " \
                   f"{10 * (index + 1) + index + 2} packets" in text
        # --partial-ok: the same report, exit status 0; a remote ncebpf too slow for
        # --timeout fails alone.
        slow = workdir / "slow-ncebpf"
        slow.write_text(f"#!/bin/sh\nsleep 30\nexec {remote} \"$@\"\n")
        slow.chmod(0o755)
        timed_out = report(hub_ns, "--ssh-config", str(ssh_config), "--remote-ncebpf",
                           str(slow), "--timeout", "3", "--partial-ok", good[0],
                           str(workdir / "state" / "h1.json"))
        assert timed_out.returncode == 0, timed_out.stderr
        assert f"# host:\t{good[0]}\tFAILED: no dump within --timeout" in timed_out.stdout
        assert shared_packets == sum(10 * (i + 1) for i in range(HOSTS))
        # SIGTERM while the hosts are asked: the report ends, and so do its ssh clients.
        asked = subprocess.Popen(["ip", "netns", "exec", hub_ns, *NCEBPF, "report",
                                  "--ssh-config", str(ssh_config), "--remote-ncebpf",
                                  str(slow), *good], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30 * TIME_SCALE
        while not clients_in(hub_ns):
            assert time.monotonic() < deadline, "no ssh client started"
            time.sleep(0.1)
        asked.terminate()
        assert asked.wait(timeout=30 * TIME_SCALE) == 128 + 15
        assert clients_in(hub_ns) == []


def clients_in(ns: str) -> list[str]:
    """The ssh clients running in namespace ns."""
    found = []
    for pid in run("ip", "netns", "pids", ns, check=False).stdout.split():
        with contextlib.suppress(OSError):  # it may end while we look
            if Path(f"/proc/{pid}/comm").read_text().strip() == "ssh":
                found.append(pid)
    return found
