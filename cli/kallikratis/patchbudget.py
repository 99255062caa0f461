"""How long a patch run needs to stop cleanly: the time systemd must give it after SIGTERM.

On SIGTERM the run unwinds like Ctrl-C (``commands/patch.py``): the VMs it changed are
reverted to their snapshots. Before that can start, the steps already running in worker
threads finish (they are not cut short: an SSH command is left to end by itself). So the
stop budget, every term an upper bound from the timeouts the run itself uses, is

    in-flight step   max(UPGRADE_TIMEOUT 1800, REBOOT_TIMEOUT 600, COMMAND_TIMEOUT 300)
  + revert           reconnect bound (60) + REVERT_SECONDS (120; measured ~4 s under TCG)
  + after revert     CLOCK_SECONDS (10, guest agent) + 2 x COMMAND_TIMEOUT (clock over SSH,
                     maintenance off)
  + confirm          VERIFY_SECONDS (900; a verify of three VMs takes ~3 min here)
  = 3490 s with the defaults, rounded up to whole minutes: 59 min (TimeoutStopSec=3540s).

A revert that fails is followed by the same verify and one more guest command instead of the
clock and maintenance steps, which is within the same budget.
"""

from __future__ import annotations

import math

from kallikratis.guest import COMMAND_TIMEOUT, REBOOT_TIMEOUT, UPGRADE_TIMEOUT
from kallikratis.hypervisor.reconnect import DEFAULT_RECONNECT_SECONDS

REVERT_SECONDS = 120.0
CLOCK_SECONDS = 10.0
VERIFY_SECONDS = 900.0


def stop_seconds(reconnect_seconds: float = DEFAULT_RECONNECT_SECONDS) -> int:
    """Seconds from SIGTERM until a patch run has reverted and confirmed what it changed."""
    in_flight = max(UPGRADE_TIMEOUT, REBOOT_TIMEOUT, COMMAND_TIMEOUT)
    revert = reconnect_seconds + REVERT_SECONDS
    after = CLOCK_SECONDS + 2 * COMMAND_TIMEOUT
    total = in_flight + revert + after + VERIFY_SECONDS
    return math.ceil(total / 60) * 60
