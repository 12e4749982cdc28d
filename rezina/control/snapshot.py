"""Workspace snapshots: how code gets from the master's workspace to the workers
(see docs/control-plane.md, "Code: workspace snapshots").

The master runs take(), manifest_bytes() and blob(); a worker runs materialize() and gc().
The worker passes in the functions that fetch by hash (no network here).

A store (master side) holds `blobs/SHA256` (each file's bytes) and `manifests/ID.json`.
A manifest is a sorted JSON list of [posix path, sha256, size, mode], written with
sort_keys and no spaces, and its own sha256 is the snapshot ID, so the same files give
the same ID. The mode is 0o755 or 0o644: only the executable bit travels.

A worker's root holds `ID/` (a snapshot, complete once it holds `.complete`, which is
written last and holds the manifest), `ID.tmp-PID/` (one being built) and `.blobs/SHA256`
(every blob fetched, so a later snapshot fetches only the files that changed).
"""

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import time

from rezina.errors import RezinaError

log = logging.getLogger(__name__)

SNAPSHOT_FILE_MAX = 64 << 20    # bytes: the largest file a snapshot takes (64 MiB)
SNAPSHOT_FILES_MAX = 10000      # the most files a snapshot takes
TMP_MAX_AGE = 3600.0            # seconds: gc removes build dirs older than this
COMPLETE = '.complete'
BLOB_CACHE = '.blobs'
CHUNK = 1 << 20

_HASH = re.compile(r'[0-9a-f]{64}\Z')


def take(workspace, store):
    """Snapshot every file under `workspace` into `store`; returns the snapshot id."""
    top = os.path.realpath(workspace)
    files = sorted(_walk(top))
    if len(files) > SNAPSHOT_FILES_MAX:
        raise RezinaError(f"cannot snapshot {workspace}: it has {len(files)} files, "
                          f"more than {SNAPSHOT_FILES_MAX}")

    blobs = os.path.join(store, 'blobs')
    manifests = os.path.join(store, 'manifests')
    os.makedirs(blobs, exist_ok=True)
    os.makedirs(manifests, exist_ok=True)
    entries = [[rel, *_store_file(path, blobs)] for rel, path in files]

    data = json.dumps(entries, sort_keys=True, separators=(',', ':')).encode()
    snapshot_id = hashlib.sha256(data).hexdigest()
    path = os.path.join(manifests, snapshot_id + '.json')
    if not os.path.exists(path):
        _write_atomic(path, data)
    log.info("snapshot %s of %s: %d files, %d bytes", snapshot_id[:12], workspace,
             len(entries), sum(entry[2] for entry in entries))
    return snapshot_id


def manifest_bytes(store, snapshot_id):
    """The stored manifest of `snapshot_id`, as the bytes its id is the hash of."""
    _check_hash(snapshot_id, 'snapshot id')
    try:
        with open(os.path.join(store, 'manifests', snapshot_id + '.json'), 'rb') as f:
            return f.read()
    except FileNotFoundError:
        raise RezinaError(f"no snapshot {snapshot_id} in {store}") from None


def manifest(store, snapshot_id):
    """The manifest of `snapshot_id`: a list of [path, sha256, size, mode]."""
    return json.loads(manifest_bytes(store, snapshot_id))


def blob(store, sha):
    """The bytes of the stored file whose sha256 is `sha`."""
    _check_hash(sha, 'blob hash')
    try:
        with open(os.path.join(store, 'blobs', sha), 'rb') as f:
            return f.read()
    except FileNotFoundError:
        raise RezinaError(f"no blob {sha} in {store}") from None


def gc_store(store, keep_ids):
    """Remove from a master's store the manifests not in `keep_ids` and the blobs no kept
    manifest names; returns the removed snapshot ids."""
    keep = set(keep_ids)
    manifests = os.path.join(store, 'manifests')
    removed, used = [], set()
    for name in _listdir(manifests):
        snapshot_id = name.removesuffix('.json')
        if snapshot_id in keep:
            used.update(entry[1] for entry in manifest(store, snapshot_id))
        elif _HASH.match(snapshot_id):
            _remove(os.path.join(manifests, name))
            removed.append(snapshot_id)
    blobs = os.path.join(store, 'blobs')
    for name in _listdir(blobs):
        if _HASH.match(name) and name not in used:
            _remove(os.path.join(blobs, name))
    return removed


