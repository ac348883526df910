"""The client side of every command that talks to a running server (`batches`, `files`,
`scheduler`): one way to call it, and errors that say what to do."""

from __future__ import annotations

from typing import Any, NoReturn

import httpx
import typer

EXIT_SERVER_ERROR = 1
EXIT_BAD_INPUT = 2
TIMEOUT_S = 300.0
KEY_HINT = (
    "pass --api-key KEY or set BACKBURNER_API_KEY; an operator creates one with "
    "`backburner keys create --org NAME` (add --admin for the admin commands; "
    "--org default reaches what was made before keys were on)"
)


class ServerError(Exception):
    def __init__(self, message: str, exit_code: int = EXIT_SERVER_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def client(url: str, api_key: str | None, timeout_s: float = TIMEOUT_S) -> httpx.Client:
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    if isinstance(detail, list):  # a validation error: each problem and where it is
        return "; ".join(_problem(item) for item in detail)
    return detail if isinstance(detail, str) else str(detail)


def _problem(item: Any) -> str:
    """`q: String should have at least 1 character` from FastAPI's `{"loc": ["query", "q"], "msg": ...}`."""
    if not isinstance(item, dict) or "msg" not in item:
        return str(item)
    where = [str(part) for part in item.get("loc", [])[1:]]
    return f"{'.'.join(where)}: {item['msg']}" if where else str(item["msg"])


def check(response: httpx.Response) -> Any:
    """The JSON of a successful answer; ServerError saying what went wrong (and what to do) otherwise."""
    if response.is_success:
        return response.json() if response.content else None
    status = response.status_code
    if status == 401:
        given = "authorization" in response.request.headers
        what = "the server refused this API key" if given else "the server needs an API key"
        raise ServerError(f"{what}: {KEY_HINT}", EXIT_BAD_INPUT)
    if status == 403:
        raise ServerError(f"{_detail(response)}: {KEY_HINT}", EXIT_BAD_INPUT)
    raise ServerError(f"the server answered {status}: {_detail(response)}")


def unreachable(url: str, exc: httpx.HTTPError) -> str:
    return (
        f"cannot reach the server at {url}: {exc}; start one with `backburner serve` (or `make run`), "
        "or point --url / BACKBURNER_URL at it"
    )


def request(url: str, api_key: str | None, method: str, path: str, **kwargs: Any) -> Any:
    """One call; on any failure print what went wrong and exit (1, or 2 for a missing key)."""
    try:
        with client(url, api_key) as session:
            return check(session.request(method, path, **kwargs))
    except httpx.HTTPError as exc:
        fail(unreachable(url, exc), EXIT_SERVER_ERROR)
    except ServerError as exc:
        fail(str(exc), exc.exit_code)
