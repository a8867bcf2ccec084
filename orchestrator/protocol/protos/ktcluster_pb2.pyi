from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrialStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRIAL_STATUS_UNSPECIFIED: _ClassVar[TrialStatus]
    PENDING: _ClassVar[TrialStatus]
    RUNNING: _ClassVar[TrialStatus]
    COMPLETED: _ClassVar[TrialStatus]
    FAILED: _ClassVar[TrialStatus]
    INVALID: _ClassVar[TrialStatus]
    STOPPED: _ClassVar[TrialStatus]

class SearchState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_STATE_UNSPECIFIED: _ClassVar[SearchState]
    SEARCH_RUNNING: _ClassVar[SearchState]
    SEARCH_COMPLETED: _ClassVar[SearchState]
    SEARCH_FAILED: _ClassVar[SearchState]
    SEARCH_CANCELLED: _ClassVar[SearchState]
    SEARCH_INTERRUPTED: _ClassVar[SearchState]
TRIAL_STATUS_UNSPECIFIED: TrialStatus
PENDING: TrialStatus
RUNNING: TrialStatus
COMPLETED: TrialStatus
FAILED: TrialStatus
INVALID: TrialStatus
STOPPED: TrialStatus
SEARCH_STATE_UNSPECIFIED: SearchState
SEARCH_RUNNING: SearchState
SEARCH_COMPLETED: SearchState
SEARCH_FAILED: SearchState
SEARCH_CANCELLED: SearchState
SEARCH_INTERRUPTED: SearchState

class Trial(_message.Message):
    __slots__ = ("trial_id", "trial_state_json", "values_json", "attempt", "lease_token", "lease_timeout_s", "reports_async")
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    TRIAL_STATE_JSON_FIELD_NUMBER: _ClassVar[int]
    VALUES_JSON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LEASE_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    REPORTS_ASYNC_FIELD_NUMBER: _ClassVar[int]
    trial_id: str
    trial_state_json: str
    values_json: str
    attempt: int
    lease_token: str
    lease_timeout_s: float
    reports_async: bool
    def __init__(self, trial_id: _Optional[str] = ..., trial_state_json: _Optional[str] = ..., values_json: _Optional[str] = ..., attempt: _Optional[int] = ..., lease_token: _Optional[str] = ..., lease_timeout_s: _Optional[float] = ..., reports_async: _Optional[bool] = ...) -> None: ...

class CreateTrialRequest(_message.Message):
    __slots__ = ("worker_id", "wait_s")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_S_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    wait_s: float
    def __init__(self, worker_id: _Optional[str] = ..., wait_s: _Optional[float] = ...) -> None: ...

