"""Liveness: ``GET /health`` answers without touching the database."""

from __future__ import annotations

import time

from flask import Blueprint, current_app, jsonify

from . import __version__

bp = Blueprint("ops", __name__)


@bp.get("/health")
def health():
    st = current_app.extensions["levqor"]
    return jsonify(
        {
            "status": "ok",
            "version": __version__,
            "uptime_seconds": round(time.time() - st.started_at, 3),
        }
    )
