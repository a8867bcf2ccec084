"""The real cause of a failure reaches the user (issue 14.6 and 14.7).

- The worker classifies a trial's exception (workers/failures.py): fatal,
  deterministic or transient, in one line, with the one-hot hint for integer
  labels under categorical_crossentropy (Keras 3's own message text).
- The fleet unwraps Ray's exceptions (placement.death_reason): real
  ``RayTaskError``s from a real Ray task, and ones built as Ray builds them;
  no ``ray::`` header, no ANSI codes.
- The chief: a deterministic error is not retried; the same error on 3
  hyperparameter sets ends the search with it; a search whose trials all
  failed ends FAILED naming the most common error.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from orchestrator.chief.broker import TrialBroker
from orchestrator.config import parse_search, spec_json
from orchestrator.errors import ConfigError, DatasetUnavailableError
from orchestrator.fleet.placement import death_reason
from orchestrator.protocol.failures import (
    CRASH_TRACEBACK_MARK,
    FailureKind,
    error_signature,
    one_line,
)
from orchestrator.protocol.trials import AttemptStatus, SearchState, TrialStatus
from tests.helpers import float_space, make_search
from workers.failures import ONE_HOT_HINT, classify, classify_setup
from workers.runner import TrialRunner, WorkerConfig

# Keras 3.15's text for integer labels under categorical_crossentropy (a
# Dense(10, softmax) head, labels of shape (N,)): measured with model.fit.
KERAS_RANK_ERROR = (
    "Arguments `target` and `output` must have the same rank (ndim). "
    "Received: target.shape=(None,), output.shape=(None, 10)"
)


def _named(name: str, base: type[Exception] = Exception) -> type[Exception]:
    """An exception class with TensorFlow's name, without importing TensorFlow."""
    return type(name, (base,), {})


# ------------------------------------------------------------ classification


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (ValueError(KERAS_RANK_ERROR), FailureKind.DETERMINISTIC),
        (TypeError("unsupported operand"), FailureKind.DETERMINISTIC),
        (KeyError("units"), FailureKind.DETERMINISTIC),
        (_named("InvalidArgumentError")("logits and labels must match"), FailureKind.DETERMINISTIC),
        (_named("FailedTrialError")("the user says no"), FailureKind.DETERMINISTIC),
        (ImportError("No module named 'missing_pkg'"), FailureKind.FATAL),
        (ModuleNotFoundError("No module named 'missing_pkg'"), FailureKind.FATAL),
        (ConfigError("hypermodel 'transfer': weights: imagenet needs x.h5"), FailureKind.FATAL),
        (DatasetUnavailableError("dataset.path: gone"), FailureKind.FATAL),
        (_named("DatasetError")("dataset 'mnist': not in the cache"), FailureKind.FATAL),
        (_named("ResourceExhaustedError")("OOM when allocating tensor"), FailureKind.TRANSIENT),
        (_named("UnavailableError")("UNAVAILABLE: socket closed"), FailureKind.TRANSIENT),
        (MemoryError(), FailureKind.TRANSIENT),
        (RuntimeError("something we cannot tell"), FailureKind.TRANSIENT),
    ],
)
def test_each_error_gets_its_kind(exc: Exception, kind: FailureKind) -> None:
    assert classify(exc).kind is kind


def test_integer_labels_under_categorical_crossentropy_get_the_one_hot_hint() -> None:
    failure = classify(ValueError(KERAS_RANK_ERROR))
    assert failure.message == f"ValueError: {KERAS_RANK_ERROR} — {ONE_HOT_HINT}"
    # Labels of shape (N, 1) give Keras's "same shape" variant.
    shape_error = (
        "Arguments `target` and `output` must have the same shape. "
        "Received: target.shape=(None, 1), output.shape=(None, 10)"
    )
    assert classify(ValueError(shape_error)).message.endswith(ONE_HOT_HINT)
    assert ONE_HOT_HINT not in classify(ValueError("another shape problem")).message


def test_messages_are_one_line_without_ansi_codes() -> None:
    failure = classify(RuntimeError("\x1b[31mred\x1b[0m first\n  second line"))
    assert failure.message == "RuntimeError: red first second line"
    assert classify(KeyError()).message == "KeyError"


