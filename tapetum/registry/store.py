"""The model registry: MLflow's registered models, versions, aliases, tags, runs and
datasets, with Tapetum's conventions on top. MLflow is imported here, lazily (the
``registry`` extra).

How Tapetum uses MLflow's concepts:

* a **registered model** per model line (``yolox_nano``); its **versions** are the files
  (FP32, its INT8 and FP16 children, fine-tunes...);
* a **run** in the ``tapetum-models`` experiment per registration: it stores the ONNX
  file as an artifact under ``model/`` and records the command's parameters, the code
  version and the calibration/training data as **datasets** with content digests;
* **version tags** describe the file (``tapetum.sha256``, family, input size, classes,
  precision, preprocessing) and its parent (``tapetum.parent = NAME/VERSION``);
* **aliases** (``champion``) name the version in use; each change is also appended to the
  alias history in the registered model's tags (see :mod:`tapetum.registry.aliases`);
* an **evaluation** is a run of its own with the metrics, linked from the version by the
  tag ``tapetum.eval.<dataset>`` = run id.

Registration is crash-safe: the version is created, with all its tags, in one MLflow call
made only after the artifact is stored and its size checked. A process killed before that
call leaves an unfinished run and no version; readers also skip any version without
``tapetum.ready`` (e.g. one made by another MLflow tool).

Example:
    >>> reg = ModelRegistry("sqlite:///tapetum-registry.db")                 # doctest: +SKIP
    >>> v1 = reg.register("yolox_nano.onnx", "yolox_nano")                   # doctest: +SKIP
    >>> reg.promote("yolox_nano", v1.version, "champion", reason="baseline")  # doctest: +SKIP
    >>> reg.get_version(parse_model_ref("yolox_nano@champion")).sha256        # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tapetum._optional import import_optional
from tapetum.errors import (
    AliasConflictError,
    ArtifactMissingError,
    ModelNotFoundError,
    RegistryError,
    RegistryUnavailableError,
    TapetumError,
)
from tapetum.registry.aliases import (
    AliasEvent,
    alias_events,
    current_user,
    event_key,
    rollback_target,
)
from tapetum.registry.cache import ArtifactCache
from tapetum.registry.metadata import (
    TAG_CODE_VERSION,
    TAG_COMMAND,
    TAG_PARENT,
    TAG_READY,
    TAG_SHA256,
    code_version,
    describe_model,
    git_commit,
)
from tapetum.registry.records import (
    AliasChange,
    DatasetRecord,
    EvaluationRecord,
    RegisteredModelInfo,
    RunRecord,
    VersionInfo,
    eval_tag,
)
from tapetum.registry.settings import artifact_root, redact_uri, registry_uri, store_kind
from tapetum.registry.uri import ModelRef, check_alias, check_model_name

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["EXPERIMENT_NAME", "ModelRegistry", "registry_for"]

log = logging.getLogger(__name__)

#: The MLflow experiment holding registration and evaluation runs.
EXPERIMENT_NAME = "tapetum-models"
#: Run tag naming the registered model (and version) a run belongs to.
RUN_TAG_MODEL = "tapetum.model"
RUN_TAG_VERSION = "tapetum.model_version"
RUN_TAG_KIND = "tapetum.run"
#: MLflow caps a param value at 6000 characters.
_MAX_PARAM_CHARS = 6000
#: Alias reconciliation rounds before giving up (each is two reads and maybe a write).
_RECONCILE_ROUNDS = 25
_CONNECT_TIMEOUT_S = 5
_PAGE = 1000

T = TypeVar("T")


def _quiet_mlflow_logs() -> None:
    """MLflow logs schema migrations and engine retries at INFO/WARNING on first use; the
    registry reports what matters itself."""
    for name in ("mlflow.store.db.utils", "alembic", "mlflow.store.model_registry"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _http_defaults() -> None:
    """MLflow retries an unreachable server for minutes by default; a registry lookup
    should fail in seconds. An explicit environment setting still wins."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    # MLflow prints run and experiment links to stdout after each run against a server.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


