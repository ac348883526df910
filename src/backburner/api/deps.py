"""Dependencies shared by the routers."""

from fastapi import Request

from backburner.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime
