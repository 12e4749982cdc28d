"""What a tick does when the previous run is still in flight: --overlap skip|queue|allow.

A run is in flight from its tick until its items are all acknowledged (over ZeroMQ) or
written whole into the pipe. States of the policy, per hydrant:

    idle       no run in flight                  a tick fires
    busy       runs in flight, none waiting      skip: the tick is skipped (counted)
                                                 queue: the tick waits  -> busy+waiting
                                                 allow: the tick fires beside them
    busy+waiting  one tick waits (queue only)    a tick is skipped (counted)
                  the last run in flight ends    the waiting tick fires -> busy

Runs in the main thread of rz-hydrant; it knows nothing of threads or clocks.
"""

import logging

log = logging.getLogger(__name__)

POLICIES = ('skip', 'queue', 'allow')


class Overlap:
    """Counts ticks and says which fire now."""

    def __init__(self, policy='skip', name=''):
        if policy not in POLICIES:
            raise ValueError(policy)
        self.policy = policy
        self.name = name
        self.in_flight = 0
        self.waiting = None
        self.fired = 0
        self.skipped = 0

    def tick(self, tick):
        """The tick if it fires now, else None (skipped, or waiting its turn)."""
        if not self.in_flight or self.policy == 'allow':
            return self._fire(tick)
        if self.policy == 'queue' and self.waiting is None:
            self.waiting = tick
            log.info("%s: tick %s waits for the run in flight", self.name, tick.label)
            return None
        self._skip(tick, "the previous run is still in flight")
        return None

    def run_ended(self):
        """A run in flight is complete: the waiting tick, if it fires now, else None."""
        self.in_flight -= 1
        if self.waiting is not None and not self.in_flight:
            tick, self.waiting = self.waiting, None
            return self._fire(tick)
        return None

    def drop_waiting(self):
        """Stopping: a waiting tick will not fire."""
        if self.waiting is not None:
            self._skip(self.waiting, "the hydrant is stopping")
            self.waiting = None

    def _fire(self, tick):
        self.in_flight += 1
        self.fired += 1
        return tick

    def _skip(self, tick, why):
        self.skipped += 1
        log.warning("%s: tick %s skipped: %s", self.name, tick.label, why)
