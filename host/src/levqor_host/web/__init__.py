"""The web layer: Flask blueprints only (the JSON API, webhooks, the dashboard, ops endpoints).

Routes parse and check the request, call the domain services and render the answer; they run
no SQL of their own."""