class CreateTrialResponse(_message.Message):
    __slots__ = ("kind", "trial", "reason")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[CreateTrialResponse.Kind]
        TRIAL: _ClassVar[CreateTrialResponse.Kind]
        WAIT: _ClassVar[CreateTrialResponse.Kind]
        STOP: _ClassVar[CreateTrialResponse.Kind]
    KIND_UNSPECIFIED: CreateTrialResponse.Kind
    TRIAL: CreateTrialResponse.Kind
    WAIT: CreateTrialResponse.Kind
    STOP: CreateTrialResponse.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    TRIAL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    kind: CreateTrialResponse.Kind
    trial: Trial
    reason: str
    def __init__(self, kind: _Optional[_Union[CreateTrialResponse.Kind, str]] = ..., trial: _Optional[_Union[Trial, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class ReportRequest(_message.Message):
    __slots__ = ("trial_id", "lease_token", "epoch", "metrics", "worker_id")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    trial_id: str
    lease_token: str
    epoch: int
    metrics: _containers.ScalarMap[str, float]
    worker_id: str
    def __init__(self, trial_id: _Optional[str] = ..., lease_token: _Optional[str] = ..., epoch: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., worker_id: _Optional[str] = ...) -> None: ...

class ReportResponse(_message.Message):
    __slots__ = ("action", "reason", "lease_expires_in_s", "stop_cause")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[ReportResponse.Action]
        CONTINUE: _ClassVar[ReportResponse.Action]
        STOP: _ClassVar[ReportResponse.Action]
    ACTION_UNSPECIFIED: ReportResponse.Action
    CONTINUE: ReportResponse.Action
    STOP: ReportResponse.Action
    class StopCause(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STOP_CAUSE_UNSPECIFIED: _ClassVar[ReportResponse.StopCause]
        REQUEUE: _ClassVar[ReportResponse.StopCause]
        SCHEDULER: _ClassVar[ReportResponse.StopCause]
    STOP_CAUSE_UNSPECIFIED: ReportResponse.StopCause
    REQUEUE: ReportResponse.StopCause
    SCHEDULER: ReportResponse.StopCause
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_IN_S_FIELD_NUMBER: _ClassVar[int]
    STOP_CAUSE_FIELD_NUMBER: _ClassVar[int]
    action: ReportResponse.Action
    reason: str
    lease_expires_in_s: float
    stop_cause: ReportResponse.StopCause
    def __init__(self, action: _Optional[_Union[ReportResponse.Action, str]] = ..., reason: _Optional[str] = ..., lease_expires_in_s: _Optional[float] = ..., stop_cause: _Optional[_Union[ReportResponse.StopCause, str]] = ...) -> None: ...

class EndTrialRequest(_message.Message):
    __slots__ = ("trial_id", "lease_token", "status", "metrics", "best_step", "error_message", "traceback_tail", "trial_state_json", "worker_id")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    BEST_STEP_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_TAIL_FIELD_NUMBER: _ClassVar[int]
    TRIAL_STATE_JSON_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    trial_id: str
    lease_token: str
    status: TrialStatus
    metrics: _containers.ScalarMap[str, float]
    best_step: int
    error_message: str
    traceback_tail: str
    trial_state_json: str
    worker_id: str
    def __init__(self, trial_id: _Optional[str] = ..., lease_token: _Optional[str] = ..., status: _Optional[_Union[TrialStatus, str]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., best_step: _Optional[int] = ..., error_message: _Optional[str] = ..., traceback_tail: _Optional[str] = ..., trial_state_json: _Optional[str] = ..., worker_id: _Optional[str] = ...) -> None: ...

class EndTrialResponse(_message.Message):
    __slots__ = ("recorded", "final_status")
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    FINAL_STATUS_FIELD_NUMBER: _ClassVar[int]
    recorded: bool
    final_status: TrialStatus
    def __init__(self, recorded: _Optional[bool] = ..., final_status: _Optional[_Union[TrialStatus, str]] = ...) -> None: ...

class GetTrialRequest(_message.Message):
    __slots__ = ("trial_id",)
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    trial_id: str
    def __init__(self, trial_id: _Optional[str] = ...) -> None: ...

class TrialInfo(_message.Message):
    __slots__ = ("trial_id", "trial_state_json", "status", "attempts", "score", "has_score", "worker_id", "duration_s", "error_message", "current_epoch")
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    TRIAL_STATE_JSON_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    HAS_SCORE_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_EPOCH_FIELD_NUMBER: _ClassVar[int]
    trial_id: str
    trial_state_json: str
    status: TrialStatus
    attempts: int
    score: float
    has_score: bool
    worker_id: str
    duration_s: float
    error_message: str
    current_epoch: int
    def __init__(self, trial_id: _Optional[str] = ..., trial_state_json: _Optional[str] = ..., status: _Optional[_Union[TrialStatus, str]] = ..., attempts: _Optional[int] = ..., score: _Optional[float] = ..., has_score: _Optional[bool] = ..., worker_id: _Optional[str] = ..., duration_s: _Optional[float] = ..., error_message: _Optional[str] = ..., current_epoch: _Optional[int] = ...) -> None: ...

class GetBestTrialsRequest(_message.Message):
    __slots__ = ("num_trials",)
    NUM_TRIALS_FIELD_NUMBER: _ClassVar[int]
    num_trials: int
    def __init__(self, num_trials: _Optional[int] = ...) -> None: ...

class TrialList(_message.Message):
    __slots__ = ("trials",)
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    trials: _containers.RepeatedCompositeFieldContainer[TrialInfo]
    def __init__(self, trials: _Optional[_Iterable[_Union[TrialInfo, _Mapping]]] = ...) -> None: ...

class SpaceMessage(_message.Message):
    __slots__ = ("hyperparameters_json",)
    HYPERPARAMETERS_JSON_FIELD_NUMBER: _ClassVar[int]
    hyperparameters_json: str
    def __init__(self, hyperparameters_json: _Optional[str] = ...) -> None: ...

class GetSpaceRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UpdateSpaceResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ArtifactChunk(_message.Message):
    __slots__ = ("trial_id", "lease_token", "name", "data", "total_size", "sha256")
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    trial_id: str
    lease_token: str
    name: str
    data: bytes
    total_size: int
    sha256: str
    def __init__(self, trial_id: _Optional[str] = ..., lease_token: _Optional[str] = ..., name: _Optional[str] = ..., data: _Optional[bytes] = ..., total_size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class UploadArtifactResponse(_message.Message):
    __slots__ = ("size", "sha256")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    size: int
    sha256: str
    def __init__(self, size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class DownloadArtifactRequest(_message.Message):
    __slots__ = ("trial_id", "name")
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    trial_id: str
    name: str
    def __init__(self, trial_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ListArtifactsRequest(_message.Message):
    __slots__ = ("trial_id",)
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    trial_id: str
    def __init__(self, trial_id: _Optional[str] = ...) -> None: ...

class ListArtifactsResponse(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class GetSearchStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SearchStateResponse(_message.Message):
    __slots__ = ("state", "message", "trials_by_status", "max_trials", "objective", "direction")
    class TrialsByStatusEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRIALS_BY_STATUS_FIELD_NUMBER: _ClassVar[int]
    MAX_TRIALS_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    state: SearchState
    message: str
    trials_by_status: _containers.ScalarMap[str, int]
    max_trials: int
    objective: str
    direction: str
    def __init__(self, state: _Optional[_Union[SearchState, str]] = ..., message: _Optional[str] = ..., trials_by_status: _Optional[_Mapping[str, int]] = ..., max_trials: _Optional[int] = ..., objective: _Optional[str] = ..., direction: _Optional[str] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("status_json",)
    STATUS_JSON_FIELD_NUMBER: _ClassVar[int]
    status_json: str
    def __init__(self, status_json: _Optional[str] = ...) -> None: ...

class ScaleRequest(_message.Message):
    __slots__ = ("total_workers", "node_workers", "cluster_yaml", "cluster_yaml_path", "now")
    class NodeWorkersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TOTAL_WORKERS_FIELD_NUMBER: _ClassVar[int]
    NODE_WORKERS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_YAML_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_YAML_PATH_FIELD_NUMBER: _ClassVar[int]
    NOW_FIELD_NUMBER: _ClassVar[int]
    total_workers: int
    node_workers: _containers.ScalarMap[str, int]
    cluster_yaml: str
    cluster_yaml_path: str
    now: bool
    def __init__(self, total_workers: _Optional[int] = ..., node_workers: _Optional[_Mapping[str, int]] = ..., cluster_yaml: _Optional[str] = ..., cluster_yaml_path: _Optional[str] = ..., now: _Optional[bool] = ...) -> None: ...

class ScaleResponse(_message.Message):
    __slots__ = ("summary",)
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    summary: str
    def __init__(self, summary: _Optional[str] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("now",)
    NOW_FIELD_NUMBER: _ClassVar[int]
    now: bool
    def __init__(self, now: _Optional[bool] = ...) -> None: ...

class CancelResponse(_message.Message):
    __slots__ = ("summary",)
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    summary: str
    def __init__(self, summary: _Optional[str] = ...) -> None: ...
