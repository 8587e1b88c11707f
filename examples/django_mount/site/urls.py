"""Django's own routes.  The gateway is not here: a URL pattern can only point at a Django
view, so ``asgi.py`` sends ``/llm/`` to the gateway before Django sees the request."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path


def home(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"hello": "this is Django; the gateway lives under /llm/"})


urlpatterns = [path("", home)]
