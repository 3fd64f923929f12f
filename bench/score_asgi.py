"""The app for ASGI servers other than `model-ledger serve` (granian in bench/score_http.py).

granian --interface asgi --factory bench.score_asgi:app   (settings from MODEL_LEDGER_*)
"""

from __future__ import annotations

from litestar import Litestar

from app.main import create_app
from app.settings import Settings


def app() -> Litestar:
    """`create_app` with the settings of the environment, as `serve` builds it."""
    return create_app(Settings.from_env())
