"""A local Stock2Shop API for trying the connector and for every end-to-end test (issue 2).

    from connector.sandbox import Sandbox, SandboxConfig, Faults
    with Sandbox(SandboxConfig(rate=1.0, faults=Faults(seed=1, error_rate=0.1))) as sb:
        sb.url, sb.state(), sb.reset(), sb.set_faults(Faults())

See docs/sandbox.md for every rule it enforces.
"""

from connector.sandbox.server import Sandbox
from connector.sandbox.settings import Faults, SandboxConfig

__all__ = ["Faults", "Sandbox", "SandboxConfig"]
