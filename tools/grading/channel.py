"""The result channel of a run: one pipe, read by its own thread, capped, never abandoned.

Trusts only what is signed: a record counts when its HMAC checks out with the run's secret (which
the plugin reads before any student code is imported); any other line is counted as unsigned. A
writer that floods the pipe or never stops cannot make the reader keep more than its cap or outlive
the run.
"""
import hashlib
import hmac
import json
import os
import select
import threading
import time

from grading.limits import LINE_LIMIT


class PipeReader(threading.Thread):
    """Reads the read end ``fd`` of a pipe until end of file, or until ``stop()`` and nothing more
    comes; it owns ``fd`` and closes it itself, so no other run can ever get that number while
    this one reads. At most ``limit`` bytes are kept (the head, or the tail with ``keep_tail``);
    the rest is read and dropped (``overflow`` counts it). ``on_data(chunk)`` sees kept bytes."""

    POLL_SECONDS = 0.2
    DRAIN_SECONDS = 2.0  # after stop(): a writer that never stops cannot keep the thread alive

    def __init__(self, fd, limit, keep_tail=False, on_data=None):
        super().__init__(daemon=True)
        self.fd, self.limit, self.keep_tail, self.on_data = fd, limit, keep_tail, on_data
        self.kept, self.size, self.overflow = [], 0, 0
        self._stopped_at = None

    def stop(self):
        """The writers are gone (the run and its sandbox were killed): read what is buffered, end."""
        self._stopped_at = time.monotonic()

    def data(self):
        return b"".join(self.kept)

    def run(self):
        poller = select.poll()
        poller.register(self.fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        try:
            while True:
                if self._stopped_at is not None and time.monotonic() - self._stopped_at > self.DRAIN_SECONDS:
                    break
                if not poller.poll(self.POLL_SECONDS * 1000):
                    if self._stopped_at is not None:
                        break
                    continue
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    break
                self._keep(chunk)
        except OSError:
            pass
        finally:
            os.close(self.fd)

    def _keep(self, chunk):
        if self.keep_tail:
            self.kept.append(chunk)
            self.size += len(chunk)
            while self.size - len(self.kept[0]) >= self.limit:
                self.size -= len(self.kept.pop(0))
                self.overflow += 1
            return
        room = self.limit - self.size
        if room <= 0:
            self.overflow += len(chunk)
            return
        self.overflow += max(0, len(chunk) - room)
        chunk = chunk[:room]
        self.kept.append(chunk)
        self.size += len(chunk)
        if self.on_data:
            self.on_data(chunk)


class ReportChannel:
    """The records of one run, verified as they arrive (each line: ``{"mac", "body"}``, the MAC an
    HMAC-SHA256 of the body with the run's secret). Tracks the test now running (its ``start``
    record came, its result did not) and when the last record came, for the watchdog."""

    def __init__(self, secret):
        self.secret, self.buffer = secret, b""
        self.records, self.unsigned_lines = [], 0
        self.running, self.finished = None, set()
        self.last_record = time.monotonic()

    def feed(self, chunk):
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        if len(self.buffer) > LINE_LIMIT:
            self.buffer, self.unsigned_lines = b"", self.unsigned_lines + 1
        for line in lines:
            record = verify_line(line, self.secret)
            if record is None:
                self.unsigned_lines += bool(line.strip())
                continue
            self.records.append(record)
            self.last_record = time.monotonic()
            if "start" in record:
                self.running = record["start"]
            elif "outcome" in record:
                self.finished.add(record.get("nodeid"))
                if record.get("nodeid") == self.running:
                    self.running = None


def verify_line(line, secret):
    """The record of one line if its MAC checks out with ``secret``, else ``None``."""
    try:
        envelope = json.loads(line)
        body, mac = envelope["body"], envelope["mac"]
        expected = hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()
        if isinstance(mac, str) and hmac.compare_digest(mac, expected):
            record = json.loads(body)
            return record if isinstance(record, dict) else None
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        pass
    return None


def verified_records(data, secret):
    """The records of ``data`` (JSON lines) whose MAC checks out with ``secret``; others dropped."""
    channel = ReportChannel(secret)
    channel.feed(data + b"\n")
    return channel.records
