"""The adapter registry (DESIGN.md §7, docs/registry.md): which base models,
domains and adapter versions exist, which version each domain serves, and
where its golden set is. This package reads and checks it, and writes it
(`write`: atomically, keeping comments, under a lock); it never imports torch
(loading adapters is `monitor.eval`'s job)."""

from monitor.registry.model import (KINDS, NAME, STATUSES, BaseModel, Domain, Registry,
                                    RegistryError, Version, check_cron, describe_domain,
                                    format_table, load_registry, resolve_inside)
from monitor.registry.write import registry_lock, set_active, set_status, update_registry

__all__ = ["KINDS", "NAME", "STATUSES", "BaseModel", "Domain", "Registry", "RegistryError",
           "Version", "check_cron", "describe_domain", "format_table", "load_registry",
           "registry_lock", "resolve_inside", "set_active", "set_status", "update_registry"]
