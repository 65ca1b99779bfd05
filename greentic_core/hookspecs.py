"""The deployer plugin contract: every hook a provider implements, documented where declared.

This module is the reference plugin authors read. Rules that hold for every verb:

* **Arguments are keyword-only and opt-in.** An implementation declares only the arguments it
  needs, without defaults (pluggy passes only names declared without defaults). New arguments
  are only ever *added*, so a plugin written today keeps working.
* **Preconditions are already checked.** Before any verb reaches a provider, the core has
  checked that the revision exists (else ``RevisionNotFound``), that a split exists for the
  deployment and sums to 10000 (else ``SplitNotFound`` / ``InvalidSplit``) and that ``answers``
  match the descriptor's ``answers_schema`` (else ``InvalidAnswers``); for ``stage``, ``warm``
  and ``apply_traffic_split``, that the deployment's routes meet the shared route rules and
  the provider's ``greentic_validate_routes`` (else ``InvalidRoute``). A provider may rely on
  all of this and must not repeat it with other error types.
* **Exactly one provider is called**: the one bound in the environment's ``deployer`` slot.
* **Verbs are idempotent.** Calling a verb twice succeeds twice and leaves the same provider
  state (the conformance suite checks this through ``greentic_observe``).
* **Do not record.** A verb never writes the environment document; the operator records the
  lifecycle transition only after the verb returned. ``env`` is a frozen value.
* **Errors.** Raise :class:`~greentic_core.ProviderError` with what failed and what the provider
  said (one line, plus a ``hint=`` when a fix can be named). Any other exception is converted
  to ``ProviderError`` naming the plugin and the verb, with the original kept as its cause.
* **Long waits** report through ``progress(message)`` and honour ``timeout`` (seconds, or
  ``None`` for the provider's own default), raising :class:`~greentic_core.ProviderTimeout`
  when it runs out, after undoing what the call started where that is safe.

Common arguments:

``env``
    The :class:`~greentic_core.Environment` as recorded (frozen).
``answers``
    The provider configuration bound in the environment (a JSON object, already validated).
``state_dir``
    A :class:`pathlib.Path` of a directory the provider may keep its own files in, on the
    machine that runs the provider (the environment's directory with the file store,
    ``$GREENTIC_HOME/state/<env>`` with a shared store). Not shared with other environments
    or other machines: never put what other operators need there.
``progress``
    ``progress(message: str) -> None``; cheap to call, shown on a terminal, silent otherwise.
``timeout``
    Seconds the caller is willing to wait, or ``None``.
"""

from __future__ import annotations

from .markers import hookspec


@hookspec(firstresult=True)
def greentic_deployer_descriptor():
    """Return the :class:`~greentic_core.DeployerDescriptor` of this deployer.

    Called when the plugin is loaded, without arguments. Must be cheap and side-effect free:
    no network, no import of a cloud SDK. ``path`` must equal the entry-point name.
    """


@hookspec(firstresult=True)
def greentic_stage_revision(env, revision_id, answers, state_dir, progress, timeout):
    """Prepare a revision so that warm can start it; return a :class:`~greentic_core.StageOutcome`.

    Called for a revision that is recorded ``staged`` (stage records it after this returns).
    Check what can be checked early (image reference, command found, directories), prepare
    files. Must not start anything that serves traffic. Idempotent: staging twice is fine.
    """


@hookspec(firstresult=True)
def greentic_warm_revision(env, revision_id, answers, state_dir, progress, timeout):
    """Start the revision and wait until it serves; return a :class:`~greentic_core.WarmOutcome`.

    On success the revision is really serving (observe reports ``present`` and ``serving``);
    the core then records ``ready``. Idempotent: a revision already running and healthy is left
    alone. On failure or timeout, stop what this call started and raise ``ProviderError`` /
    ``ProviderTimeout`` quoting what the provider said (e.g. the last log lines). Must not
    route traffic to the revision: that happens only through ``greentic_apply_traffic_split``.
    """