class ModelRegistry:
    """Tapetum's view of one MLflow registry.

    Args:
        uri: the store: ``sqlite:///FILE``, ``postgresql://…``, ``mysql://…`` or an MLflow
            server's ``http(s)://HOST:PORT`` (default: ``$TAPETUM_REGISTRY_URI``, else
            ``sqlite:///tapetum-registry.db``, created on first use).
        artifacts: artifact root of a SQL store's experiment when it is first created
            (default: ``$TAPETUM_ARTIFACT_ROOT``, else ``./tapetum-artifacts``); an MLflow
            server keeps artifacts where it was told to.

    Raises:
        RegistryUnavailableError: the store cannot be reached or opened.
        MissingDependencyError: MLflow is not installed (``pip install 'tapetum[registry]'``).
    """

    def __init__(self, uri: str | None = None, *, artifacts: str | Path | None = None) -> None:
        self.uri = registry_uri(uri)
        self.kind = store_kind(self.uri)
        self.shown_uri = redact_uri(self.uri)
        self._artifacts = artifacts
        self._experiment_id: str | None = None
        self._client = self._open()

    # ------------------------------------------------------------------ opening
    def _open(self) -> MlflowClient:
        import_optional("mlflow", "registry", "the model registry")
        _quiet_mlflow_logs()
        # MLflow draws a progress bar per download; a CLI line or a server log is no place.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        from mlflow import MlflowClient

        if self.kind == "http":
            _http_defaults()
            self._probe_http()
        with self._init_lock():  # the client creates (and migrates) the store at once
            client = self._call(
                "open the registry",
                lambda: MlflowClient(tracking_uri=self.uri, registry_uri=self.uri),
            )
            self._call("open the registry", lambda: client.search_experiments(max_results=1))
            self._call("open the registry", lambda: client.search_registered_models(max_results=1))
        return client

    def _probe_http(self) -> None:
        """A quick ``/health`` request, so a server that is down fails in seconds."""
        url = self.uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=_CONNECT_TIMEOUT_S) as resp:
                resp.read(64)
        except urllib.error.HTTPError:
            return  # it answers: some deployments route /health elsewhere
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RegistryUnavailableError(
                f"cannot reach the MLflow server at {self.shown_uri}: {reason}"
            ) from None

    @contextlib.contextmanager
    def _init_lock(self) -> Iterator[None]:
        """Serialise the first open of a store: MLflow creates and migrates its schema on
        first use, and two processes doing that at once on one database collide."""
        if self.kind == "sqlite":
            path = self.uri.split("sqlite:///", 1)[-1]
            if path and path != ":memory:":
                db = Path(path).expanduser().resolve()
                with _file_lock(db.with_name(f".{db.name}.lock")):
                    yield
                return
        elif self.uri.startswith(("postgresql", "postgres")):
            with self._pg_lock():
                yield
            return
        yield

    @contextlib.contextmanager
    def _pg_lock(self) -> Iterator[None]:
        import sqlalchemy
        import sqlalchemy.exc
        from sqlalchemy.pool import NullPool

        engine = sqlalchemy.create_engine(
            self.uri, connect_args={"connect_timeout": _CONNECT_TIMEOUT_S}, poolclass=NullPool
        )
        try:
            try:
                conn = engine.connect()
            except sqlalchemy.exc.SQLAlchemyError as exc:
                cause = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
                raise RegistryUnavailableError(
                    f"cannot reach the registry database {self.shown_uri}: {cause}"
                ) from None
            with conn:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(7261746)"))
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(7261746)"))
        finally:
            engine.dispose()

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one MLflow call, turning its failures into the registry's typed errors."""
        from mlflow.exceptions import MlflowException

        try:
            return fn()
        except TapetumError:
            raise
        except MlflowException as exc:
            raise self._translate(what, exc) from None
        except OSError as exc:
            raise RegistryUnavailableError(f"{what}: {self.shown_uri}: {exc}") from None
        except Exception as exc:  # SQLAlchemy, requests: the store is not usable
            name = type(exc).__module__.split(".")[0]
            if name in ("sqlalchemy", "requests", "urllib3", "psycopg", "psycopg2", "pymysql"):
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else name
                raise RegistryUnavailableError(f"{what}: {self.shown_uri}: {first}") from None
            raise

    def _translate(self, what: str, exc: Exception) -> RegistryError:
        code = str(getattr(exc, "error_code", ""))
        message = str(getattr(exc, "message", exc)).strip().splitlines()[0]
        if code == "RESOURCE_DOES_NOT_EXIST" or "not found" in message.lower():
            return ModelNotFoundError(f"{what}: {message}")
        if "API request to" in message or "Max retries exceeded" in message:
            return RegistryUnavailableError(f"{what}: cannot reach {self.shown_uri}: {message}")
        if "sqlalchemy" in message.lower() or "OperationalError" in message:
            return RegistryUnavailableError(f"{what}: {self.shown_uri}: {message}")
        return RegistryError(f"{what}: {message}")

    # ------------------------------------------------------------------ setup
    def _experiment(self) -> str:
        if self._experiment_id is not None:
            return self._experiment_id
        client = self._client
        found = self._call(
            "find the experiment", lambda: client.get_experiment_by_name(EXPERIMENT_NAME)
        )
        if found is None:
            location = None if self.kind == "http" else artifact_root(self._artifacts, self.uri)
            try:
                exp_id = self._call(
                    "create the experiment",
                    lambda: client.create_experiment(EXPERIMENT_NAME, artifact_location=location),
                )
            except RegistryError:  # created by a concurrent process a moment ago
                again = client.get_experiment_by_name(EXPERIMENT_NAME)
                if again is None:
                    raise
                exp_id = again.experiment_id
        else:
            if found.lifecycle_stage == "deleted":
                self._call(
                    "restore the experiment", lambda: client.restore_experiment(found.experiment_id)
                )
            exp_id = found.experiment_id
        self._experiment_id = str(exp_id)
        return self._experiment_id

    def _ensure_model(self, name: str, description: str = "") -> None:
        from mlflow.exceptions import MlflowException

        try:
            self._client.create_registered_model(name, description=description or None)
        except MlflowException as exc:
            if str(getattr(exc, "error_code", "")) != "RESOURCE_ALREADY_EXISTS":
                raise self._translate(f"create registered model {name!r}", exc) from None

    # ------------------------------------------------------------------ register
    def register(
        self,
        path: str | Path,
        name: str,
        *,
        arch: str | None = None,
        parent: ModelRef | None = None,
        command: str = "",
        params: Mapping[str, Any] | None = None,
        datasets: Sequence[DatasetRecord] = (),
        description: str = "",
    ) -> VersionInfo:
        """Register the ONNX file at ``path`` as a new version of ``name``.

        Args:
            path: the model file (loaded once to read what it is; refused if it would not
                run).
            name: registered model name (created on first use).
            arch: model family when the file does not say.
            parent: the version this file was made from (``optimize``, fine-tune...).
            command: the command that made the file (recorded as the version's lineage).
            params: that command's parameters (logged as run params).
            datasets: calibration/training data (logged as run inputs with digests).
            description: free text for the version.

        Returns:
            The new version (all its tags set in the same call that created it).
        """
        check_model_name(name)
        desc = describe_model(path, arch)
        parent_info = self.get_version(parent) if parent is not None else None
        version_code = code_version()
        self._ensure_model(name)
        run_tags = {
            RUN_TAG_MODEL: name,
            RUN_TAG_KIND: "register",
            TAG_SHA256: desc.sha256,
            TAG_CODE_VERSION: version_code,
            "mlflow.user": current_user(),
            "mlflow.source.name": "tapetum",
        }
        commit = git_commit(version_code)
        if commit:
            run_tags["mlflow.source.git.commit"] = commit
        if command:
            run_tags[TAG_COMMAND] = command[:5000]
        exp = self._experiment()
        run = self._call(
            "start the registration run",
            lambda: self._client.create_run(exp, tags=run_tags, run_name=f"register {name}"),
        )
        run_id = run.info.run_id
        try:
            self._log_params(run_id, params or {})
            self._log_datasets(run_id, datasets)
            source = self._store_artifact(run_id, Path(path), desc.size_bytes)
            tags = {
                **desc.tags(),
                TAG_CODE_VERSION: version_code,
                TAG_READY: "true",
            }
            if command:
                tags[TAG_COMMAND] = command[:5000]
            if parent_info is not None:
                tags[TAG_PARENT] = parent_info.short
            created = self._create_version(name, source, run_id, tags, description)
        except BaseException:
            with contextlib.suppress(Exception):
                self._client.set_terminated(run_id, "FAILED")
            raise
        with contextlib.suppress(Exception):  # the version exists; the run's end is cosmetic
            self._client.set_tag(run_id, RUN_TAG_VERSION, str(created.version))
            self._client.set_terminated(run_id, "FINISHED")
        return created

    def _log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        batch = [
            Param(str(k), str(v)[:_MAX_PARAM_CHARS]) for k, v in params.items() if v is not None
        ]
        for i in range(0, len(batch), 100):
            chunk = batch[i : i + 100]
            self._call("log parameters", partial(self._client.log_batch, run_id, params=chunk))

    def _log_datasets(self, run_id: str, datasets: Sequence[DatasetRecord]) -> None:
        if not datasets:
            return
        from mlflow.entities import Dataset, DatasetInput, InputTag

        inputs = [
            DatasetInput(
                Dataset(
                    name=d.name,
                    digest=d.digest[:32],
                    source_type="http" if d.source.startswith(("http:", "https:")) else "local",
                    source=_source_json(d.source),
                    profile=d.profile(),
                ),
                tags=[InputTag("mlflow.data.context", d.context)],
            )
            for d in datasets
        ]
        self._call("log datasets", lambda: self._client.log_inputs(run_id, datasets=inputs))

    def _store_artifact(self, run_id: str, path: Path, size: int) -> str:
        """Upload the file under ``model/`` and check the store holds all of it; returns the
        version's source URI."""
        client = self._client
        self._call("store the model file", lambda: client.log_artifact(run_id, str(path), "model"))
        listed = self._call("check the stored file", lambda: client.list_artifacts(run_id, "model"))
        stored = {Path(f.path).name: f.file_size for f in listed}
        if stored.get(path.name) != size:
            raise ArtifactMissingError(
                f"the artifact store holds {stored.get(path.name)} bytes of {path.name}, "
                f"expected {size}; nothing was registered"
            )
        run = self._call("read the run", lambda: client.get_run(run_id))
        return f"{run.info.artifact_uri.rstrip('/')}/model"

    def _create_version(
        self, name: str, source: str, run_id: str, tags: Mapping[str, str], description: str
    ) -> VersionInfo:
        """The one call that makes the version visible, with every tag at once."""
        mv = self._call(
            f"register a version of {name!r}",
            lambda: self._client.create_model_version(
                name, source, run_id=run_id, tags=dict(tags), description=description or None
            ),
        )
        return _version(mv)

    # ------------------------------------------------------------------ read
    def list_models(self) -> list[RegisteredModelInfo]:
        """Every registered model, by name."""
        models = self._paged(
            "list registered models",
            lambda token: self._client.search_registered_models(
                max_results=_PAGE, order_by=["name ASC"], page_token=token
            ),
        )
        out = []
        for rm in models:
            versions = [v for v in self.versions(rm.name)]
            out.append(
                RegisteredModelInfo(
                    name=rm.name,
                    aliases={k: int(v) for k, v in (rm.aliases or {}).items()},
                    latest_version=max((v.version for v in versions), default=None),
                    versions=len(versions),
                    description=rm.description or "",
                    updated_ms=int(rm.last_updated_timestamp or 0),
                    tags=dict(rm.tags or {}),
                )
            )
        return out

    def get_model(self, name: str) -> RegisteredModelInfo:
        """One registered model (``ModelNotFoundError`` lists the names that exist)."""
        rm = self._registered(name)
        versions = self.versions(name)
        return RegisteredModelInfo(
            name=rm.name,
            aliases={k: int(v) for k, v in (rm.aliases or {}).items()},
            latest_version=max((v.version for v in versions), default=None),
            versions=len(versions),
            description=rm.description or "",
            updated_ms=int(rm.last_updated_timestamp or 0),
            tags=dict(rm.tags or {}),
        )

    def _registered(self, name: str) -> Any:
        check_model_name(name)
        try:
            return self._call(f"model {name!r}", lambda: self._client.get_registered_model(name))
        except ModelNotFoundError:
            raise ModelNotFoundError(self._unknown_model_message(name)) from None

    def _unknown_model_message(self, name: str) -> str:
        try:
            names = [m.name for m in self._client.search_registered_models(max_results=50)]
        except Exception:
            names = []
        known = f"; registered: {', '.join(names)}" if names else "; the registry is empty"
        return f"no registered model {name!r} in {self.shown_uri}{known}"

    def versions(self, name: str, *, ready_only: bool = True) -> list[VersionInfo]:
        """The versions of ``name``, oldest first (only completed registrations unless
        ``ready_only`` is False)."""
        check_model_name(name)
        found = self._paged(
            f"list versions of {name!r}",
            lambda token: self._client.search_model_versions(
                f"name = '{name}'", max_results=_PAGE, page_token=token
            ),
        )
        out = sorted((_version(mv) for mv in found), key=lambda v: v.version)
        return [v for v in out if v.ready] if ready_only else out

    def get_version(self, ref: ModelRef) -> VersionInfo:
        """The version ``ref`` names: by number, by alias, or the latest.

        Raises:
            ModelNotFoundError: no such model, version or alias, or the version's
                registration did not complete (the message says what exists).
        """
        client = self._client
        if ref.alias is not None:
            alias = ref.alias
            try:
                mv = self._call(
                    f"alias {ref.short}",
                    lambda: client.get_model_version_by_alias(ref.name, alias),
                )
            except ModelNotFoundError:
                raise ModelNotFoundError(self._unknown_alias_message(ref)) from None
            info = _version(mv)
        elif ref.version is not None:
            number = str(ref.version)
            try:
                mv = self._call(
                    f"version {ref.short}", lambda: client.get_model_version(ref.name, number)
                )
            except ModelNotFoundError:
                raise ModelNotFoundError(self._unknown_version_message(ref)) from None
            info = _version(mv)
        else:
            ready = self.versions(ref.name)
            if not ready:
                self._registered(ref.name)  # unknown name: say so
                raise ModelNotFoundError(f"model {ref.name!r} has no versions yet")
            info = ready[-1]
        if not info.ready:
            raise ModelNotFoundError(
                f"{info.short} is not a complete Tapetum model version (its registration did "
                "not finish, or another tool made it): register the file again"
            )
        return info

    def _unknown_alias_message(self, ref: ModelRef) -> str:
        rm = self._registered(ref.name)
        aliases = ", ".join(f"{a}→{v}" for a, v in sorted((rm.aliases or {}).items()))
        return f"model {ref.name!r} has no alias {ref.alias!r} (aliases: {aliases or 'none'})"

    def _unknown_version_message(self, ref: ModelRef) -> str:
        self._registered(ref.name)
        numbers = [v.version for v in self.versions(ref.name)]
        have = f"versions {_ranges(numbers)}" if numbers else "no versions yet"
        return f"model {ref.name!r} has no version {ref.version} ({have})"

    def find_by_sha256(self, sha256: str) -> list[VersionInfo]:
        """Every completed version whose file has this sha256 (any model), oldest first."""
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            return []
        found = self._paged(
            "search versions by sha256",
            lambda token: self._client.search_model_versions(
                f"tags.`{TAG_SHA256}` = '{sha256}'", max_results=_PAGE, page_token=token
            ),
        )
        ready = [v for v in map(_version, found) if v.ready]
        return sorted(ready, key=lambda v: (v.created_ms, v.name, v.version))

    def children(self, info: VersionInfo) -> list[VersionInfo]:
        """Versions registered with ``info`` as their parent, oldest first."""
        found = self._paged(
            f"search children of {info.short}",
            lambda token: self._client.search_model_versions(
                f"tags.`{TAG_PARENT}` = '{info.short}'", max_results=_PAGE, page_token=token
            ),
        )
        ready = [v for v in map(_version, found) if v.ready]
        return sorted(ready, key=lambda v: (v.created_ms, v.name, v.version))

    def lineage(self, ref: ModelRef) -> list[VersionInfo]:
        """The chain of parents of ``ref``, root first, ``ref``'s version last. A parent
        that no longer exists ends the chain (the oldest entry then still names it)."""
        chain = [self.get_version(ref)]
        seen = {chain[0].short}
        while (parent := chain[-1].parent) is not None and parent.short not in seen:
            try:
                chain.append(self.get_version(parent))
            except ModelNotFoundError:
                break
            seen.add(parent.short)
        return chain[::-1]

    def run(self, run_id: str) -> RunRecord:
        """An MLflow run: params, metrics, tags and the datasets it logged."""
        run = self._call(f"run {run_id}", lambda: self._client.get_run(run_id))
        datasets = []
        for item in getattr(run.inputs, "dataset_inputs", None) or []:
            context = next(
                (t.value for t in item.tags if t.key == "mlflow.data.context"), "training"
            )
            datasets.append(_dataset_record(item.dataset, context))
        return RunRecord(
            run_id=run.info.run_id,
            name=run.info.run_name or "",
            params=dict(run.data.params),
            metrics=dict(run.data.metrics),
            tags=dict(run.data.tags),
            datasets=datasets,
            start_ms=int(run.info.start_time or 0),
        )

    # ------------------------------------------------------------------ files
    def download(self, info: VersionInfo, folder: Path) -> Path:
        """Fetch ``info``'s model file into ``folder`` (no hash check: see :meth:`fetch`).

        Raises:
            ArtifactMissingError: the artifact store does not have it.
        """
        from mlflow.exceptions import MlflowException

        try:
            if info.run_id:
                got = self._client.download_artifacts(
                    info.run_id, f"model/{info.file_name}", str(folder)
                )
            else:
                import mlflow.artifacts

                got = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{info.source.rstrip('/')}/{info.file_name}",
                    dst_path=str(folder),
                    tracking_uri=self.uri,
                )
        except (MlflowException, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArtifactMissingError(
                f"the model file of {info.short} is missing from the artifact store "
                f"({info.source}): {first}"
            ) from None
        path = Path(got)
        if not path.is_file():
            raise ArtifactMissingError(
                f"the model file of {info.short} ({info.file_name}) is missing from the "
                f"artifact store ({info.source})"
            )
        return path

    def fetch(self, info: VersionInfo, cache: ArtifactCache) -> Path:
        """``info``'s model file from the local cache (downloaded on a miss); its sha256 is
        checked either way.

        Raises:
            ArtifactMissingError, ArtifactCorruptError: the file cannot be had intact.
        """
        return cache.fetch(info.sha256, lambda folder: self.download(info, folder))

    # ------------------------------------------------------------------ aliases
    def promote(
        self, name: str, version: int, alias: str = "champion", *, reason: str = ""
    ) -> AliasChange:
        """Point ``alias`` at ``version`` and record who, when and why.

        Raises:
            ModelNotFoundError: no such (complete) version.
            AliasConflictError: a concurrent promotion or rollback of the same alias won
                (it is recorded after yours in the history, and the alias follows it).
        """
        check_alias(alias)
        info = self.get_version(ModelRef(name, version=version))
        current = self._alias_holder(name, alias)
        event = AliasEvent.make("promote", info.version, current, current_user(), reason)
        return self._apply(name, alias, event)

    def rollback(self, name: str, alias: str = "champion", *, reason: str = "") -> AliasChange:
        """Move ``alias`` back to the version that held it before the current one.

        Raises:
            RegistryError: the alias has no earlier holder.
            AliasConflictError: a concurrent change of the alias won.
        """
        check_alias(alias)
        rm = self._registered(name)
        current = (rm.aliases or {}).get(alias)
        current = int(current) if current is not None else None
        history = [e for _, e in alias_events(rm.tags or {}, alias)]
        try:
            target = rollback_target(history, current)
        except RegistryError:
            raise RegistryError(
                f"{name}@{alias} has no earlier holder to roll back to"
                + (f" (it points at version {current})" if current is not None else "")
            ) from None
        self.get_version(ModelRef(name, version=target))  # still a complete version
        event = AliasEvent.make("rollback", target, current, current_user(), reason)
        return self._apply(name, alias, event)

    def alias_history(self, name: str, alias: str = "champion") -> list[AliasEvent]:
        """Every recorded change of ``alias``, oldest first."""
        rm = self._registered(name)
        return [e for _, e in alias_events(rm.tags or {}, alias)]

    def _alias_holder(self, name: str, alias: str) -> int | None:
        rm = self._registered(name)
        held = (rm.aliases or {}).get(alias)
        return int(held) if held is not None else None

    def _apply(self, name: str, alias: str, event: AliasEvent) -> AliasChange:
        key = event_key(alias)
        self._call(
            f"record the {alias!r} change",
            lambda: self._client.set_registered_model_tag(name, key, event.model_dump_json()),
        )
        final = self._reconcile(name, alias)
        if final != event.version:
            raise AliasConflictError(
                f"{name}@{alias} was changed concurrently: it now points at version {final}; "
                f"your {event.action} to version {event.version} is recorded in its history "
                "before that change"
            )
        return AliasChange(name, alias, event.version, event.previous, event.action)

    def _reconcile(self, name: str, alias: str) -> int:
        """Point ``alias`` at the newest history entry, until a read after the write finds
        no newer entry (see :mod:`tapetum.registry.aliases`); returns the version."""
        client = self._client
        rm = self._registered(name)
        for _ in range(_RECONCILE_ROUNDS):
            events = alias_events(rm.tags or {}, alias)
            if not events:
                raise RegistryError(f"{name}@{alias}: the alias history is empty")
            newest_key, newest = events[-1]
            held = (rm.aliases or {}).get(alias)
            if held is not None and int(held) == newest.version:
                # Already in agreement; a writer that set it checks again after its write.
                return newest.version
            self._call(
                f"set {name}@{alias}",
                partial(client.set_registered_model_alias, name, alias, str(newest.version)),
            )
            rm = self._registered(name)
            latest = alias_events(rm.tags or {}, alias)
            if latest and latest[-1][0] == newest_key:
                return newest.version
            time.sleep(0.01)
        raise AliasConflictError(
            f"{name}@{alias} kept changing under concurrent promotions; try again"
        )

    # ------------------------------------------------------------------ evaluation
    def log_evaluation(
        self,
        info: VersionInfo,
        metrics: Mapping[str, float | None],
        dataset: DatasetRecord,
        settings: Mapping[str, Any],
    ) -> str:
        """Record an evaluation of ``info`` as a run (metrics, settings, the dataset with its
        digest) and link it from the version; returns the run id."""
        from mlflow.entities import Metric

        exp = self._experiment()
        tags = {
            RUN_TAG_MODEL: info.name,
            RUN_TAG_VERSION: str(info.version),
            RUN_TAG_KIND: "evaluate",
            TAG_SHA256: info.sha256,
            "mlflow.user": current_user(),
            "mlflow.source.name": "tapetum",
        }
        run = self._call(
            "start the evaluation run",
            lambda: self._client.create_run(
                exp, tags=tags, run_name=f"eval {info.short} on {dataset.name}"
            ),
        )
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None]
        try:
            self._call("log metrics", lambda: self._client.log_batch(run_id, metrics=batch))
            self._log_params(run_id, settings)
            self._log_datasets(run_id, [dataset])
        except BaseException:
            with contextlib.suppress(Exception):
                self._client.set_terminated(run_id, "FAILED")
            raise
        self._client.set_terminated(run_id, "FINISHED")
        self._call(
            "link the evaluation",
            lambda: self._client.set_model_version_tag(
                info.name, str(info.version), eval_tag(dataset.name), run_id
            ),
        )
        return str(run_id)

    def evaluations(self, info: VersionInfo) -> list[EvaluationRecord]:
        """The latest evaluation of ``info`` on each dataset, oldest first."""
        out = []
        for run_id in info.evaluation_runs.values():
            try:
                run = self.run(run_id)
            except ModelNotFoundError:
                continue
            dataset = next((d for d in run.datasets if d.context == "evaluation"), None)
            out.append(EvaluationRecord(dataset, run.metrics, run.params, run_id, run.start_ms))
        return sorted(out, key=lambda e: e.at_ms)

    # ------------------------------------------------------------------ helpers
    def _paged(self, what: str, search: Callable[[str | None], Any]) -> list[Any]:
        out: list[Any] = []
        token: str | None = None
        while True:
            page = self._call(what, partial(search, token))
            out.extend(page)
            token = getattr(page, "token", None)
            if not token:
                return out


