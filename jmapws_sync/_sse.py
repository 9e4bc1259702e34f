"""The ``text/event-stream`` format (WHATWG HTML, "Server-sent events"), with no I/O.

:class:`EventStreamParser` takes the bytes of an event stream as they arrive, in pieces of
any size, and gives the events they complete, as the specification's parsing rules say:

* the stream is UTF-8, a byte order mark at its very start is dropped, and bytes that are
  not UTF-8 become U+FFFD (the decoder is incremental, so a character split between two
  pieces is read whole);
* a line ends with CRLF, LF or CR (a CR at the end of a piece waits to see whether an LF
  follows);
* a line starting with ``:`` is a comment (servers send them to keep proxies awake); a
  ``field: value`` line sets ``event``, appends to ``data``, sets ``id`` (unless the value
  holds a NUL) or ``retry`` (ASCII digits only, in milliseconds); one space after the
  colon is dropped; other fields are ignored;
* a blank line dispatches the event, if it has data; its type is ``message`` unless an
  ``event`` field said otherwise; the last event id carries over to later events.

A line or an event's data longer than ``max_size`` raises :class:`EventStreamError`, so a
server cannot make the parser hold an unbounded amount of memory.
"""

from __future__ import annotations

import codecs
from typing import Final

import attrs

from .errors import TransportError

__all__ = ["DEFAULT_MAX_SIZE", "Event", "EventStreamError", "EventStreamParser"]

#: The longest line, and the most data of one event, accepted (1 MiB).
DEFAULT_MAX_SIZE: Final = 1 << 20


class EventStreamError(TransportError):
    """The event stream cannot be read on (a line or an event over the size limit)."""


@attrs.frozen
class Event:
    """One dispatched event: its type, data, and the last event id at that point."""

    type: str
    data: str
    id: str | None = None


class EventStreamParser:
    """Incremental parser of an event stream; :meth:`feed` it bytes, take the events.

    ``last_event_id`` is the id to send as ``Last-Event-ID`` when reconnecting (None if
    the stream never set one); ``retry`` the reconnection delay in milliseconds the server
    asked for (None if it did not). Not thread-safe: one reader feeds it.
    """

    def __init__(self, *, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._max = max_size
        self._line = ""  # the incomplete line so far
        self._started = False  # past the place where a BOM may be
        self._cr = False  # the last piece ended with CR: an LF next is part of that end
        self._type = ""
        self._data: list[str] = []
        self._data_size = 0
        self._id_buffer: str | None = None
        #: The id to resume from (``Last-Event-ID``), or None.
        self.last_event_id: str | None = None
        #: The reconnection time the server asked for, in milliseconds, or None.
        self.retry: int | None = None

    def feed(self, data: bytes) -> list[Event]:
        """The events that ``data`` (the next bytes of the stream) completes."""
        text = self._decoder.decode(data)
        if not text:  # nothing (or part of a character): a pending CR keeps waiting
            return []
        if not self._started:
            if text.startswith("\ufeff"):
                text = text[1:]
            self._started = True
        events: list[Event] = []
        start = 0
        if self._cr and text.startswith("\n"):
            start = 1  # the LF of a CRLF split between two pieces
        self._cr = False
        length = len(text)
        while start < length:
            cut = _line_end(text, start)
            if cut < 0:
                self._line += text[start:]
                if len(self._line) > self._max:
                    raise EventStreamError(f"an event-stream line is over {self._max} characters")
                break
            line = self._line + text[start:cut]
            self._line = ""
            if text[cut] == "\r":
                if cut + 1 < length:
                    start = cut + 2 if text[cut + 1] == "\n" else cut + 1
                else:
                    self._cr = True
                    start = length
            else:
                start = cut + 1
            event = self._process(line)
            if event is not None:
                events.append(event)
        return events

    def _process(self, line: str) -> Event | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
            self._data_size += len(value) + 1
            if self._data_size > self._max:
                raise EventStreamError(f"an event's data is over {self._max} characters")
        elif field == "event":
            self._type = value
        elif field == "id":
            if "\x00" not in value:
                self._id_buffer = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> Event | None:
        if self._id_buffer is not None:
            self.last_event_id = self._id_buffer or None  # an empty id resets it
        data, kind = self._data, self._type or "message"
        self._data, self._data_size, self._type = [], 0, ""
        if not data:
            return None
        return Event(kind, "\n".join(data), self.last_event_id)


def _line_end(text: str, start: int) -> int:
    """The index of the next CR or LF at or after ``start``, or -1."""
    lf = text.find("\n", start)
    cr = text.find("\r", start, lf if lf >= 0 else len(text))
    if cr >= 0:
        return cr
    return lf