@hookspec(firstresult=True)
def greentic_drain_revision(env, revision_id, answers, state_dir, progress, timeout):
    """Drain the revision and stop it; return a :class:`~greentic_core.DrainOutcome`.

    The core has checked that no split gives the revision weight. Wait for requests in flight
    to finish, at most the revision's ``drain_seconds`` (plus the descriptor's
    ``drain_slack_seconds``), then stop it. Idempotent: draining a stopped revision succeeds.
    """


@hookspec(firstresult=True)
def greentic_archive_revision(env, revision_id, answers, state_dir, progress, timeout):
    """Remove everything warm created for the revision; return an :class:`~greentic_core.ArchiveOutcome`.

    Must succeed when the revision is already torn down or was never warmed. Must not touch
    objects that belong to another revision or environment.
    """


@hookspec(firstresult=True)
def greentic_apply_traffic_split(env, deployment_id, answers, state_dir, progress, timeout):
    """Enforce the recorded split of ``deployment_id``; return a :class:`~greentic_core.TrafficSplitOutcome`.

    The split is ``env.split_for(deployment_id)`` (already checked to exist and sum to 10000).
    Return only once the provider enforces it. Must not change any other deployment's routing.
    ``applied_deployment_id`` must equal ``deployment_id`` and ``applied_entries`` the recorded
    entries; a provider with a coarser weight scale reports what it wrote in
    ``provider_weights`` and ``max_deviation_bps``.
    """


@hookspec(firstresult=True)
def greentic_report_runtime_config(env, answers, state_dir):
    """Optionally return the :class:`~greentic_core.RuntimeConfig` the provider serves.

    Default (no implementation or ``None``): the core projection. An override may only add
    provider-discovered values, never change weights.
    """


@hookspec(firstresult=True)
def greentic_observe(env, answers, state_dir):
    """Return an :class:`~greentic_core.Observation` of what the provider really has.

    Read-only. For every revision of ``env``: whether it is present and serving. For every
    deployment: the weights the provider enforces, in basis points. This is what the
    conformance suite and ``env reconcile`` trust, so it must read provider state, not echo the
    environment.
    """


@hookspec(firstresult=True)
def greentic_revision_metrics(env, answers, state_dir):
    """Optionally return request counters per revision, for canary analysis.

    ``{revision_id: {"requests": int, "errors": int, "p99_ms": float | None}}``, read from the
    provider (a router, a load balancer, a metrics API), never from the environment.
    ``requests`` and ``errors`` are *cumulative* counters (they only grow, except when the
    provider restarts and they begin again at 0): the core takes the difference between two
    readings to get the requests and failures of an analysis window. ``errors`` counts the
    requests the revision failed (5xx answers and requests it never answered). ``p99_ms`` is
    the provider's latest 99th-percentile latency of the revision in milliseconds, or None.
    A revision the provider has no numbers for may be left out. Read-only and cheap: it is
    called at the start and end of every canary analysis window. ``None`` (or no
    implementation) means the provider has no request metrics.
    """


@hookspec(firstresult=True)
def greentic_revision_window_metrics(env, answers, state_dir, revision_ids, start, end):
    """Optionally return request totals per revision over one time window, for canary analysis.

    For providers whose metrics live in a time-series store (a load balancer's metrics API,
    CloudWatch, a managed Prometheus) rather than in counters the provider can read twice.
    ``revision_ids`` is a list of the revisions to report (the canary revisions of a rollout
    step, all in ``env``); ``start`` and ``end`` are timezone-aware UTC :class:`datetime`
    values, the analysis window (the step's weights were set at ``start``; ``end`` is now).

    Return ``{revision_id: {"requests": int, "errors": int, "p99_ms": float | None}}``:
    ``requests`` answered or failed by the revision within ``[start, end]``, ``errors`` the
    ones it failed (5xx answers and requests it never answered), ``p99_ms`` the 99th
    percentile latency within the window in milliseconds (None when unknown). A revision the
    provider saw no requests for may be left out (read as 0 requests). Return ``None`` when the
    provider cannot say for this environment (then the core falls back to
    ``greentic_revision_metrics``). Raise ``ProviderError`` when the metrics API failed: the
    window is then inconclusive, quoting the message.

    Read-only; called once at the end of every analysis window of a canary whose analysis
    source is ``provider`` (the default), so it may cost one or two API calls. When a provider
    implements both metrics hooks, the core uses this one. Data that arrives late (most
    metrics APIs publish a minute or more after the fact) is the provider's to document.
    """


