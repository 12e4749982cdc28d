"""A clock for schedule tests: wall and monotonic time that move only when the test or a
wait() moves them, so that no test sleeps."""


class FakeClock:
    """Wall and monotonic clocks the test moves; wait() advances them instead of sleeping."""

    def __init__(self, wall, mono=5000.0):
        self.wall = wall
        self.mono = mono
        self.waits = []
        self.stop_during_wait = False

    def time(self):
        return self.wall

    def monotonic(self):
        return self.mono

    def advance(self, seconds):
        """Let real time pass: both clocks move."""
        self.wall += seconds
        self.mono += seconds

    def step_wall(self, seconds):
        """Set the wall clock (NTP, an operator): only the wall clock moves."""
        self.wall += seconds

    def wait(self, seconds, stop_event):
        self.waits.append(seconds)
        if stop_event.is_set():
            return True
        if self.stop_during_wait:
            # a stop arrives a third of the way through the wait
            self.advance(seconds / 3)
            stop_event.set()
            return True
        self.advance(seconds)
        return False
