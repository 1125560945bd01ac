"""A fingerprint of rows taken on a second core while the first makes them: each batch (an Arrow table) goes down a
pipe to a helper process (`python -m tuner.data.digest`), which feeds it to the same SHA-256 `rows.fingerprint`
takes, so converting a million rows and fingerprinting them overlap rather than add up.

The helper reads an Arrow stream on its standard input and prints the digest when the stream ends. Where it cannot
start or dies, `hexdigest` is None and the rows are fingerprinted in the calling process when first asked (nothing
is lost but the time).
"""

from __future__ import annotations

import hashlib
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

from .rows import digest_rows


class Digest:
    """The fingerprint of the batches `add`ed, in order, computed by a helper process."""

    def __init__(self, schema) -> None:
        import pyarrow

        package_root = str(Path(__file__).resolve().parents[2])  # the helper imports this very tuner
        path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tuner.data.digest"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": path},
        )
        self.writer = pyarrow.ipc.new_stream(self.process.stdin, schema)
        self.failed = False
        # A thread of its own writes to the pipe: a write blocks until the helper has read the batch before, and the
        # GIL is free while it waits, so converting goes on. A few batches wait at most (memory stays bounded).
        self.waiting: queue.Queue = queue.Queue(maxsize=4)
        self.sender = threading.Thread(target=self._send, name="tuner-digest", daemon=True)
        self.sender.start()

    def add(self, table) -> None:
        """Send one batch of rows to the helper."""
        if not self.failed:
            self.waiting.put(table)

    def _send(self) -> None:
        while (table := self.waiting.get()) is not None:
            if self.failed:
                continue
            try:
                self.writer.write_table(table)
            except OSError:  # the helper died: the fingerprint is taken later, in the calling process
                self.failed = True

    def hexdigest(self) -> str | None:
        """The rows' fingerprint, once the helper has read them all; None where it failed."""
        self.waiting.put(None)
        self.sender.join()
        try:
            if not self.failed:
                self.writer.close()
            self.process.stdin.close()
            found = self.process.stdout.read().decode().strip()
        except OSError:
            found = ""
        finally:
            self.process.stdout.close()
        code = self.process.wait()
        return found if code == 0 and not self.failed and len(found) == 64 else None

    def cancel(self) -> None:
        """Stop the helper without waiting for its digest."""
        self.failed = True
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.waiting.put(None)
        self.sender.join()
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except OSError:
                pass


def main() -> None:
    """The helper: the fingerprint of the Arrow stream on standard input."""
    import pyarrow

    digest = hashlib.sha256()
    with pyarrow.ipc.open_stream(sys.stdin.buffer) as reader:
        for batch in reader:
            digest_rows(digest, batch.to_pylist())
    print(digest.hexdigest())


if __name__ == "__main__":
    main()
