"""Workspace snapshots: take on the master's side, materialize and gc on a worker's.

The "network" is a pair of functions reading the master's store, counting their calls.
"""

import hashlib
import json
import logging
import os
import subprocess
import sys

import pytest

from rezina.control import snapshot
from rezina.errors import RezinaError


class Master:
    """A master's store, reached through counted fetch functions."""

    def __init__(self, store):
        self.store = store
        self.manifest_calls = []
        self.blob_calls = []

    def fetch_manifest(self, snapshot_id):
        self.manifest_calls.append(snapshot_id)
        return snapshot.manifest_bytes(self.store, snapshot_id)

    def fetch_blob(self, sha):
        self.blob_calls.append(sha)
        return snapshot.blob(self.store, sha)

    def materialize(self, snapshot_id, root):
        return snapshot.materialize(snapshot_id, root, self.fetch_manifest, self.fetch_blob)


def write(path, text, mode=0o644):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


@pytest.fixture
def workspace(tmp_path):
    ws = tmp_path / 'ws'
    write(ws / 'mod.py', "def f():\n    return 'from the snapshot'\n")
    write(ws / 'pkg' / '__init__.py', '')
    write(ws / 'pkg' / 'deep' / 'data.txt', 'some data\n')
    write(ws / 'run.sh', '#!/bin/sh\necho hi\n', mode=0o755)
    return ws


@pytest.fixture
def master(tmp_path):
    return Master(str(tmp_path / 'store'))


