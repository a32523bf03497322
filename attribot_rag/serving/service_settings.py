"""The citation service's settings and binding rules, apart from ``service`` (which needs the
``serve`` extra), so that ``attribot-rag serve`` derives its flags and defaults from them and
refuses bad settings before anything heavy is imported or loaded."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from ..api.options import AttributionOptions

MIN_KEY_LENGTH = 16
# About an exact attribution of the 100 documents --max-documents allows at 19 sentences each:
# generous for any real request, yet one request cannot hold the model for hours.
DEFAULT_MAX_FORWARDS = 2000


class ServiceSettings(BaseModel):
    """The limits and defaults of one service process (the ``serve`` command's flags)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    options: AttributionOptions = Field(
        default_factory=lambda: AttributionOptions(max_forwards=DEFAULT_MAX_FORWARDS),
        description="for requests without 'options'; its max_forwards also caps every request's",
    )
    api_key: SecretStr | None = Field(None, description="clients send 'Authorization: Bearer KEY'; None: no key")
    max_queue: int = Field(16, ge=0, description="requests that may wait for the model; past it 503 with Retry-After")
    timeout: float = Field(300.0, gt=0, description="seconds to answer a request, queue included; past it 504")
    max_documents: int = Field(100, ge=1, description="documents per request; past it 422")
    max_body: int = Field(1_000_000, ge=1, description="request body bytes; past it 413")
    max_connections: int = Field(
        256, ge=1, description="open connections; past it a new one gets 503 and is closed (not under --ray)"
    )
    receive_timeout: float = Field(
        30.0,
        gt=0,
        description="seconds to receive a request's headers and body; past it 408 and the connection closes (not under --ray)",
    )

    @field_validator("api_key")
    @classmethod
    def _usable_key(cls, key: SecretStr | None) -> SecretStr | None:
        """A key a client can send: HTTP headers are ASCII, so any other key could never match."""
        value = key.get_secret_value() if key is not None else None
        if value is not None and (len(value) < MIN_KEY_LENGTH or not all("!" <= c <= "~" for c in value)):
            raise ValueError(
                f"the API key must be at least {MIN_KEY_LENGTH} printable ASCII characters without spaces "
                f"(it is sent in an HTTP header); it has {len(value)} characters"
            )
        return key


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` (or a request's ``Host`` name) stays on this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_binding(host: str, settings: ServiceSettings) -> None:
    """Refuse to serve off loopback without an API key: attribution costs GPU time and the
    requests carry the app's documents."""
    if not is_loopback(host) and settings.api_key is None:
        raise ValueError(
            f"binding to {host} exposes the service beyond this machine: set an API key (--api-key-env NAME) or bind to 127.0.0.1"
        )
