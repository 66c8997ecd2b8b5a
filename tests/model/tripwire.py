"""Objects that record being unpickled: a training checkpoint's Python objects must never be
executed or imported when its weights are read (tests/model/test_formats.py)."""

TRIPPED: list = []


def trip(*args):
    TRIPPED.append(args)
    return {}


class TrainerConfig:
    """Pickles as a call of :func:`trip` (what a malicious file could do with any function)."""

    def __reduce__(self):
        return trip, ("unpickled",)


class Optimizer:
    def __init__(self) -> None:
        self.lr = 1e-4

    def __setstate__(self, state):
        TRIPPED.append(("setstate", state))