def tree(top):
    """{relative path: (bytes, executable)} of every file under `top`, dotfiles left out."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if not d.startswith('.')]
        for name in filenames:
            if name.startswith('.'):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, top)
            found[rel] = (open(path, 'rb').read(), bool(os.stat(path).st_mode & 0o100))
    return found


def leftovers(root):
    return sorted(name for name in os.listdir(root) if name != snapshot.BLOB_CACHE)


def test_same_workspace_gives_same_id(tmp_path, workspace, master):
    first = snapshot.take(workspace, master.store)
    assert snapshot.take(workspace, master.store) == first

    # the id depends on content only, not on where the workspace is or another store
    copy = tmp_path / 'elsewhere'
    subprocess.run(['cp', '-a', str(workspace), str(copy)], check=True, timeout=10)
    assert snapshot.take(copy, tmp_path / 'store2') == first


def test_manifest_is_canonical_and_hashes_to_its_id(workspace, master):
    snapshot_id = snapshot.take(workspace, master.store)
    data = snapshot.manifest_bytes(master.store, snapshot_id)
    assert hashlib.sha256(data).hexdigest() == snapshot_id
    assert b' ' not in data

    entries = snapshot.manifest(master.store, snapshot_id)
    assert [e[0] for e in entries] == sorted(e[0] for e in entries)
    by_path = {e[0]: e for e in entries}
    assert by_path['run.sh'][3] == 0o755 and by_path['mod.py'][3] == 0o644
    assert by_path['pkg/deep/data.txt'][2] == len('some data\n')
    sha = by_path['mod.py'][1]
    assert snapshot.blob(master.store, sha) == (workspace / 'mod.py').read_bytes()


def test_edit_gives_new_id_and_fetches_only_the_changed_blob(tmp_path, workspace, master):
    root = tmp_path / 'worker'
    first = snapshot.take(workspace, master.store)
    master.materialize(first, root)
    assert len(master.blob_calls) == 4

    (workspace / 'pkg' / 'deep' / 'data.txt').write_text('other data\n')
    second = snapshot.take(workspace, master.store)
    assert second != first

    master.blob_calls.clear()
    path = master.materialize(second, root)
    changed = hashlib.sha256(b'other data\n').hexdigest()
    assert master.blob_calls == [changed]
    assert tree(path) == tree(workspace)
    assert (root / first).is_dir()


def test_an_executable_bit_change_gives_a_new_id(workspace, master):
    first = snapshot.take(workspace, master.store)
    (workspace / 'mod.py').chmod(0o755)
    assert snapshot.take(workspace, master.store) != first


def test_materialized_tree_equals_workspace_and_imports(tmp_path, workspace, master):
    root = tmp_path / 'worker'
    path = master.materialize(snapshot.take(workspace, master.store), root)

    assert path == os.path.join(root, snapshot.take(workspace, master.store))
    assert tree(path) == tree(workspace)
    assert tree(path)['run.sh'][1] and not tree(path)['mod.py'][1]
    assert leftovers(root) == [os.path.basename(path)]

    done = subprocess.run([sys.executable, '-c', 'import mod; print(mod.f())'], cwd=path,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout == 'from the snapshot\n'


def test_pycache_and_dotfiles_are_skipped(tmp_path, workspace, master):
    write(workspace / '__pycache__' / 'mod.cpython-311.pyc', 'compiled')
    write(workspace / 'pkg' / '__pycache__' / 'x.pyc', 'compiled')
    write(workspace / '.git' / 'config', 'secret')
    write(workspace / '.env', 'TOKEN=1')
    write(workspace / 'pkg' / '.hidden.py', 'x = 1')

    snapshot_id = snapshot.take(workspace, master.store)
    paths = [e[0] for e in snapshot.manifest(master.store, snapshot_id)]
    assert paths == ['mod.py', 'pkg/__init__.py', 'pkg/deep/data.txt', 'run.sh']

    path = master.materialize(snapshot_id, tmp_path / 'worker')
    assert not os.path.exists(os.path.join(path, '.git'))
    assert not os.path.exists(os.path.join(path, '__pycache__'))


def test_symlinks_outside_the_workspace_or_broken_are_skipped(tmp_path, workspace, master,
                                                               caplog):
    outside = tmp_path / 'outside.txt'
    outside.write_text('not for shipping')
    (workspace / 'out.txt').symlink_to(outside)
    (workspace / 'broken.txt').symlink_to(tmp_path / 'nothing')
    (workspace / 'alias.py').symlink_to(workspace / 'mod.py')

    with caplog.at_level(logging.WARNING, logger='rezina.control.snapshot'):
        snapshot_id = snapshot.take(workspace, master.store)
    paths = [e[0] for e in snapshot.manifest(master.store, snapshot_id)]
    assert 'out.txt' not in paths and 'broken.txt' not in paths
    assert 'alias.py' in paths
    warned = [r.getMessage() for r in caplog.records]
    assert sum('out.txt' in m for m in warned) == 1
    assert sum('broken.txt' in m for m in warned) == 1

    path = master.materialize(snapshot_id, tmp_path / 'worker')
    alias = os.path.join(path, 'alias.py')
    assert not os.path.islink(alias)
    assert open(alias, 'rb').read() == (workspace / 'mod.py').read_bytes()


def test_corrupted_blob_fails_naming_the_path_and_leaves_nothing(tmp_path, workspace,
                                                                 master):
    root = tmp_path / 'worker'
    snapshot_id = snapshot.take(workspace, master.store)
    bad = hashlib.sha256(b'some data\n').hexdigest()

    def fetch_blob(sha):
        return b'tampered\n' if sha == bad else snapshot.blob(master.store, sha)

    with pytest.raises(RezinaError) as caught:
        snapshot.materialize(snapshot_id, root, master.fetch_manifest, fetch_blob)
    assert 'pkg/deep/data.txt' in str(caught.value)
    assert bad in str(caught.value)
    assert leftovers(root) == []
    assert bad not in os.listdir(root / snapshot.BLOB_CACHE)


def test_manifest_that_does_not_match_its_id_is_refused(tmp_path, workspace, master):
    root = tmp_path / 'worker'
    snapshot_id = snapshot.take(workspace, master.store)
    other = snapshot.manifest_bytes(master.store, snapshot_id).replace(b'run.sh', b'run.sx')

    with pytest.raises(RezinaError, match=f'snapshot {snapshot_id}: manifest does not '
                                          'match its id'):
        snapshot.materialize(snapshot_id, root, lambda _id: other, master.fetch_blob)
    assert master.blob_calls == []
    assert leftovers(root) == []


@pytest.mark.parametrize('hostile', ['../evil', 'a/../../evil', 'ABSOLUTE', 'a//b', './x'])
def test_manifest_path_leaving_the_root_is_refused(tmp_path, hostile):
    root = tmp_path / 'worker'
    if hostile == 'ABSOLUTE':
        hostile = str(tmp_path / 'evil')
    payload = b'pwned\n'
    sha = hashlib.sha256(payload).hexdigest()
    entries = [['ok.py', sha, len(payload), 0o644], [hostile, sha, len(payload), 0o755]]
    data = json.dumps(entries, sort_keys=True, separators=(',', ':')).encode()
    snapshot_id = hashlib.sha256(data).hexdigest()
    before = sorted(os.listdir(tmp_path))

    with pytest.raises(RezinaError) as caught:
        snapshot.materialize(snapshot_id, root, lambda _id: data, lambda _sha: payload)
    assert repr(hostile) in str(caught.value)
    assert sorted(os.listdir(tmp_path)) == before + ['worker']
    assert leftovers(root) == []


def test_existing_complete_snapshot_is_not_fetched(tmp_path, workspace, master):
    root = tmp_path / 'worker'
    snapshot_id = snapshot.take(workspace, master.store)
    first = master.materialize(snapshot_id, root)
    master.manifest_calls.clear()
    master.blob_calls.clear()

    assert master.materialize(snapshot_id, root) == first
    assert master.manifest_calls == [] and master.blob_calls == []


def test_incomplete_snapshot_dir_is_built_again(tmp_path, workspace, master):
    root = tmp_path / 'worker'
    snapshot_id = snapshot.take(workspace, master.store)
    write(root / snapshot_id / 'stale.py', 'left by a crash')

    path = master.materialize(snapshot_id, root)
    assert tree(path) == tree(workspace)


def test_a_snapshot_another_process_finished_first_is_used(tmp_path, workspace, master):
    root = tmp_path / 'worker'
    snapshot_id = snapshot.take(workspace, master.store)

    def fetch_manifest(wanted):
        # the other process renames its complete snapshot into place while we build
        write(root / wanted / 'theirs.txt', 'theirs')
        write(root / wanted / snapshot.COMPLETE, '')
        return master.fetch_manifest(wanted)

    path = snapshot.materialize(snapshot_id, root, fetch_manifest, master.fetch_blob)
    assert path == os.path.join(root, snapshot_id)
    assert sorted(os.listdir(path)) == sorted(['theirs.txt', snapshot.COMPLETE])
    assert leftovers(root) == [snapshot_id]


def test_gc_removes_what_is_not_kept(tmp_path, workspace, master):
    root = tmp_path / 'worker'
    old = snapshot.take(workspace, master.store)
    master.materialize(old, root)
    (workspace / 'mod.py').write_text("def f():\n    return 'new'\n")
    new = snapshot.take(workspace, master.store)
    master.materialize(new, root)

    stale_tmp = root / f'{old}.tmp-99999'
    fresh_tmp = root / f'{new}.tmp-99998'
    write(stale_tmp / 'half.py', '')
    write(fresh_tmp / 'half.py', '')
    hour_ago = os.stat(stale_tmp).st_mtime - snapshot.TMP_MAX_AGE - 10
    os.utime(stale_tmp, (hour_ago, hour_ago))
    write(root / 'unrelated.txt', 'not ours')

    assert snapshot.gc(root, [new]) == [old]
    assert sorted(os.listdir(root)) == sorted([new, fresh_tmp.name, 'unrelated.txt',
                                               snapshot.BLOB_CACHE])
    used = {e[1] for e in snapshot.manifest(master.store, new)}
    assert set(os.listdir(root / snapshot.BLOB_CACHE)) == used

    # the kept snapshot still materializes without a fetch
    master.blob_calls.clear()
    master.materialize(new, root)
    assert master.blob_calls == []
    assert snapshot.gc(root, []) == [new]
    assert os.listdir(root / snapshot.BLOB_CACHE) == []


def test_gc_store_keeps_the_snapshots_asked_for_and_their_blobs(workspace, master):
    old = snapshot.take(workspace, master.store)
    (workspace / 'mod.py').write_text("def f():\n    return 'new'\n")
    new = snapshot.take(workspace, master.store)
    blobs = os.path.join(master.store, 'blobs')
    assert len(os.listdir(blobs)) == 5             # four files, mod.py twice

    assert snapshot.gc_store(master.store, [new]) == [old]
    assert set(os.listdir(blobs)) == {e[1] for e in snapshot.manifest(master.store, new)}
    with pytest.raises(RezinaError, match=f'no snapshot {old}'):
        snapshot.manifest(master.store, old)
    assert snapshot.gc_store(master.store, [new]) == []
    assert snapshot.gc_store(master.store, []) == [new]
    assert os.listdir(blobs) == []


def test_file_over_the_limit_is_refused(tmp_path, workspace, master, monkeypatch):
    monkeypatch.setattr(snapshot, 'SNAPSHOT_FILE_MAX', 1000)
    write(workspace / 'big.bin', 'x' * 1001)
    with pytest.raises(RezinaError, match='big.bin'):
        snapshot.take(workspace, master.store)
    assert [n for n in os.listdir(os.path.join(master.store, 'blobs'))
            if n.startswith('.')] == []


def test_workspace_with_too_many_files_is_refused(workspace, master, monkeypatch):
    monkeypatch.setattr(snapshot, 'SNAPSHOT_FILES_MAX', 3)
    with pytest.raises(RezinaError, match='more than 3'):
        snapshot.take(workspace, master.store)


def test_missing_blob_and_bad_hash_are_named(master):
    missing = '0' * 64
    with pytest.raises(RezinaError, match=missing):
        snapshot.blob(master.store, missing)
    with pytest.raises(RezinaError, match='not a sha256'):
        snapshot.blob(master.store, '../../etc/passwd')
    with pytest.raises(RezinaError, match=f'no snapshot {missing}'):
        snapshot.manifest(master.store, missing)