def test_errors_before_the_first_trial_are_fatal_unless_transient() -> None:
    assert classify_setup(ValueError("bad dataset function")).kind is FailureKind.FATAL
    assert classify_setup(RuntimeError("user dataset failed")).kind is FailureKind.FATAL
    assert classify_setup(MemoryError()).kind is FailureKind.TRANSIENT
    assert classify_setup(_named("ResourceExhaustedError")("OOM")).kind is FailureKind.TRANSIENT


def test_error_signatures_ignore_ids_and_retry_notes() -> None:
    a = error_signature(
        'worker local-w0 died: ValueError: layer "dense_3" wants shape (None, 10) for trial 03 '
        "(pid=812, ip=10.0.0.7) (attempt 3; retry limit 2 reached)"
    )
    b = error_signature(
        'worker local-w1 died: ValueError: layer "dense_12" wants shape (None, 10) for trial 17 '
        "(pid=4410, ip=10.0.0.9)"
    )
    assert a == b
    assert error_signature("ValueError: x") != error_signature("TypeError: x")
    assert error_signature("actor 3f9a0c1d2e4b5a69 gone") == error_signature(
        "actor a1b2c3d4e5f60789 gone"
    )


def _runner(failure: dict[str, Any] | None = None) -> TrialRunner:
    spec = parse_search(
        {
            "name": "t",
            "hypermodel": {"name": "sleep", "options": {"epoch_s": 0.01}},
            "objective": "val_accuracy",
            "oracle": {"type": "random", "max_trials": 2},
            "failure": failure or {},
        }
    )
    # Port 9 (discard): nothing answers; these tests make no RPC.
    config = WorkerConfig(
        worker_id="local-w0", chief_address="127.0.0.1:9", token="t", search_json=spec_json(spec)
    )
    return TrialRunner(config)


def test_the_runner_ends_deterministic_errors_failed_unless_asked_to_retry() -> None:
    runner = _runner()
    assert runner.on_trial_failure("00", classify(ValueError("shape"))) is AttemptStatus.FAILED
    assert runner.on_trial_failure("01", classify(RuntimeError("flaky"))) is AttemptStatus.INVALID
    assert runner._fatal is None
    retrying = _runner({"retry_deterministic": True})
    assert retrying.on_trial_failure("00", classify(ValueError("shape"))) is AttemptStatus.INVALID
    # Keras Tuner's FailedTrialError means "do not retry", whatever the policy.
    no_retry = classify(_named("FailedTrialError")("no"))
    assert retrying.on_trial_failure("01", no_retry) is AttemptStatus.FAILED


def test_a_fatal_trial_error_ends_the_trial_and_names_the_cause() -> None:
    runner = _runner()
    status = runner.on_trial_failure("04", classify(ImportError("No module named 'missing_pkg'")))
    assert status is AttemptStatus.FAILED
    assert runner._fatal is not None
    assert runner._fatal.startswith("ImportError: No module named 'missing_pkg' (trial 04 on ")
    assert "does not depend on the hyperparameters" in runner._fatal


def test_the_config_option_is_off_by_default() -> None:
    assert make_search().failure.retry_deterministic is False
    with pytest.raises(ConfigError, match=r"failure\.retry_deterministic: expected true or false"):
        parse_search(
            {
                "name": "t",
                "hypermodel": "mlp",
                "objective": "val_accuracy",
                "failure": {"retry_deterministic": "yes"},
            }
        )


# ------------------------------------------------------- Ray's wrapping


def _worker_crash(exc: Exception) -> RuntimeError:
    """What workers/actor.py raises when the runner crashes."""
    try:
        raise exc
    except Exception:
        tail = traceback.format_exc()
    return RuntimeError(f"{classify(exc).message}\n{CRASH_TRACEBACK_MARK}\n{tail}")


