"""Fixtures of the session tests (no Qt): a session on a synchronous executor, what it said,
and sessions made ready on an RGB picture or a stack (random-weight tiny SAM)."""

from __future__ import annotations

import pytest

from napari_sam.annotator import ImageSource, Session, SyncExecutor

from .helpers import Prompts, make_ready


@pytest.fixture()
def session():
    return Session(SyncExecutor())


@pytest.fixture()
def said(session):
    """Every ``(text, warn)`` the session shows, in order."""
    out = []
    session.events.status.connect(lambda text, warn: out.append((text, warn)))
    return out


@pytest.fixture()
def prompts(session):
    return Prompts(session)


@pytest.fixture()
def ready(session, rgb_image, tiny_checkpoint):
    """The discs picture (scale 0.5) with the tiny model loaded and embedded."""
    return make_ready(session, ImageSource(rgb_image, rgb=True, name="discs", scale=(0.5, 0.5)), tiny_checkpoint)


@pytest.fixture()
def ready_stack(session, stack, tiny_checkpoint):
    """The stack on plane 2 with the tiny model loaded and embedded."""
    return make_ready(session, ImageSource(stack, name="stack"), tiny_checkpoint, (2,))
