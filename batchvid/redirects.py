"""A redirect followed by httpx's own client, from its second step: ``transport.Client``'s way.

``Client.stream`` sends a download's first request straight to its transport. When that
answer is a redirect the client follows, httpx's client takes over where its own loop
(``AsyncClient._send_handling_redirects``) would stand after that first answer: it makes the
next request (``_build_redirect_request``: method, URL, the Authorization header dropped for
another origin, cookies from the client's jar), reads the redirect, and goes on with the
history ``[answer]``, so the redirect limit, its error and everything after are httpx's.

Both steps are private to httpx. ``FOLLOWS`` says whether the installed httpx has them as
the releases whose code was read for this have them (0.27 and 0.28: the same two methods,
line for line): their signatures, and a version in that range, since a later release could
keep a signature and change what the method does. Outside it, a client following redirects
sends through httpx's client throughout, as before (correct, a little slower); the test
suite's ``tests/test_redirects.py`` fails on such an httpx, so the range is widened only
after its code has been read again.
"""

from __future__ import annotations

import httpx

READ_VERSIONS = ((0, 27), (0, 28))
"""httpx's (major, minor) releases whose two redirect steps were read for ``follow``."""


def follows_as_httpx(version: str = httpx.__version__) -> bool:
    """Whether httpx's client has the two steps of following a redirect that ``follow``
    calls, as the releases of ``READ_VERSIONS`` have them."""
    import inspect

    try:
        major_minor = tuple(int(part) for part in version.split(".")[:2])
        build = inspect.signature(httpx.AsyncClient._build_redirect_request)
        go_on = inspect.signature(httpx.AsyncClient._send_handling_redirects)
    except (AttributeError, TypeError, ValueError):
        return False
    return (
        major_minor in READ_VERSIONS
        and list(build.parameters) == ["self", "request", "response"]
        and list(go_on.parameters) == ["self", "request", "follow_redirects", "history"]
    )


FOLLOWS = follows_as_httpx()


async def follow(client: httpx.AsyncClient, request: httpx.Request, response: httpx.Response) -> httpx.Response:
    """What ``client`` (following redirects) does once ``request``, the first of a send, was
    answered with the redirect ``response``: the next request made, the redirect read and
    closed, and on in httpx's loop with it as the history."""
    try:
        following = client._build_redirect_request(request, response)
        await response.aread()
    except BaseException:
        await response.aclose()
        raise
    return await client._send_handling_redirects(following, follow_redirects=True, history=[response])
