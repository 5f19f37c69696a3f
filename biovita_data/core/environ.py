"""Environment variables set for a while: for the child processes started meanwhile to inherit."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping


@contextlib.contextmanager
def scoped(values: Mapping[str, str | None]) -> Iterator[None]:
    """Each `name: value` set in this process's environment (a None value leaves its variable as
    it is) for the duration; then every one restored, or removed where it was unset."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update({name: v for name, v in values.items() if v is not None})
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
