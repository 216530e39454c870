"""The stack's own ceiling: the same server stack as tokend (uvicorn + uvloop + httptools +
Starlette), one POST route that reads the body and answers a fixed small JSON. No tokend code."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

BODY = b'{"access_token":"x","token_type":"Bearer","expires_in":3600}'


async def noop(request: Request) -> Response:
    await request.body()
    return Response(BODY, 200, {"Cache-Control": "no-store"}, "application/json")


app = Starlette(routes=[Route("/auth/v2/token", noop, methods=["POST"])])