@hookspec(firstresult=True)
def greentic_revision_logs(env, revision_id, answers, state_dir, stream, replica, lines, follow):
    """Optionally return a revision's log lines, as ``kubectl logs`` shows them.

    An iterable of text lines (without their line ends): the last ``lines`` lines (all of them
    when ``None``) of ``stream`` (``"stdout"`` or ``"stderr"``) of replica ``replica`` (0-based)
    of the revision. With ``follow``, it goes on yielding lines as they are written (across a
    log rotation) until the caller stops iterating (Ctrl-C). A replica or stream the provider
    has no log for is a ``ProviderError`` saying which exist. ``None`` (or no implementation)
    means the provider keeps no logs the deployer can read.
    """


@hookspec(firstresult=True)
def greentic_preflight(env, answers, state_dir):
    """Optionally return a list of :class:`~greentic_core.PreflightCheck` for ``env doctor``.

    Read-only checks that the provider can work here (credentials, reachability, free ports,
    writable directories). Each check passes, fails or is skipped with a one-line message.
    """


@hookspec(firstresult=True)
def greentic_validate_routes(env, deployment_id, answers):
    """Optionally return the problems of a deployment's routes under this provider's rules.

    ``env.deployment(deployment_id).route_binding`` holds the ``hosts`` and ``path_prefixes``.
    Return a list of one-line problems (``[]`` or ``None`` when the routes are fine), e.g.
    ``["host 'a.example.com' fills to 139 characters; an ALB host-header value holds 128"]``;
    the core raises :class:`~greentic_core.InvalidRoute` naming the deployment and the first
    problem. Raising ``InvalidRoute`` yourself is fine too.

    The core has already applied the rules every provider shares (lower-case DNS host names, no
    port, no IP address, at most 253 characters; path prefixes absolute, at most 1024 RFC 3986
    path characters, no ``//``, ``.``/``..`` segment, ``%2F``, ``?`` or ``#``; see
    :mod:`greentic_core.routes`), so check only what your target API adds: counts, lengths,
    character sets, the values after your answers' placeholders are filled.

    Called when a deployment is added (before it is recorded: ``env`` already holds the new
    deployment, not yet saved), before ``stage``, ``warm`` and ``apply_traffic_split`` reach
    the provider, and by ``env doctor``. Pure: no network, no files, no provider call, cheap.
    """


@hookspec(firstresult=True)
def greentic_render(env, answers, deployment_id):
    """Optionally return the objects a declarative provider would apply (a dry run).

    ``deployment_id`` is ``None`` for the whole environment, or the one deployment the user
    asked for (an implementation that does not declare the argument renders everything).

    A list of JSON-compatible dicts (e.g. Kubernetes manifests, or the API requests an
    imperative provider would send, as data). Shown by ``greentic-deployer env render``.
    Must not contact the provider.
    """


@hookspec(firstresult=True)
def greentic_conformance_sandbox(workdir):
    """Optionally return a context manager that sets up a disposable target for the conformance suite.

    ``workdir`` is an empty temporary directory. Entering the context manager starts what is
    needed (a temp dir, an API emulator, a local AWS endpoint) and yields the ``answers`` to
    use against it; leaving it removes everything, also when checks failed.
    """