def _version(mv: Any) -> VersionInfo:
    return VersionInfo(
        name=mv.name,
        version=int(mv.version),
        tags=dict(mv.tags or {}),
        aliases=tuple(mv.aliases or ()),
        run_id=mv.run_id or None,
        source=mv.source or "",
        created_ms=int(mv.creation_timestamp or 0),
        description=mv.description or "",
        status=str(mv.status or "READY"),
    )


def _source_json(source: str) -> str:
    import json

    if source.startswith(("http:", "https:")):
        return json.dumps({"url": source})
    return json.dumps({"uri": source})


def _dataset_record(dataset: Any, context: str) -> DatasetRecord:
    import json

    try:
        profile = json.loads(dataset.profile or "{}")
        source = json.loads(dataset.source or "{}")
    except ValueError:
        profile, source = {}, {}
    if not isinstance(profile, dict):
        profile = {}
    where = source.get("uri") or source.get("url") or "" if isinstance(source, dict) else ""
    return DatasetRecord(
        name=dataset.name,
        source=str(where),
        digest=str(profile.get("sha256") or dataset.digest),
        files=int(profile.get("files") or 0),
        context=context,
    )


def _ranges(numbers: Sequence[int]) -> str:
    """``[1, 2, 3, 5]`` → ``1-3, 5``."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and runs[-1][1] == n - 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created), released on exit. No-op where
    ``fcntl`` does not exist."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


_REGISTRIES: dict[str, ModelRegistry] = {}
_REGISTRIES_LOCK = threading.Lock()


def registry_for(uri: str | None = None) -> ModelRegistry:
    """One :class:`ModelRegistry` per store URI per process (opening one costs a schema
    check; resolving a model again should not)."""
    key = registry_uri(uri)
    with _REGISTRIES_LOCK:
        reg = _REGISTRIES.get(key)
        if reg is None:
            reg = ModelRegistry(key)
            _REGISTRIES[key] = reg
        return reg
