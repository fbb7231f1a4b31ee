"""The live dashboard: `mount(app)` adds `GET /` (the page) and its static assets to the
service's FastAPI app. The page is fed only by the service's own endpoints
(/v1/users/{id}/recommendations, /v1/users/{id}/interests, /v1/migrations, /metrics, /healthz)
and polls them, so it shows new events as soon as the service has them.

Layering: report may import serve, serve never imports report; `shiftrec serve` calls mount().
"""

from __future__ import annotations

from typing import Any

from shiftrec.report.html import asset, plotly_js

STATIC = "/dashboard"


def page(poll_ms: int = 2000) -> str:
    return (asset("dashboard.html")
            .replace("{{css}}", asset("report.css") + asset("dashboard.css"))
            .replace("{{static}}", STATIC)
            .replace("{{poll_ms}}", str(int(poll_ms))))


def mount(app: Any, poll_ms: int = 2000) -> Any:
    """Add GET / and GET /dashboard/{plotly.min.js,dashboard.js} to a FastAPI app; returns it."""
    from fastapi.responses import HTMLResponse, Response

    html = page(poll_ms)
    cache = {"Cache-Control": "public, max-age=3600"}

    @app.get("/", include_in_schema=False)
    async def dashboard() -> Any:
        return HTMLResponse(html)

    @app.get(f"{STATIC}/plotly.min.js", include_in_schema=False)
    async def dashboard_plotly() -> Any:
        return Response(plotly_js(), media_type="text/javascript", headers=cache)

    @app.get(f"{STATIC}/dashboard.js", include_in_schema=False)
    async def dashboard_js() -> Any:
        return Response(asset("dashboard.js"), media_type="text/javascript")

    return app
