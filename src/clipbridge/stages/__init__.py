"""One module per DVC stage: read params once, call pure functions, write outputs atomically."""

from __future__ import annotations

import sys
from collections.abc import Callable

from clipbridge import config


def run(stage: Callable[[config.Params], None]) -> None:
    """Run ``stage(params)``; expected failures become one line on stderr and exit status 1."""
    from clipbridge.registry import ModelFileError

    try:
        stage(config.load())
    except (config.ConfigError, ModelFileError, FileNotFoundError, KeyError, ValueError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(1)
