"""JSON API v1 (``/api/v1``), documented by ``/api/v1/openapi.json``.

One blueprint, ``api``, its routes grouped by what they serve: :mod:`.catalog` (the document,
the connector catalog, the signed-in user), :mod:`.pipelines`, :mod:`.credentials` and
:mod:`.runs`. The AI builder (:mod:`.plan`) and the cron preview (:mod:`.schedule`) are
blueprints of their own."""

from __future__ import annotations

from levqor_host.web.api import catalog, credentials, pipelines, runs
from levqor_host.web.api.blueprint import bp

__all__ = ["bp", "catalog", "credentials", "pipelines", "runs"]
