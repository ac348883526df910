"""Dependencies shared by the routers."""

from fastapi import Depends, HTTPException, Request

from backburner.auth.principal import OPEN_PRINCIPAL, Principal
from backburner.runtime import Runtime
from backburner.schedules.component import Schedules


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_principal(request: Request) -> Principal:
    """The caller, set by the authentication middleware (open principal when auth is off)."""
    principal: Principal = getattr(request.state, "principal", OPEN_PRINCIPAL)
    return principal


def get_organization_id(request: Request) -> str:
    """The organization that scopes every read and write of this request."""
    return get_principal(request).organization_id


def get_schedules(runtime: Runtime = Depends(get_runtime)) -> Schedules:
    if runtime.schedules is None:
        raise HTTPException(503, "schedules have not started yet; retry shortly")
    return runtime.schedules