def _listdir(path):
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def materialize(snapshot_id, root, fetch_manifest, fetch_blob):
    """Make `root/ID` hold the snapshot's files and return its path.

    `fetch_manifest(id)` and `fetch_blob(sha)` return bytes; every one is checked against
    its hash. The snapshot appears whole (by rename) or not at all; a failure removes
    the build dir and raises."""
    _check_hash(snapshot_id, 'snapshot id')
    final = os.path.join(root, snapshot_id)
    if os.path.exists(os.path.join(final, COMPLETE)):
        return final
    if os.path.lexists(final):
        log.warning("snapshot %s: %s has no %s; building it again",
                    snapshot_id[:12], final, COMPLETE)
        _remove(final)

    tmp = f"{final}.tmp-{os.getpid()}"
    _remove(tmp)
    try:
        fetched, total = _build(snapshot_id, root, tmp, fetch_manifest, fetch_blob)
    except BaseException:
        _remove(tmp)
        raise

    try:
        os.rename(tmp, final)
    except OSError as exc:
        _remove(tmp)
        if os.path.exists(os.path.join(final, COMPLETE)):
            log.debug("snapshot %s: another process materialized it first", snapshot_id[:12])
            return final
        raise RezinaError(f"snapshot {snapshot_id}: cannot rename {tmp}: {exc}") from None
    log.info("snapshot %s: materialized in %s, %d of %d files fetched",
             snapshot_id[:12], final, fetched, total)
    return final


def gc(root, keep_ids, now=None):
    """Remove the snapshots under `root` not in `keep_ids`, build dirs older than an
    hour, and cached blobs no kept snapshot uses; returns the removed ids.

    Not to be run while a materialize() in the same root is in progress."""
    now = time.time() if now is None else now
    keep = set(keep_ids)
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []

    removed = []
    used = set()
    for name in names:
        path = os.path.join(root, name)
        snapshot_id, tmp, _ = name.partition('.tmp-')
        if not _HASH.match(snapshot_id):
            continue
        if tmp:
            # a build dir this old was left by a process that died part way
            if now - os.lstat(path).st_mtime > TMP_MAX_AGE:
                _remove(path)
        elif snapshot_id in keep:
            used.update(_blobs_used(path))
        else:
            _remove(path)
            removed.append(snapshot_id)


    cache = os.path.join(root, BLOB_CACHE)
    for name in os.listdir(cache) if os.path.isdir(cache) else []:
        path = os.path.join(cache, name)
        stale = '.tmp-' in name and now - os.lstat(path).st_mtime > TMP_MAX_AGE
        if stale or (_HASH.match(name) and name not in used):
            _remove(path)

    if removed:
        log.info("removed snapshots %s", ', '.join(sorted(i[:12] for i in removed)))
    return sorted(removed)


def _walk(top):
    """Yield (relative posix path, path to read) of every file a snapshot takes."""
    stack = ['']
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(top, rel)) as entries:
            for entry in entries:
                if entry.name.startswith('.') or entry.name == '__pycache__':
                    continue
                relpath = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir(follow_symlinks=False):
                    stack.append(relpath)
                elif entry.is_file(follow_symlinks=False):
                    yield relpath, entry.path
                elif entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if os.path.isfile(target) and target.startswith(top + os.sep):
                        yield relpath, target
                    else:
                        log.warning("snapshot of %s: skipping %s: a symlink to %s, which "
                                    "is not a file in the workspace", top, relpath, target)
                else:
                    log.debug("snapshot of %s: skipping %s: not a regular file", top, relpath)


def _store_file(path, blobs):
    """Copy one file into `blobs` under its hash; returns [sha256, size, mode]."""
    sha = hashlib.sha256()
    size = 0
    with open(path, 'rb') as src:
        mode = 0o755 if os.fstat(src.fileno()).st_mode & 0o111 else 0o644
        fd, tmp = tempfile.mkstemp(dir=blobs, prefix='.tmp-')
        try:
            with open(fd, 'wb') as dst:
                while chunk := src.read(CHUNK):
                    size += len(chunk)
                    # checked while reading, so a file that grows is refused too
                    if size > SNAPSHOT_FILE_MAX:
                        raise RezinaError(f"cannot snapshot {path}: it is over the "
                                          f"{SNAPSHOT_FILE_MAX} byte limit for a file")
                    sha.update(chunk)
                    dst.write(chunk)
            digest = sha.hexdigest()
            dest = os.path.join(blobs, digest)
            if os.path.exists(dest):
                os.unlink(tmp)
            else:
                os.replace(tmp, dest)
        except BaseException:
            _remove(tmp)
            raise
    return [digest, size, mode]


