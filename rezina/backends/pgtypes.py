"""PostgreSQL column types and names for items' values: the type a value gives a new
column, the wider type a column needs to hold a value, the value sent for a column of each
type, and the column that a dict item's key is stored in.

A column is typed by the first value it gets (int BIGINT, float DOUBLE PRECISION, bool
BOOLEAN, str TEXT, anything else JSONB); a value that does not fit is stored anyway, in a
column widened to DOUBLE PRECISION or JSONB. A value no column can hold (a NUL in text, NaN
in JSON) raises BadValue. The PostgreSQL sink's docstring (rezina.backends.postgresql)
gives the whole layout.
"""

import datetime
import hashlib
import json

from rezina.backends.jsonvalue import _json_default

BIGINT, DOUBLE, BOOLEAN, TEXT, JSONB = 'bigint', 'double precision', 'boolean', 'text', 'jsonb'
ID_COLUMNS = ('rz_id', 'rz_run')
MAX_NAME_BYTES = 63         # NAMEDATALEN - 1: the server cuts longer names

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_FLOAT_EXACT = 1 << 53
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(',', ':'), allow_nan=False,
                         default=_json_default)


class BadValue(ValueError):
    """A value that PostgreSQL cannot store in any column."""


def column_name(key):
    """The column that stores the value of a dict item's `key`."""
    name = key if type(key) is str else str(key)
    if '\0' in name:
        name = name.replace('\0', '\ufffd')
    if name in ID_COLUMNS or not name:
        name = 'item_' + name
    if len(name.encode()) > MAX_NAME_BYTES:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = name.encode()[:MAX_NAME_BYTES - 9].decode(errors='ignore') + '_' + digest
    return name


def first_type(value):
    """The column type a value gives a new column; None for None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return BIGINT if _INT64_MIN <= value <= _INT64_MAX else JSONB
    if isinstance(value, float):
        return DOUBLE
    if isinstance(value, str):
        return TEXT
    return JSONB


def holding_type(column, value):
    """The type a column of type `column` needs to hold `value`: its own, or a wider one."""
    if value is None or column == JSONB:
        return column
    if column is None:
        return first_type(value)
    if column == BIGINT:
        if isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX:
            return BIGINT       # bools included, as 0 and 1
        return DOUBLE if isinstance(value, float) else JSONB
    if column == DOUBLE:
        exact = isinstance(value, float) or (
            isinstance(value, int) and -_FLOAT_EXACT <= value <= _FLOAT_EXACT)
        return DOUBLE if exact else JSONB
    if column == BOOLEAN:
        return BOOLEAN if isinstance(value, bool) else JSONB
    if column == TEXT:
        return TEXT if isinstance(value, str) else JSONB
    return column               # a type of the user's: the server casts the value's text


def cell(column, value):
    """The value sent for a column of type `column`; raises BadValue if none can be."""
    if value is None:
        return None
    if column == BIGINT:
        return int(value)
    if column == DOUBLE:
        return float(value)
    if column == BOOLEAN:
        return bool(value)
    if column == TEXT:
        text = str(value)
        if '\0' in text:
            raise BadValue("PostgreSQL text cannot hold a NUL character")
        return text
    if column == JSONB:
        return json_text(value)
    return user_text(value)


def json_text(value):
    """The JSON text of a value for a JSONB column."""
    try:
        text = _JSON.encode(value)
    except ValueError as exc:
        raise BadValue(f"not JSON: {exc}") from None
    except (TypeError, RecursionError) as exc:
        raise BadValue(f"not JSON: {type(exc).__name__}: {exc}") from None
    if '\\u0000' in text and _has_nul(value):
        raise BadValue("PostgreSQL JSON cannot hold a NUL character")
    return text


def user_text(value):
    """The text of a value for a column of a type the user chose, for the server to cast."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(int(value))
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return '\\x' + bytes(value).hex()
    if isinstance(value, str):
        return cell(TEXT, value)
    return json_text(value)


def _has_nul(value):
    if isinstance(value, str):
        return '\0' in value
    if isinstance(value, dict):
        return any(_has_nul(str(k)) or _has_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_nul(v) for v in value)
    return False
