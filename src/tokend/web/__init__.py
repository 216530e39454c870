"""The ASGI application: HTTP in, core calls, HTTP out."""
