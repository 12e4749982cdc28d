"""The failed items rz-master has heard of: the newest KEPT of each typology, taken from the
recent failures its nodes' statuses carry (rezina/nodes/failures.py), for the `failures` op.

Runs in rz-master's loop. In memory only: a restarted master knows the failures its nodes
report from then on. A failure here has no item; the item itself goes to the node's
`--errors` sink, if it has one.
"""

from collections import deque

KEPT = 200                  # failed items kept for each typology, the newest
FIELDS = ('id', 'run', 'error', 'message', 'traceback', 'attempts', 'at')


class FailedItems:
    def __init__(self, kept=KEPT):
        self.kept = kept
        self.by_typology = {}       # name -> deque of failures, in the order heard
        self.taken = {}             # name -> {node_id: (pid, highest seq taken)}

    def take(self, p, status, worker_id=None):
        """Keep the failures of placement p's status that were not taken before."""
        records = status.get('recent_failures')
        if not isinstance(records, list) or not records:
            return
        pid = status.get('pid')
        taken = self.taken.setdefault(p.typology, {})
        last_pid, last_seq = taken.get(p.node_id, (None, 0))
        if pid != last_pid:
            last_seq = 0            # another process: its numbers start again
        kept = self.by_typology.get(p.typology)
        if kept is None:
            kept = self.by_typology[p.typology] = deque(maxlen=self.kept)
        newest = last_seq
        for record in records:
            seq = record.get('seq') if isinstance(record, dict) else None
            if not isinstance(seq, int) or seq <= last_seq:
                continue
            failure = {key: record.get(key) for key in FIELDS}
            failure.update(stage=p.stage, index=p.idx, node_id=p.node_id,
                           worker=worker_id, pid=pid)
            kept.append(failure)
            newest = max(newest, seq)
        taken[p.node_id] = (pid, newest)

    def newest(self, typology, limit):
        """The typology's newest failures, at most limit, newest first."""
        heard = reversed(self.by_typology.get(typology, ()))    # ties: the last heard first
        return sorted(heard, key=_when, reverse=True)[:max(0, limit)]

    def known(self, typology):
        return typology in self.by_typology

    def forget(self, typology):
        self.by_typology.pop(typology, None)
        self.taken.pop(typology, None)


def _when(failure):
    at = failure.get('at')
    return at if isinstance(at, (int, float)) else 0.0
