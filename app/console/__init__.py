"""The web console: static HTML/CSS/JS modules served by the API process itself (no build step, no torch)."""

from app.console.router import router

__all__ = ["router"]
