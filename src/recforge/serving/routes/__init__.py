"""The routes of the HTTP API, by resource; each module's ``add_*_routes(app, ctx)`` adds
its routes to an app (``create_app`` adds them in the order the OpenAPI description lists
them)."""
