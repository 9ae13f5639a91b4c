"""Runs as a service: validate, price, start, claim, record, complete, settle, wait, cancel and
retry of pipeline runs (:class:`~levqor_host.runs.service.RunService`, ``state.runs``), and the
store-backed recorder of the kernel's runner (:mod:`levqor_host.runs.recording`). No Flask: the
web routes, the executors, the scheduler and the CLI call it."""
