"""A real rz-master and rz-workers on loopback for the control-plane tests: each worker
binds its own address (127.0.0.2, 127.0.0.3 ...), every process is started through the
`procs` fixture and so stopped by its pid when the test ends."""

import os
import shutil
import sqlite3
import subprocess
import time

from conftest import TESTS, stderr_of, wait_for
from test_edges import free_port
from rezina.control.protocol import Client
from rezina.errors import RezinaError
from rezina.security import Security, load_keys, public_key, write_key_pair

WORKSPACE_FILES = ('fixtures_cluster.py',)


class Cluster:
    """With curve=True every process has its own CURVE key pair (keys/NAME.key_secret) and
    lets in the others' (keys/allowed)."""

    def __init__(self, procs, tmp_path, files=WORKSPACE_FILES, curve=False):
        self.procs = procs
        self.keys = tmp_path / 'keys' if curve else None
        if curve:
            (self.keys / 'allowed').mkdir(parents=True)
            for name in ('master', 'client', '127.0.0.2', '127.0.0.3', '127.0.0.4'):
                self.add_key(name)
        self.tmp = tmp_path
        self.port = free_port()
        self.http_port = free_port()
        self.workspace = tmp_path / 'workspace'
        self.logs = tmp_path / 'logs'
        self.state = tmp_path / 'state'
        self.workspace.mkdir()
        for path in files:
            shutil.copy(os.path.join(TESTS, path), self.workspace)
        self.master = None
        self.workers = {}

    def add_key(self, name, allowed=True):
        """Write NAME's key pair; its public key goes in keys/allowed if allowed."""
        public, _ = write_key_pair(str(self.keys), name)
        if allowed:
            shutil.copy(public, self.keys / 'allowed')

    def curve_options(self, name, master_key=True):
        if self.keys is None:
            return []
        return ['--curve-key', str(self.keys / f'{name}.key_secret'), '--curve-allow',
                str(self.keys / 'allowed'),
                *(['--master-key', str(self.keys / 'master.key')] if master_key else [])]

    def start_master(self, *extra):
        self.master = self.procs.start(
            ['rz-master', '-P', str(self.port), '--http-port', str(self.http_port), '-W',
             str(self.workspace), '-L', str(self.logs), '--state-dir', str(self.state),
             *self.curve_options('master', master_key=False), *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        wait_for(lambda: self.answers() or self.master.poll() is not None, timeout=20,
                 what='rz-master to answer')
        assert self.master.poll() is None, stderr_of(self.master)
        return self.master

    def start_worker(self, ip, slots=4, env=None):
        proc = self.procs.start(
            ['rz-worker', '-P', str(self.port), '--worker-ip', ip, '--slots', str(slots),
             '--root', str(self.tmp / f'worker-{ip}'), *self.curve_options(ip)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env or {})
        self.workers[ip] = proc
        wait_for(lambda: self.worker_state(ip) == 'ONLINE', timeout=20,
                 what=f'worker {ip} online')
        return proc

    def client(self, name='client'):
        if self.keys is None:
            return Client('127.0.0.1', self.port)
        return Client('127.0.0.1', self.port, security=Security(load_keys(
            str(self.keys / f'{name}.key_secret'))), server_key=public_key(
            str(self.keys / 'master.key'), 'master key'))

    def request(self, op, **args):
        client = self.client()
        try:
            return client.request(op, **args)
        finally:
            client.close()

    def answers(self):
        try:
            self.request('workers')
            return True
        except RezinaError:
            return False

    def worker_state(self, ip):
        for w in self.request('workers'):
            if w['address'] == ip:
                return w['state']
        return None

    def nodes(self, typology, stage=None):
        return [n for n in self.request('ps', typology=typology)
                if stage is None or n['stage'] == stage]

    def running(self, typology, stage=None, count=None):
        """The nodes of a stage once all are RUNNING with a pid (and count of them)."""
        nodes = self.nodes(typology, stage)
        ok = nodes and all(n['state'] == 'RUNNING' and n['pid'] for n in nodes)
        return nodes if ok and (count is None or len(nodes) == count) else None

    def wait_running(self, typology, stage=None, count=None, timeout=30):
        wait_for(lambda: self.running(typology, stage, count), timeout=timeout,
                 what=f'{typology} {stage or ""} running')
        return self.running(typology, stage, count)

    def log(self, typology):
        path = self.logs / f'{typology}.log'
        return path.read_text() if path.exists() else ''


def rows(db, sql='SELECT rz_id, rz_run FROM items'):
    """The rows of a sink's SQLite database so far ([] before it exists)."""
    if not os.path.exists(db):
        return []
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []


def time_until(predicate, timeout, step=0.05):
    """Seconds until predicate holds, or None after timeout."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if predicate():
            return time.monotonic() - began
        time.sleep(step)
    return None
