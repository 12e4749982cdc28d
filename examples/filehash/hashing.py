"""The notch stage of the filehash job: the SHA-256, line count and size of one file.

    rz-notch -p 2 hashing:digest

CPU-bound, so it scales with processes (-p), not threads.
"""

import hashlib

CHUNK_SIZE = 1 << 20  # 1 MiB


def digest(path):
    """Return {'path', 'sha256', 'lines', 'bytes'} for the file at PATH.

    A file that cannot be read raises, which fails that one item.
    """
    sha256 = hashlib.sha256()
    lines = size = 0
    with open(path, 'rb') as stream:
        while chunk := stream.read(CHUNK_SIZE):
            sha256.update(chunk)
            lines += chunk.count(b'\n')
            size += len(chunk)
    return {'path': path, 'sha256': sha256.hexdigest(), 'lines': lines, 'bytes': size}