def _ray_task_error(cause: Exception, *, dual: bool = True) -> Any:
    """A RayTaskError as ``ray.get`` raises it: built the way Ray's worker
    builds it, then (``dual``) made an instance of the cause's class too."""
    from ray.exceptions import RayTaskError

    try:
        raise cause
    except Exception:
        tb = traceback.format_exc()
    error = RayTaskError(
        "WorkerProcess.run",
        tb,
        cause,
        proctitle="ray::WorkerProcess.run",
        pid=4242,
        ip="127.0.0.1",
        actor_repr="<WorkerProcess>",
        actor_id="a1b2c3",
    )
    return error.as_instanceof_cause() if dual else error


def _clean(text: str) -> None:
    assert "ray::" not in text and "\x1b[" not in text, text
    assert "\n" not in text, text


def test_a_worker_crash_shows_its_own_cause() -> None:
    message = (
        "hypermodel 'transfer': weights: imagenet needs "
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5 in /x/models; "
        "set hypermodel.options.weights: null"
    )
    wrapped = _ray_task_error(_worker_crash(ConfigError(message)))
    assert str(wrapped).startswith("\x1b[36mray::WorkerProcess.run()")  # what was shown before
    reason = death_reason(wrapped)
    assert reason == f"ConfigError: {message}"
    _clean(reason)


def test_any_exception_in_a_task_is_shown_as_type_and_message() -> None:
    reason = death_reason(_ray_task_error(ValueError("\x1b[1mbad\x1b[0m value\nsecond line")))
    assert reason == "ValueError: bad value second line"


def test_actor_death_without_a_cause_object_keeps_the_text() -> None:
    from ray.exceptions import ActorDiedError

    creation = _ray_task_error(ImportError("No module named 'missing_pkg'"), dual=False)
    died = ActorDiedError(creation)  # the actor's __init__ raised
    reason = death_reason(died)
    assert reason == "ActorDiedError: ImportError: No module named 'missing_pkg'"
    _clean(reason)
    _clean(death_reason(ActorDiedError()))


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    """A private one-CPU Ray for real RayTaskErrors (about 3 s)."""
    import ray

    # address="local": always a new instance, never a cluster another test or
    # engineer left in RAY_ADDRESS or /tmp/ray/ray_current_cluster.
    ray.init(
        address="local",
        num_cpus=1,
        include_dashboard=False,
        log_to_driver=False,
        namespace="ktc-errors",
    )
    try:
        yield ray
    finally:
        ray.shutdown()


def test_real_ray_errors_are_unwrapped(local_ray: Any) -> None:
    ray = local_ray

    @ray.remote(max_restarts=0)
    class Crasher:
        def crash(self, how: str) -> None:
            if how == "worker":
                raise _worker_crash(ImportError("No module named 'missing_pkg'"))
            raise ValueError(f"\x1b[31m{KERAS_RANK_ERROR}\x1b[0m")

        def exit(self) -> None:
            import os

            os._exit(1)

    actor = Crasher.remote()  # type: ignore[attr-defined]
    reasons = []
    for how in ("worker", "value"):
        with pytest.raises(Exception) as info:
            ray.get(actor.crash.remote(how), timeout=60)
        reasons.append(death_reason(info.value))
    with pytest.raises(Exception) as died:
        ray.get(actor.exit.remote(), timeout=60)
    reasons.append(death_reason(died.value))
    assert reasons[0] == "ImportError: No module named 'missing_pkg'"
    assert reasons[1] == f"ValueError: {KERAS_RANK_ERROR}"
    assert reasons[2].startswith("ActorDiedError: The actor died")
    for reason in reasons:
        _clean(reason)


# ------------------------------------------------------------ the chief


def _broker(make_broker: Callable[..., TrialBroker], max_trials: int, **failure: Any) -> Any:
    search = make_search(
        {"type": "random", "max_trials": max_trials, "seed": 1},
        failure={"retries_per_trial": 2, "max_consecutive_failed_trials": 10, **failure},
    )
    return make_broker(search, initial_space=float_space())


def _fail(broker: TrialBroker, message: str, status: AttemptStatus) -> str:
    a = broker.create_trial("w0", wait_s=0)
    assert a.trial_id is not None
    broker.end_trial(a.trial_id, a.token, status=status, metrics={}, error_message=message)
    return a.trial_id


