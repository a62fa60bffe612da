"""chuyende: the yearly study-topic bot for Vietnamese trade-union members."""

import os

# Opt in to PTB 22's upcoming behaviour: RetryAfter.retry_after as a timedelta. Without it,
# every 429 emits a deprecation warning (and our strict tests turn warnings into errors).
os.environ.setdefault("PTB_TIMEDELTA", "true")
