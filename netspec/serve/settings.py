"""The playground server's limits: one model, checked when made, that `netspec serve`'s flags
fill and `create_app` takes."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field


class Settings(BaseModel):
    """What the server lets one request do.

    Attributes:
        hosts: names this server answers to besides 127.0.0.1, localhost and ::1 (the
            `--host` it listens on); a request naming another host is refused.
        allow_remote: listening beyond this machine was asked for (`--allow-remote`): then
            a Host that is an IP address is accepted too (an address cannot be rebound).
        job_seconds: the most an explore may run before it stops (`--job-seconds`).
        explore_max_members: a larger design space is explored on a random sample of this
            many members (`--explore-max-members`).
        max_export_mb: the largest model Export builds, in MiB of fp32 weights and buffers
            (`--max-export-mb`); larger ones are refused before any weight is made.
        body_seconds: a request body must arrive within this time, else 408 and the
            connection closes.
        max_body: the largest request body, in bytes (the largest zoo spec is about 2 KB).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    hosts: tuple[str, ...] = ()
    allow_remote: bool = False
    job_seconds: float = Field(30.0, gt=0)
    explore_max_members: int = Field(5_000, ge=1)
    max_export_mb: float = Field(256.0, gt=0)
    body_seconds: float = Field(10.0, gt=0)
    max_body: int = Field(256 * 1024, ge=1024)


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) is this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
