"""JSON API v1 (``/api/v1``), documented by ``/api/v1/openapi.json``.

One blueprint, ``api``, its routes grouped by what they serve: :mod:`.catalog` (the document,
the connector catalog, the signed-in user), :mod:`.pipelines`, :mod:`.credentials` and
:mod:`.runs`, switching pipelines on and off and testing app triggers (:mod:`.triggers`), the
builder's tools (:mod:`.builder`: pinned data, the field picker, testing a step) and the choices
of an action's field (:mod:`.options`: a model list). The AI builder (:mod:`.plan`) and the cron
preview (:mod:`.schedule`) are blueprints of their own."""

from __future__ import annotations

from levqor_host.web.api import builder, catalog, credentials, options, pipelines, runs, triggers
from levqor_host.web.api.blueprint import bp

__all__ = ["bp", "builder", "catalog", "credentials", "options", "pipelines", "runs", "triggers"]
