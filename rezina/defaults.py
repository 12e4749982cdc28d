"""Every configurable default of rezina, in one place (the man pages quote these)."""

CONTROL_PORT = 12345
HTTP_PORT = 31218
MASTER_ANSWER_TIMEOUT = 3.0     # seconds a client waits for rz-master's answer

HEARTBEAT_INTERVAL = 1.0        # seconds between heartbeats on a ZeroMQ link
PEER_LOST_AFTER = 3.0           # a remote peer silent this long is lost

WIRE_BATCH_ITEMS = 1000         # most items in one wire batch
WIRE_BATCH_BYTES = 1 << 20      # most payload bytes in one wire batch (1 MiB)
COALESCE = 0.001                # a busy producer sends a batch at most this often
CREDIT_MAX = 8192               # hard maximum of items a consumer grants at once
UNACKED_MAX = 32768             # most items a producer holds unacknowledged
ACK_DELAY = 0.002               # acknowledgements wait this long for credit to ride with
ACKS_AT_ONCE = 8                # ... unless this many batches wait to be acknowledged

BOCCA_BATCH_SIZE = 1000
SINK_RETRY_MAX = 5.0            # seconds: the longest a failing sink waits between writes
SINK_ITEM_ATTEMPTS = 3          # writes of one item alone that fail before it fails alone
FLUSH_INTERVAL = 1.0            # seconds
MAX_ITEM_BYTES = 64 << 20       # 64 MiB
MAX_DELIVERIES = 3              # deaths of a child while running an item before quarantine
RETRY_BASE = 0.1                # seconds: the most a first retry waits (full jitter)
RETRY_MAX = 10.0                # seconds: the most any retry waits

FAILURE_LINES_PER_SECOND = 10   # failed items shown on stderr a second; the rest counted
ERROR_WRITE_TRIES = 10          # tries of one --errors write before its records are lost
ERROR_WRITE_BACKOFF = 0.1       # seconds before the second try, doubling after each ...
ERROR_WRITE_BACKOFF_MAX = 10.0  # ... up to this: the tries span about 40 s
ERROR_WRITE_MAX = 1000          # most records in one --errors write

LINGER_MS = 2000                # how long a closing socket may flush its queue
DRAIN_TIMEOUT = 30.0            # how long a stop waits for in-flight items
DRAIN_GRACE = 0.5               # how long a stopping consumer waits for its producers to
                                # say they are stopping too (then it reads on to their end)

RESTART_BACKOFF = 1.0           # seconds before a worker restarts a node, doubling ...
RESTART_BACKOFF_MAX = 60.0      # ... up to this
FAIL_AFTER = 5                  # abnormal exits within FAIL_WINDOW that mark a node FAILED
FAIL_WINDOW = 60.0              # seconds
