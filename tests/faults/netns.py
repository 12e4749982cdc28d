"""Two test hosts joined by one edge, for the fault scenarios that cut a link between
machines (test_faults_net.py): two network namespaces made for the test, a veth pair
between them, and the stage commands run inside them with `ip netns exec`.

A cut drops every packet both ways (a blackhole qdisc on each end of the pair), without
any reset or error on either host, as a pulled cable or a dead switch would. Making the
hosts needs root and iproute2; where they are missing the test is skipped.
"""

import contextlib
import os
import shutil
import signal
import subprocess

import pytest

from conftest import command, wait_for

SUBNET = '10.231.0.{}'      # a private test range, only inside the namespaces made here
DEVICES = ('rzedge0', 'rzedge1')


def _tool(name):
    return shutil.which(name) or shutil.which(name, path='/usr/sbin:/sbin')


class Hosts:
    """Namespaces rz<pid>-0 and rz<pid>-1, at 10.231.0.1 and 10.231.0.2."""

    def __init__(self, procs):
        self.procs = procs
        self.names = tuple(f"rz{os.getpid()}-{i}" for i in range(2))
        self.made = []
        self.started = []
        self.ip, self.tc = _tool('ip'), _tool('tc')

    def address(self, host):
        return SUBNET.format(host + 1)

    def create(self):
        """Make the hosts and their edge; skip the test where that is not permitted."""
        if self.ip is None or self.tc is None:
            pytest.skip("two test hosts need iproute2 (ip and tc): not found")
        for name in self.names:
            made = subprocess.run([self.ip, 'netns', 'add', name], capture_output=True,
                                  text=True, timeout=30)
            if made.returncode:
                pytest.skip(f"cannot make a network namespace (ip netns add {name}): "
                            f"{made.stderr.strip()}")
            self.made.append(name)
        first, second = self.names
        self._ip(first, 'link', 'add', DEVICES[0], 'type', 'veth', 'peer', 'name',
                 DEVICES[1], 'netns', second)
        for host, (name, device) in enumerate(zip(self.names, DEVICES)):
            self._ip(name, 'addr', 'add', f"{self.address(host)}/24", 'dev', device)
            self._ip(name, 'link', 'set', device, 'up')
            self._ip(name, 'link', 'set', 'lo', 'up')
        blackhole = self._tc(first, 'add', check=False)
        if blackhole.returncode:
            pytest.skip(f"cannot cut an edge (tc qdisc add ... blackhole): "
                        f"{blackhole.stderr.strip()}")
        self._tc(first, 'del')

    def start(self, host, args, **kwargs):
        """Start an rz command on a host; the Popen's pid is the command's own (ip netns
        exec execs it), which is checked, so that it is stopped by that pid."""
        path = command(args[0])
        kwargs.setdefault('stdin', subprocess.DEVNULL)
        proc = self.procs.start([self.ip, 'netns', 'exec', self.names[host], path,
                                 *args[1:]], **kwargs)
        self.started.append(proc)

        def execed():
            with open(f'/proc/{proc.pid}/cmdline', 'rb') as f:
                return path.encode() in f.read().split(b'\0')
        wait_for(lambda: proc.poll() is not None or execed(), timeout=10,
                 what=f'{args[0]} to run as pid {proc.pid}')
        return proc

    def cut(self):
        """Drop every packet on the edge, both ways."""
        for name in self.names:
            self._tc(name, 'add')

    def heal(self):
        for name in self.names:
            self._tc(name, 'del')

    def remove(self):
        """Stop the commands started on the hosts, by pid, then remove the hosts (their
        edge goes with them)."""
        for proc in self.started:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        failed = []
        for name in reversed(self.made):
            removed = subprocess.run([self.ip, 'netns', 'del', name], capture_output=True,
                                     text=True, timeout=30)
            if removed.returncode:
                failed.append(f"{name}: {removed.stderr.strip()}")
        self.made = []
        assert not failed, f"cannot remove the test hosts: {failed}"

    def _ip(self, name, *args):
        subprocess.run([self.ip, '-n', name, *args], check=True, capture_output=True,
                       timeout=30)

    def _tc(self, name, verb, check=True):
        device = DEVICES[self.names.index(name)]
        args = ['qdisc', verb, 'dev', device, 'root']
        if verb == 'add':
            args.append('blackhole')
        return subprocess.run([self.ip, 'netns', 'exec', name, self.tc, *args],
                              check=check, capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def two_hosts(procs):
    """Two test hosts joined by one edge (Hosts), removed at the end, pass or fail."""
    made = Hosts(procs)
    try:
        made.create()
        yield made
    finally:
        made.remove()
