"""Stop strings while streaming: cut at a full match, hold back a possible partial one.

A streamed chunk must never contain text that could turn out to be the start of a stop
string: "Hello\\n\\nUs" is held back at "Hello" when "\\n\\nUser:" is a stop string, and
released only when the next tokens show it is not (llama-server's find_stopping_strings).
"""

from __future__ import annotations

from collections.abc import Sequence


def find_stop(text: str, stops: Sequence[str], search_from: int = 0) -> tuple[int, str] | None:
    """Earliest full occurrence of any stop string at or after `search_from`: (index, word)."""
    best: tuple[int, str] | None = None
    for word in stops:
        if not word:
            continue
        i = text.find(word, max(0, search_from))
        if i >= 0 and (best is None or i < best[0]):
            best = (i, word)
    return best


def partial_stop_len(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
    longest = 0
    for word in stops:
        for n in range(min(len(word) - 1, len(text)), longest, -1):
            if text.endswith(word[:n]):
                longest = n
                break
    return longest


class StopMatcher:
    """Tracks generated text; tells what may be sent now and whether generation must stop."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.max_len = max((len(s) for s in self.stops), default=0)
        self.text = ""
        self.sent = 0
        self.stopped_word: str | None = None

    def feed(self, piece: str) -> str:
        """Add generated text; return the text that is now safe to send."""
        if self.stopped_word is not None:
            return ""
        start = max(0, len(self.text) - self.max_len + 1)
        self.text += piece
        hit = find_stop(self.text, self.stops, start)
        if hit is not None:
            idx, word = hit
            self.stopped_word = word
            self.text = self.text[:idx]
            out = self.text[self.sent :]
            self.sent = len(self.text)
            return out
        safe = len(self.text) - partial_stop_len(self.text, self.stops)
        if safe <= self.sent:
            return ""
        out = self.text[self.sent : safe]
        self.sent = safe
        return out

    def flush(self) -> str:
        """At the end of generation the held-back tail is real text: release it."""
        out = self.text[self.sent :]
        self.sent = len(self.text)
        return out
