"""Domain errors of the service. No HTTP here: service/problems.py maps each to a response."""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error the service maps to a problem-details response."""

    #: Stable problem ``type`` slug (the part after ``/problems/``) and HTTP status.
    slug = "internal"
    status = 500
    title = "Internal error"
    #: Sent as ``Retry-After`` when set: when a retry may succeed.
    retry_after_seconds: int | None = None


class ArtifactError(ServiceError):
    """A model artifact is missing, corrupted or of another format version."""

    slug = "model-unavailable"
    status = 503
    title = "No usable model"


class ModelUnavailable(ArtifactError):
    """No model is loaded, so personalised answers cannot be given."""


class StoreUnavailable(ServiceError):
    """Redis cannot be reached, timed out or refuses commands (out of memory, read-only)."""

    slug = "store-unavailable"
    status = 503
    title = "Customer state store unavailable"
    retry_after_seconds = 1


class UnknownItem(ServiceError):
    """An item id the live model does not know."""

    slug = "unknown-item"
    status = 404
    title = "Unknown item"


class InvalidRequest(ServiceError):
    """A request that is well-formed JSON but breaks a rule (batch too large, bad filter...)."""

    slug = "invalid-request"
    status = 400
    title = "Invalid request"


class IdentifierConflict(ServiceError):
    """An identifier is already linked to another customer; it is never silently re-linked."""

    slug = "identifier-conflict"
    status = 409
    title = "Identifier linked to another customer"


class UnknownCustomer(ServiceError):
    """No customer is linked to the identifier looked up."""

    slug = "unknown-customer"
    status = 404
    title = "Unknown customer"
