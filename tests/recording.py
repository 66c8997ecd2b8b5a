"""Recording calls in tests: wrap a function or method so each call is noted, then run as usual."""

from __future__ import annotations


def record_calls(monkeypatch, owner, name: str) -> list[tuple]:
    """Replace ``owner.name`` (undone after the test) by a wrapper that appends each call's
    positional arguments to the returned list and then calls the original."""
    calls: list[tuple] = []
    real = getattr(owner, name)

    def recorded(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, recorded)
    return calls