def _build(snapshot_id, root, tmp, fetch_manifest, fetch_blob):
    """Write the snapshot's files into `tmp`; returns (files fetched, files)."""
    cache = os.path.join(root, BLOB_CACHE)
    try:
        os.makedirs(cache, exist_ok=True)
        os.mkdir(tmp)
        data = fetch_manifest(snapshot_id)
        entries = _parse_manifest(snapshot_id, data)

        fetched = 0
        for path, sha, _size, mode in entries:
            cached = os.path.join(cache, sha)
            if not _holds(cached, sha):
                content = fetch_blob(sha)
                if hashlib.sha256(content).hexdigest() != sha:
                    raise RezinaError(f"snapshot {snapshot_id}: {path}: the blob fetched "
                                      f"does not match its hash {sha}")
                _write_atomic(cached, content)
                fetched += 1
            # a copy, not a hard link: a node that edits its files must not change
            # the cache or other snapshots, and one inode cannot carry two modes
            dest = os.path.join(tmp, path)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copyfile(cached, dest)
            os.chmod(dest, 0o755 if mode & 0o111 else 0o644)

        _write_atomic(os.path.join(tmp, COMPLETE), data)
    except OSError as exc:
        raise RezinaError(f"snapshot {snapshot_id}: cannot write it in {root}: {exc}") from None
    return fetched, len(entries)


def _parse_manifest(snapshot_id, data):
    """The entries of a fetched manifest, every one checked before any file is written."""
    if hashlib.sha256(data).hexdigest() != snapshot_id:
        raise RezinaError(f"snapshot {snapshot_id}: manifest does not match its id")
    try:
        entries = json.loads(data)
    except ValueError as exc:
        raise RezinaError(f"snapshot {snapshot_id}: manifest is not JSON: {exc}") from None
    if not isinstance(entries, list) or len(entries) > SNAPSHOT_FILES_MAX:
        raise RezinaError(f"snapshot {snapshot_id}: manifest is not a list of at most "
                          f"{SNAPSHOT_FILES_MAX} entries")

    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 4 and isinstance(entry[0], str)
                and isinstance(entry[1], str) and _HASH.match(entry[1])
                and all(isinstance(n, int) for n in entry[2:])):
            raise RezinaError(f"snapshot {snapshot_id}: malformed manifest entry "
                              f"{str(entry)[:200]}")
        # a hostile master must not make a worker write outside its snapshot
        parts = entry[0].split('/')
        if any(part in ('', '.', '..') for part in parts) or '\0' in entry[0]:
            raise RezinaError(f"snapshot {snapshot_id}: refusing manifest path "
                              f"{entry[0]!r}: it is absolute or leaves the snapshot")
    return entries


def _holds(path, sha):
    """Whether the cached blob at `path` is there and intact (a bad one is removed)."""
    digest = hashlib.sha256()
    try:
        with open(path, 'rb') as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
    except FileNotFoundError:
        return False
    if digest.hexdigest() == sha:
        return True
    log.warning("cached blob %s is damaged; fetching it again", path)
    os.unlink(path)
    return False


def _blobs_used(snapshot_dir):
    """The blob hashes a complete snapshot was built from (its marker holds its manifest)."""
    try:
        with open(os.path.join(snapshot_dir, COMPLETE), 'rb') as f:
            return {entry[1] for entry in json.loads(f.read())}
    except (OSError, ValueError, TypeError, IndexError):
        return set()


def _write_atomic(path, data):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path),
                               prefix=os.path.basename(path) + '.tmp-')
    try:
        with open(fd, 'wb') as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _remove(path):
    """Remove a file or a directory tree, if there is one."""
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


def _check_hash(value, what):
    # the hash becomes a file name, so it must be nothing but a hash
    if not isinstance(value, str) or not _HASH.match(value):
        raise RezinaError(f"bad {what} {str(value)[:80]!r}: not a sha256 in hex")
