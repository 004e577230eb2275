"""What follows announces to the apps above it."""

from django.dispatch import Signal

# Sent once the transaction commits in which a user who was not active was seen again
# (follows.activity), with ``user_id``: pages cached for them before they went away may
# lack what fan-out skipped meanwhile.
reader_returned = Signal()

# Sent inside the transaction that blocks, mutes or unmutes, with ``user_ids``: the users
# whose cached pages must be dropped once it commits (feeds.receivers).
feeds_hidden = Signal()