def test_a_failed_attempt_is_not_retried(make_broker: Callable[..., TrialBroker]) -> None:
    broker = _broker(make_broker, max_trials=5)
    tid = _fail(broker, f"ValueError: {KERAS_RANK_ERROR}", AttemptStatus.FAILED)
    (view,) = [t for t in broker.trials() if t.trial_id == tid]
    assert view.status is TrialStatus.FAILED and view.attempts == 1
    assert view.error_message == f"ValueError: {KERAS_RANK_ERROR}"


def test_error_signatures_keep_the_numbers_that_come_from_the_hyperparameters() -> None:
    """A shape or a hyperparameter's value in the message makes the error depend
    on the hyperparameters (the user audit's B1: three different `units` values)."""
    assert error_signature("ValueError: units 64 not supported") != error_signature(
        "ValueError: units 96 not supported"
    )
    assert error_signature("ValueError: shape (None, 4, 4, 32)") != error_signature(
        "ValueError: shape (None, 2, 2, 64)"
    )


def test_the_same_error_on_three_hyperparameter_sets_ends_the_search(
    make_broker: Callable[..., TrialBroker],
) -> None:
    broker = _broker(make_broker, max_trials=10)
    for layer in ("dense_3", "dense_7"):
        _fail(broker, f"ValueError: layer {layer} wants 3 dims", AttemptStatus.FAILED)
    assert broker.state is SearchState.RUNNING
    _fail(broker, "ValueError: layer dense_9 wants 3 dims", AttemptStatus.FAILED)
    assert broker.state is SearchState.FAILED
    assert broker.message.startswith(
        "ValueError: layer dense_9 wants 3 dims (the same error ended 3 "
    )
    assert "does not depend on them" in broker.message


def test_errors_that_differ_in_a_hyperparameters_value_do_not_end_the_search(
    make_broker: Callable[..., TrialBroker],
) -> None:
    broker = _broker(make_broker, max_trials=10)
    for units in (64, 96, 128):
        _fail(broker, f"ValueError: units {units} not supported", AttemptStatus.FAILED)
    assert broker.state is SearchState.RUNNING


def test_different_errors_do_not_add_up(make_broker: Callable[..., TrialBroker]) -> None:
    broker = _broker(make_broker, max_trials=10)
    for message in ("ValueError: a", "TypeError: a", "ValueError: b", "ValueError: a"):
        _fail(broker, message, AttemptStatus.FAILED)
    assert broker.state is SearchState.RUNNING


def test_no_completed_trial_fails_the_search_naming_the_most_common_error(
    make_broker: Callable[..., TrialBroker],
) -> None:
    broker = _broker(make_broker, max_trials=3)
    _fail(broker, "TypeError: once", AttemptStatus.FAILED)
    _fail(broker, f"ValueError: {KERAS_RANK_ERROR} — {ONE_HOT_HINT}", AttemptStatus.FAILED)
    _fail(broker, f"ValueError: {KERAS_RANK_ERROR} — {ONE_HOT_HINT}", AttemptStatus.FAILED)
    assert broker.state is SearchState.FAILED
    assert broker.message == (
        "0 of 3 trials completed; the most common error (2 trials): "
        f"ValueError: {KERAS_RANK_ERROR} — {ONE_HOT_HINT}"
    )


def test_one_completed_trial_completes_the_search(
    make_broker: Callable[..., TrialBroker],
) -> None:
    broker = _broker(make_broker, max_trials=2)
    _fail(broker, "ValueError: x", AttemptStatus.FAILED)
    a = broker.create_trial("w0", wait_s=0)
    assert a.trial_id is not None
    broker.end_trial(a.trial_id, a.token, status=AttemptStatus.COMPLETED, metrics={"score": 0.5})
    assert broker.state is SearchState.COMPLETED


def test_one_line_cuts_long_text() -> None:
    assert one_line("x" * 3000, limit=10) == "x" * 9 + "…"


