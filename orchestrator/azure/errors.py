"""Errors of Azure operations, typed once where they are raised.

:func:`orchestrator.azure.ops.run_op` turns whatever an SDK raised into an
:class:`AzureOperationError` (a :class:`~orchestrator.errors.TargetError` naming the target,
resource and operation), and into its subclass :class:`AzureNotFound` or :class:`AzureForbidden`
when the service said 404 or 401/403.  Callers test the type (``except AzureNotFound``) or call
:func:`is_not_found`, which reads the one exception it is given: nobody walks ``__cause__``
chains by hand.  The helpers read azure-core's ``HttpResponseError`` shape (``status_code``,
``error.code``) without importing azure-core.
"""

from __future__ import annotations

from typing import Any

from orchestrator.errors import TargetError


class AzureOperationError(TargetError):
    """An Azure operation failed for good (retries, if any were worth it, are spent).
    ``status`` and ``code`` are the service's HTTP status and error code, when it gave them."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.status = status
        self.code = code


class AzureNotFound(AzureOperationError):
    """The service answered 404 (or the SDK's ``ResourceNotFoundError``): the thing does not exist."""


class AzureForbidden(AzureOperationError):
    """The service answered 401 or 403: this identity may not do that."""


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of an SDK error (``status_code`` or ``response.status_code``), or of a typed one."""
    code = getattr(exc, "status", None) if isinstance(exc, AzureOperationError) else None
    if code is None:
        code = getattr(exc, "status_code", None)
    if code is None:
        code = getattr(getattr(exc, "response", None), "status_code", None)
    return code if isinstance(code, int) else None


def error_code(exc: BaseException) -> str | None:
    """The service's error code (``error.code`` of an ``HttpResponseError``), or of a typed one."""
    code = exc.code if isinstance(exc, AzureOperationError) else getattr(getattr(exc, "error", None), "code", None)
    return code if isinstance(code, str) else None


def is_not_found(exc: BaseException) -> bool:
    """Does ``exc`` say the resource does not exist?  Reads ``exc`` only (typed errors carry it)."""
    return (isinstance(exc, AzureNotFound) or status_of(exc) == 404
            or type(exc).__name__ == "ResourceNotFoundError")


def is_forbidden(exc: BaseException) -> bool:
    return isinstance(exc, AzureForbidden) or status_of(exc) in (401, 403)


def describe(e: BaseException) -> str:
    """The service's own message, without the SDK's multi-line boilerplate."""
    if isinstance(e, AzureOperationError):
        return e.message
    code = error_code(e)
    status = status_of(e)
    msg = getattr(getattr(e, "error", None), "message", None) or getattr(e, "message", None) or str(e)
    msg = str(msg).strip().splitlines()[0] if str(msg).strip() else type(e).__name__
    # a failed long-running operation arrives with the poll's 200: the code says it all
    head = " ".join(p for p in (f"HTTP {status}" if status and status >= 400 else "", code or "") if p)
    return f"{head}: {msg}" if head else msg


def typed(message: str, cause: BaseException, **kw: Any) -> AzureOperationError:
    """The :class:`AzureOperationError` (or subclass) for ``cause``, with ``message``."""
    status, code = status_of(cause), error_code(cause)
    cls = AzureNotFound if is_not_found(cause) else AzureForbidden if status in (401, 403) else AzureOperationError
    return cls(message, status=status, code=code, **kw)
