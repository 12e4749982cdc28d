"""The fault-injection suite's set checker and its table (see test_faults.py).

Every item of a scenario has an id known in advance (the source yields 0 .. N-1). The
checker compares what the sink holds with that set, as a set checker does: attempted,
stored (distinct), lost (attempted, never stored), duplicated (stored more than once),
unexpected (stored, never attempted). A scenario adds the seconds its system took to
recover from each fault, and its row goes into the table the run prints at its end.
"""

import json
import os
from collections import Counter

ROWS = []           # the rows of this run, printed by tests/conftest.py at the end
COLUMNS = ('scenario', 'attempted', 'stored', 'lost', 'duplicated', 'unexpected',
           'recovery (s)')


def check(attempted, delivered):
    """The counts of a scenario: attempted ids (an iterable), delivered ids (a list, one
    entry per time the sink stored it)."""
    expected = set(attempted)
    seen = Counter(delivered)
    return {'attempted': len(expected), 'stored': len(set(seen) & expected),
            'lost': len(expected - set(seen)),
            'duplicated': sum(n - 1 for key, n in seen.items() if n > 1),
            'unexpected': len(set(seen) - expected)}


def jsonl_values(path, key='x'):
    """The `key` of every line of a jsonl sink's file, one per line written."""
    if not os.path.exists(path):
        return []
    with open(path, encoding='utf-8') as f:
        return [json.loads(line)[key] for line in f if line.strip()]


def record(name, counts, recoveries):
    worst = max(recoveries) if recoveries else None
    ROWS.append({'scenario': name, **counts,
                 'recovery (s)': '-' if worst is None else f"{worst:.1f}"})


def table(rows=None):
    rows = ROWS if rows is None else rows
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in COLUMNS}
    lines = ['  '.join(c.ljust(widths[c]) if i == 0 else c.rjust(widths[c])
                       for i, c in enumerate(COLUMNS))]
    for row in rows:
        lines.append('  '.join(str(row[c]).ljust(widths[c]) if i == 0
                               else str(row[c]).rjust(widths[c])
                               for i, c in enumerate(COLUMNS)))
    return '\n'.join(lines)
