"""Exit statuses of every rezina command."""

OK = 0              # every item done (a drained stop counts as done)
FAILED = 1          # the job failed, or some items failed
USAGE = 2           # bad option, endpoint, sink, function or JSON argument
DOWNSTREAM_CLOSED = 141  # 128 + SIGPIPE: the reader went away, as any Unix filter