def test_the_last_failure_travels_in_the_status_document(
    make_broker: Callable[..., TrialBroker],
) -> None:
    from pathlib import Path

    from rich.console import Console

    from orchestrator.cli.render import render_status
    from orchestrator.fleet.session import live_document
    from orchestrator.protocol.status_document import LastFailure, StatusDocument

    broker = _broker(make_broker, max_trials=5)
    assert broker.last_failure() is None
    _fail(broker, "TypeError: first", AttemptStatus.FAILED)
    tid = _fail(broker, f"ValueError: {KERAS_RANK_ERROR} — {ONE_HOT_HINT}", AttemptStatus.FAILED)
    for with_trials in (True, False):
        document = live_document(
            broker,
            search_dir=Path("/s"),
            search_id="x",
            workers=[],
            chief=None,
            with_trials=with_trials,
        )
        assert document.last_failure == LastFailure(
            tid, f"ValueError: {KERAS_RANK_ERROR} — {ONE_HOT_HINT}"
        )
    parsed = StatusDocument.from_json(document.to_json())
    assert parsed.last_failure == document.last_failure
    console = Console(width=400, record=True)
    console.print(render_status(parsed))
    assert f"last failure: trial {tid}  ValueError: Arguments" in console.export_text()


def test_ended_since_gives_each_ended_trial_once_in_end_order(
    make_broker: Callable[..., TrialBroker],
) -> None:
    broker = _broker(make_broker, max_trials=5)
    first = _fail(broker, "TypeError: x", AttemptStatus.FAILED)
    views, position = broker.ended_since(0)
    assert [v.trial_id for v in views] == [first] and position == 1
    a = broker.create_trial("w0", wait_s=0)
    assert a.trial_id is not None
    broker.end_trial(a.trial_id, a.token, status=AttemptStatus.COMPLETED, metrics={"score": 0.5})
    views, position = broker.ended_since(position)
    assert [(v.trial_id, v.status) for v in views] == [(a.trial_id, TrialStatus.COMPLETED)]
    assert broker.ended_since(position) == ([], 2)


def test_an_error_before_the_first_trial_ends_the_run_fatal() -> None:
    from workers.runner import ExitReason

    spec = parse_search(
        {
            "name": "t",
            "hypermodel": {"name": "sleep", "options": {"epoch_s": -1}},
            "objective": "val_accuracy",
            "oracle": {"type": "random", "max_trials": 2},
        }
    )
    config = WorkerConfig(
        worker_id="local-w0", chief_address="127.0.0.1:9", token="t", search_json=spec_json(spec)
    )
    summary = TrialRunner(config).run()
    assert summary.reason is ExitReason.FATAL and summary.trials_run == 0
    assert summary.detail.startswith("ConfigError: search.yaml: hypermodel.options")
    assert summary.detail.endswith(
        "(worker local-w0, before its first trial: this error does not depend on the "
        "hyperparameters, so every trial would fail the same way)"
    )


def test_an_error_with_brackets_prints_as_written() -> None:
    from rich.console import Console

    from orchestrator.cli.render import trials_table
    from orchestrator.protocol.trials import TrialView

    error = "ValueError: expected shape [None, 10], got [/b][None, 3]"
    view = TrialView(
        trial_id="03",
        status=TrialStatus.FAILED,
        attempts=1,
        score=None,
        metrics={},
        values={"units": 32},
        worker_id="local-w0",
        duration_s=None,
        error_message=error,
        traceback_tail=None,
        current_epoch=None,
        best_step=0,
        trial_state={},
    )
    console = Console(width=400, record=True)
    console.print(trials_table([view], objective="val_accuracy"))
    assert f"error: {error}" in console.export_text()


def test_a_build_that_fails_while_keras_tuner_declares_the_space_is_named_so() -> None:
    """Keras Tuner builds the model with the defaults to declare the space: a
    failure there depends on those values, and the message must not claim it
    does not depend on the hyperparameters (fault audit 4)."""
    from workers.failures import SpaceDeclarationFailed, setup_failed

    cause = ValueError("conv_blocks=2 with units=32 is unsupported")
    failed = setup_failed(SpaceDeclarationFailed(cause), "local-w0")
    assert failed is not None
    assert failed.detail.startswith("ValueError: conv_blocks=2 with units=32 is unsupported")
    assert "while Keras Tuner declared the search space" in failed.detail
    assert "does not depend" not in failed.detail
