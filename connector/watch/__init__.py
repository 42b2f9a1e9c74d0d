"""`connector watch`: a long-running service that takes dropped exports, one at a time.

    serve(settings, lambda: Pipeline(settings, client, ledger))

One job per module:

    service.py   serve(): the state lock, signals, health, the worker, the loop's lifetime
    loop.py      Watcher: discover, claim, run_file, place; backoff, health beats and waits
    observer.py  choose_observer (/proc/mounts), the supervised watchdog observer, its hints
    worker.py    the pipeline's thread, wait_for and abandoning on stop

Watch only decides which file; `Pipeline.run_file` does the work. Every reading of time and
every wait goes through one injected `connector.clock.Clock`.
"""

from connector.watch.loop import Backoff, Watcher
from connector.watch.observer import ObserverSupervisor, choose_observer, filesystem_type, is_network_path
from connector.watch.service import serve
from connector.watch.worker import Abandoned, Worker, wait_for

__all__ = [
    "Abandoned",
    "Backoff",
    "ObserverSupervisor",
    "Watcher",
    "Worker",
    "choose_observer",
    "filesystem_type",
    "is_network_path",
    "serve",
    "wait_for",
]
