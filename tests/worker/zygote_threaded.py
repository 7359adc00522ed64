"""An entry whose import starts a thread: the zygote imports an entry's module before it forks, so after the
first run of it the zygote holds a live thread (tests/worker/test_zygote_child.py)."""

import threading
import time

threading.Thread(target=time.sleep, args=(60,), daemon=True).start()


def start(env: dict[str, str]) -> int:
    return 0
