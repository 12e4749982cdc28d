"""Sources that tests/test_csv.py runs through rz-bocca csv:PATH (imported as MOD:FUNC)."""

import datetime

AWKWARD = ['plain', 'a, comma', 'a "quote"', 'two\nlines', 'crlf\r\nend', ' padded ', '',
           'Zürich', '東京']


def rows(n):
    """n dict items with awkward text; every third adds a key the header lacks."""
    for i in range(n):
        item = {'n': i, 'text': AWKWARD[i % len(AWKWARD)], 'ok': i % 2 == 0,
                'tags': ['x', i], 'when': datetime.datetime(2024, 5, 1, 12, 0, i % 60)}
        if i % 3 == 2:
            item['extra'] = i
        if i % 4 == 3:
            del item['ok']
        yield item


def mixed():
    """Dict items with one non-dict item among them, which a dict header cannot take."""
    yield {'city': 'Zürich', 'rank': 1}
    yield 'not a row'
    yield {'city': 'Kraków', 'rank': 2}
    yield {'city': 'Ōsaka', 'rank': 3}


def values(n):
    """n items that are not dicts."""
    return [f"value, {i}" if i % 2 else i for i in range(n)]
