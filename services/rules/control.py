"""Live site-file changes: `aimass rules apply` publishes a validated site file on the compacted
control topic; every rules worker reads that topic from its beginning (no consumer group, so each
worker sees every change, and a restarted worker replays to the latest) and switches its engine.

A file that fails validation on the worker side too (one published by another tool) is refused with
a dead letter; the rules already running keep running.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from aimass import contracts
from aimass import control as topics
from aimass.contracts import SiteConfig
from aimass.settings import Settings
from aimass.site import Site, load_site


def site_config(site: Site, text: str, source: str) -> SiteConfig:
    return SiteConfig(site_id=site.site.id, sha256=hashlib.sha256(text.encode()).hexdigest(), yaml=text,
                      source=source, applied_ms=contracts.now_ms())


async def publish(settings: Settings, path: Path) -> SiteConfig:
    """Validate ``path`` offline (raises SiteFileError) and publish it for the running workers."""
    site = load_site(path)
    msg = site_config(site, Path(path).read_text(), str(path))
    await topics.publish(settings, contracts.TOPIC_CONTROL_RULES, site.site.id.encode(), contracts.encode(msg))
    return msg


async def follow(settings: Settings, on_message: topics.OnMessage, caught_up) -> None:
    """Every site file ever published, oldest first, then each new one (see aimass.control)."""
    await topics.follow(settings, contracts.TOPIC_CONTROL_RULES, on_message, caught_up)


def decode(value: bytes) -> SiteConfig:
    return contracts.decode(value, SiteConfig)
