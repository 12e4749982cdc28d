"""A unit's 'D' record, built in an rz-notch worker child: the unit's items decoded, the
results of generators fanned out into outputs, the failure entries, the outputs encoded.

A failure entry is [seq, error type, message, traceback, item, attempts]: item is the input
item (None when it did not decode), attempts the calls made on it (0 when it did not
decode, 1 for a result that cannot be encoded). The K-th value a generator (or async
generator) yields for the input SEQ is an output with id SEQ.K.
"""

import time
import traceback

from rezina.pipe import codec, protocol

HOLE = object()             # an item that did not decode


def decode_unit(ids, count, payload):
    """(seqs, items, failures) of a unit; an item that does not decode is a HOLE."""
    seqs = range(ids, ids + count) if isinstance(ids, int) else ids
    try:
        items, bad = codec.decode_items(payload)
    except ValueError as exc:
        items, bad = [], [(i, str(exc)) for i in range(count)]
    if not bad:
        return seqs, items, []
    holes = {i for i, _ in bad}
    kept = iter(items)
    items = [HOLE if i in holes else next(kept) for i in range(count)]
    return seqs, items, [[seqs[i], 'DecodeError', reason, '', None, 0] for i, reason in bad]


def failure_entry(seq, exc, item, attempts, note=''):
    """The failure entry of an item whose call raised exc."""
    trace = ''.join(traceback.format_exception(exc))
    return [seq, type(exc).__name__, f"{exc}{note}", trace, item, attempts]


def timed_out(timeout, note=''):
    """The failure message of a call that ran past --timeout."""
    return f"timed out after {timeout:g} s{note}"


# A generator that raises part way is not called again: the results it gave before are
# outputs already, and a second run would give them twice.

def fan_out(generator, seq, index, item, outputs, out_seqs, spans, failures):
    """Add a generator's results to outputs, as SEQ.K, and their span to spans."""
    first, k = len(outputs), 0
    try:
        for value in generator:
            outputs.append(value)
            out_seqs.append(f"{seq}.{k}")
            k += 1
    except Exception as exc:
        failures.append(failure_entry(seq, exc, item, 1, f" (after {k} results)"))
    spans.append((first, first + k, index))


async def fan_out_async(generator, seq, index, item, outputs, out_seqs, spans, failures,
                        timeout=None):
    """fan_out for an async generator, cancelled once it has run timeout s."""
    import asyncio
    first, k = len(outputs), 0
    limit = asyncio.timeout(timeout)        # None: no limit
    try:
        async with limit:
            async for value in generator:
                outputs.append(value)
                out_seqs.append(f"{seq}.{k}")
                k += 1
    except Exception as exc:
        if limit.expired():
            exc = TimeoutError(timed_out(timeout))
        failures.append(failure_entry(seq, exc, item, 1, f" (after {k} results)"))
    spans.append((first, first + k, index))


def done_record(unit_no, ids, seqs, items, outputs, out_seqs, spans, failures, started,
                dropped=0):
    """The 'D' record of a unit, its outputs encoded."""
    out_payload, unencodable = codec.encode_items(outputs)
    if unencodable:
        if out_seqs is None:
            out_seqs, spans = list(seqs[:len(outputs)]), []
        index_of = {seq: index for index, seq in enumerate(seqs)}
        for i, reason in unencodable:
            source = next((index for first, end, index in spans if first <= i < end),
                          None)
            item = items[index_of[out_seqs[i]] if source is None else source]
            failures.append([out_seqs[i], 'ItemNotEncodable', reason, '', item, 1])
        out_seqs = protocol.seqs_without(out_seqs, unencodable)
    out_ids = ids if out_seqs is None else protocol.compact_ids(out_seqs)
    return ['D', unit_no, out_ids, len(outputs) - len(unencodable), out_payload, failures,
            time.perf_counter() - started, dropped]


def pack_record(record):
    """A record's bytes; a failure's item or text that cannot be encoded is left out."""
    try:
        return codec.packb(record)
    except (TypeError, ValueError, OverflowError):
        if record[0] != 'D':
            raise
    # the function changed an input item in place, or a message holds a lone surrogate
    for failure in record[5]:
        for field in (1, 2, 3):
            failure[field] = failure[field].encode('utf-8', 'backslashreplace').decode()
        try:
            codec.packb(failure[4])
        except (TypeError, ValueError, OverflowError):
            failure[4] = None
    return codec.packb(record)
