"""The dashboard's billing page (``/billing``): its template and ES module, served by this
plugin and declared to the host with ``register_dashboard_pages``. Without the plugin there is
no billing page and no Billing entry in the navigation."""

from __future__ import annotations

from flask import Blueprint
from levqor_kernel.host import DashboardPage

#: the template folder and the page's ES module (under the host's dashboard static path, so it
#: is same-origin and treated like the dashboard's own files)
bp = Blueprint(
    "levqor_stripe_dashboard",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/dashboard/static/levqor-stripe",
)

bp.openapi_paths = {  # type: ignore[attr-defined]
    "/dashboard/static/levqor-stripe/{filename}": {
        "get": {
            "summary": "The billing page's ES module",
            "tags": ["dashboard"],
            "security": [],
            "parameters": [
                {"name": "filename", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {"description": "the file", "content": {"text/javascript": {}}},
                "404": {
                    "description": "no such file",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
            },
        }
    }
}

BILLING_PAGE = DashboardPage(
    name="billing",
    path="/billing",
    template="levqor_stripe/billing.html",
    script="/dashboard/static/levqor-stripe/billing.js",
    title="Billing",
    nav_label="Billing",
    order=50,
)
