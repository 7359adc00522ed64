"""Registers, then never reads stdin again and ignores the shutdown request."""

import json
import signal
import sys
import time

signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL ends it
sys.stdout.write(json.dumps({"type": "register", "payload": {"id": "deaf", "name": "deaf"}}) + "\n")
sys.stdout.flush()
while True:
    time.sleep(3600)
