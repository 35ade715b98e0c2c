"""SL-MGAC (sl-mgac.txt section 3): multi-group actor-critic with a supervised reward split."""
