"""The local cluster's Kubernetes API: kmock's emulator, extended where kopf, kubectl and the
operator need more than it does.

kmock (by kopf's author) keeps objects in memory and serves list/watch/get/create/patch/delete.
This subclass adds what a real API server does and the local cluster relies on:

* discovery of the core resources (``/api/v1`` reporting groupVersion ``v1``) and of CRDs created
  through the API (``kubectl apply -f crds/``), with their status subresource;
* label and field selectors on list and watch (kmock ignores them);
* ``metadata.uid``, ``creationTimestamp``, ``generation`` (bumped when the spec changes),
  ``resourceVersion``, ``generateName``; lists carry ``kind``/``apiVersion``;
* status subresource semantics: a patch of the object ignores ``status``, a patch of ``/status``
  changes only ``status``;
* a custom resource is validated against its CRD schema and defaulted (422 ``Invalid`` otherwise);
  CEL rules (``x-kubernetes-validations``) are not evaluated;
* ``PUT`` (replace), and server-side Tables so ``kubectl get`` shows the CRD's printer columns;
* a bounded object history (kmock keeps every version otherwise).

Run it as a process: ``python -m devtools.localcluster.apiserver --port 0 --ready-file F``
writes the URL into F once it listens, and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import datetime
import itertools
import json
import re
import signal
import uuid
from pathlib import Path
from typing import Any

import aiohttp.web
import jsonpatch
import jsonpointer
import kmock
from hotswap_operator.patches import merge_patch
from hotswap_operator.selectors import matches, parse_query
from kmock._internal import dicts, enums, parsing, rendering  # kmock's patch helpers and request types

CORE = {
    "namespaces": ("Namespace", False, {"ns"}),
    "pods": ("Pod", True, {"po"}),
    "configmaps": ("ConfigMap", True, {"cm"}),
    "secrets": ("Secret", True, set()),
    "services": ("Service", True, {"svc"}),
    "events": ("Event", True, {"ev"}),
}
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}
CRD_RESOURCE = "apiextensions.k8s.io/v1/customresourcedefinitions"
KEEP_VERSIONS = 3


class Invalid(kmock.KubernetesError):
    pass


_parse_path = parsing.parse_path


def _parse_path_with_namespaces(path: str) -> parsing.ParsedPath:
    """kmock reads ``/api/v1/namespaces[/NAME]`` as a namespace prefix; it is the namespaces resource."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and (
        len(parts) <= 4 or (len(parts) == 5 and parts[4] == "status")
    ):
        name = parts[3] if len(parts) > 3 else None
        return parsing.ParsedPath("", "v1", "namespaces", None, name, parts[4] if len(parts) > 4 else None)
    return _parse_path(path)


parsing.parse_path = _parse_path_with_namespaces  # this process serves only the local cluster


class _FastDispatch(kmock.RawHandler):
    """Serve plain object requests directly instead of through kmock's DSL matching.

    kmock matches every request against its reactions in priority order; with the emulator's
    fallbacks that costs ~15 ms per request, which dominated the local cluster's latency. Requests
    for a named resource (not discovery, not watches) go straight to the emulator's handlers.
    Sits between the emulator and RawHandler in the MRO, so the emulator's own ``_handle`` (which
    keeps the object store) still runs first.
    """

    __slots__ = ()
    _FAST = {
        enums.action.LIST: "_serve_list",
        enums.action.FETCH: "_serve_fetch",
        enums.action.CREATE: "_serve_create",
        enums.action.UPDATE: "_serve_update",
        enums.action.DELETE: "_serve_delete",
    }

    async def _handle(self, request: rendering.Request) -> Any:
        method = self._FAST.get(request.action) if request.action is not None else None
        if method is None or request.resource is None or not request.resource.plural:
            return await super()._handle(request)
        if len(self._requests) > 2000:  # kmock keeps every request for assertions: bound it
            del self._requests[:1000]
        payload = await getattr(self, method)(request)
        return aiohttp.web.json_response(payload)


class LocalApiServer(kmock.KubernetesEmulator, _FastDispatch):
    """kmock's KubernetesEmulator with the extensions listed in the module docstring."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._rv = itertools.count(1)
        self._write_lock = asyncio.Lock()
        self._crds: dict[
            tuple[str, str, str], dict[str, Any]
        ] = {}  # (group, version, plural) -> version spec
        for plural, (kind, namespaced, short) in CORE.items():
            self.resources[f"v1/{plural}"] = kmock.ResourceInfo(
                kind=kind,
                singular=kind.lower(),
                namespaced=namespaced,
                verbs=VERBS,
                shortnames=short,
                subresources={"status"} if plural in ("pods", "namespaces", "services") else set(),
            )
        self.resources[CRD_RESOURCE] = kmock.ResourceInfo(
            kind="CustomResourceDefinition",
            singular="customresourcedefinition",
            namespaced=False,
            verbs=VERBS,
        )

    # -- request pre-processing (writes)

    async def _handle(self, request: rendering.Request) -> Any:
        if request.resource is None:
            return await super()._handle(request)
        if request.method == enums.method.PUT and request.name is not None:
            object.__setattr__(request, "action", enums.action.UPDATE)
        if request.action not in (enums.action.CREATE, enums.action.UPDATE, enums.action.DELETE):
            return await super()._handle(request)
        async with self._write_lock:
            if request.action == enums.action.CREATE:
                self._prepare_create(request)
            elif request.action == enums.action.UPDATE:
                self._prepare_update(request)
            response = await super()._handle(request)
            self._after_write(request)
            return response

    def _prepare_create(self, request: rendering.Request) -> None:
        data = request.data if isinstance(request.data, dict) else {}
        meta = data.setdefault("metadata", {})
        if request.namespace and not meta.get("namespace"):
            meta["namespace"] = request.namespace
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if not meta.get("name"):
            raise Invalid(status=422, reason="Invalid", message="metadata.name: Required value")
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        meta["generation"] = 1
        meta["resourceVersion"] = str(next(self._rv))
        data.setdefault("apiVersion", _api_version(request.resource))
        kind = self._kind(request.resource)
        if kind:
            data.setdefault("kind", kind)
        self._validate(request.resource, data)
        object.__setattr__(request, "data", data)

    def _prepare_update(self, request: rendering.Request) -> None:
        key: Any = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return  # kmock answers 404
        old = self.objects[key].raw
        body = request.data
        if request.method == enums.method.PUT:
            new = copy.deepcopy(body) if isinstance(body, dict) else {}
        else:
            try:
                new = dict(dicts.patch_dict(copy.deepcopy(old), body if body is not None else {}))
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
                # A failed `test` op (kopf tests resourceVersion) is 422, as on a real API server.
                raise Invalid(
                    status=422, reason="Invalid", message=f"the patch does not apply: {exc}"
                ) from None
        has_status = "status" in self._subresources(request.resource)
        if request.subresource == "status":
            new = {**old, "status": new.get("status")}
        elif request.subresource is None and has_status:
            new = {**new, "status": old.get("status")} if "status" in old else _without(new, "status")
        meta = new.setdefault("metadata", {})
        for field in ("uid", "creationTimestamp", "name", "namespace"):
            if field in old.get("metadata", {}):
                meta[field] = old["metadata"][field]
        generation = old.get("metadata", {}).get("generation", 1)
        if new.get("spec") != old.get("spec"):
            generation += 1
        meta["generation"] = generation
        meta["resourceVersion"] = str(next(self._rv))
        if new.get("status") is None:
            new.pop("status", None)
        self._validate(request.resource, new)
        object.__setattr__(request, "data", merge_patch(old, new) or {})

    def _after_write(self, request: rendering.Request) -> None:
        assert request.resource is not None
        name = request.name or (request.data or {}).get("metadata", {}).get("name")
        key = (
            request.resource,
            request.namespace or (request.data or {}).get("metadata", {}).get("namespace"),
            name,
        )
        if key in self.objects:
            history = self.objects[key].history
            if len(history) > KEEP_VERSIONS:
                del history[: len(history) - KEEP_VERSIONS]
        if request.resource == kmock.resource(CRD_RESOURCE) and request.action == enums.action.CREATE:
            self.register_crd(request.data)

    # -- CRDs

    def register_crd(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec", {})
        names = spec.get("names", {})
        for version in spec.get("versions", []):
            if not version.get("served", True):
                continue
            ref = f"{spec['group']}/{version['name']}/{names['plural']}"
            self.resources[ref] = kmock.ResourceInfo(
                kind=names.get("kind"),
                singular=names.get("singular"),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                verbs=VERBS,
                shortnames=set(names.get("shortNames", [])),
                categories=set(names.get("categories", [])),
                subresources=set(version.get("subresources", {})),
            )
            self._crds[(spec["group"], version["name"], names["plural"])] = version

    def _crd_version(self, resource: Any) -> dict[str, Any] | None:
        return self._crds.get((resource.group, resource.version, resource.plural))

    def _subresources(self, resource: Any) -> set[str]:
        return set(self.resources[resource].subresources) if resource in self.resources else set()

    def _kind(self, resource: Any) -> str | None:
        return self.resources[resource].kind if resource in self.resources else None

    def _validate(self, resource: Any, obj: dict[str, Any]) -> None:
        version = self._crd_version(resource)
        if version is None:
            return
        schema = version.get("schema", {}).get("openAPIV3Schema")
        if not schema:
            return
        _apply_defaults(obj, schema)
        try:
            import jsonschema  # optional: without it custom resources are stored unvalidated
        except ImportError:
            return
        errors = sorted(jsonschema.Draft7Validator(_openapi_to_jsonschema(schema)).iter_errors(obj), key=str)
        if errors:
            first = errors[0]
            where = ".".join(str(p) for p in first.absolute_path) or "(root)"
            raise Invalid(status=422, reason="Invalid", message=f"{where}: {first.message}")

    # -- discovery fixes

    async def _serve_version(self, request: rendering.Request) -> Any:
        result = await super()._serve_version(request)
        if isinstance(result, dict) and result.get("groupVersion", "").startswith("/"):
            result["groupVersion"] = result["groupVersion"][1:]  # core: "v1", not "/v1"
        for item in result.get("resources", []) if isinstance(result, dict) else []:
            if "/" in item.get("name", ""):
                item.update(verbs=["get", "patch", "update"], shortNames=[], categories=[])
        return result

    # -- reads: selectors, list kinds, tables

    async def _serve_list(self, request: rendering.Request) -> Any:
        result: Any = await super()._serve_list(request)
        items = [o for o in result["items"] if _selected(o, request.params)]
        kind = self._kind(request.resource) or "Object"
        listing = {
            "apiVersion": _api_version(request.resource),
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": str(next(self._rv))},
            "items": items,
        }
        if _wants_table(request):
            return self._table(request.resource, items)
        return listing

    async def _serve_fetch(self, request: rendering.Request) -> Any:
        obj: Any = await super()._serve_fetch(request)
        if _wants_table(request):
            return self._table(request.resource, [obj])
        return obj

    async def _serve_watch(self, request: rendering.Request) -> Any:
        async for event in super()._serve_watch(request):
            if isinstance(event, dict) and not _selected(event.get("object", {}), request.params):
                continue
            yield event

    def _table(self, resource: Any, items: list[dict[str, Any]]) -> dict[str, Any]:
        version = self._crd_version(resource)
        if version is not None:
            columns = [{"name": "Name", "type": "string", "format": "name", "priority": 0}]
            columns += [
                {"name": c["name"], "type": c.get("type", "string"), "priority": c.get("priority", 0)}
                for c in version.get("additionalPrinterColumns", [])
            ]
            paths = [".metadata.name"] + [c["jsonPath"] for c in version.get("additionalPrinterColumns", [])]
        elif resource.plural == "pods":
            columns = [
                {"name": n, "type": "string", "priority": p}
                for n, p in (("Name", 0), ("Ready", 0), ("Status", 0), ("IP", 0), ("Age", 0))
            ]
            paths = [
                ".metadata.name",
                "@ready",
                ".status.phase",
                ".status.podIP",
                ".metadata.creationTimestamp",
            ]
        else:
            columns = [
                {"name": "Name", "type": "string", "priority": 0},
                {"name": "Age", "type": "date", "priority": 0},
            ]
            paths = [".metadata.name", ".metadata.creationTimestamp"]
        rows = []
        for obj in items:
            cells = []
            for column, path in zip(columns, paths, strict=True):
                value = _pod_ready(obj) if path == "@ready" else _jsonpath(obj, path)
                if column["name"] == "Age" or column["type"] == "date":
                    value = _age(value)
                cells.append("" if value is None else value)
            rows.append(
                {
                    "cells": cells,
                    "object": {
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": obj.get("metadata", {}),
                    },
                }
            )
        for column in columns:
            column.setdefault("format", "")
            column.setdefault("description", "")
            if column["type"] == "date":
                column["type"] = "string"
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {},
            "columnDefinitions": columns,
            "rows": rows,
        }


# ---------------------------------------------------------------------------------------- helpers


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _api_version(resource: Any) -> str:
    return resource.version if not resource.group else f"{resource.group}/{resource.version}"


def _without(obj: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != key}


def _wants_table(request: rendering.Request) -> bool:
    accept = next((v for k, v in request.headers.items() if k.lower() == "accept"), "")
    return "as=Table" in accept


def _selected(obj: dict[str, Any], params: Any) -> bool:
    labels = parse_query(params.get("labelSelector", "") or "")
    if labels is not None and not matches(labels, obj.get("metadata", {}).get("labels")):
        return False
    for term in filter(None, (params.get("fieldSelector", "") or "").split(",")):
        negate = "!=" in term
        path, _, wanted = term.partition("!=" if negate else "==" if "==" in term else "=")
        value = _jsonpath(obj, "." + path.strip())
        if (str(value if value is not None else "") == wanted.strip()) == negate:
            return False
    return True


_FILTER = re.compile(r'^(\w+)\[\?\(@\.(\w+)==["\']([^"\']*)["\']\)\]$')


def _jsonpath(obj: Any, path: str) -> Any:
    """The subset of JSONPath used by printer columns and field selectors."""
    node = obj
    for part in filter(None, re.split(r"\.(?![^\[]*\])", path.strip().lstrip("."))):
        match = _FILTER.match(part)
        if match:
            items = node.get(match.group(1)) if isinstance(node, dict) else None
            node = next(
                (
                    i
                    for i in items or []
                    if isinstance(i, dict) and str(i.get(match.group(2))) == match.group(3)
                ),
                None,
            )
        elif isinstance(node, dict):
            node = node.get(part)
        else:
            return None
    return node


def _pod_ready(obj: dict[str, Any]) -> str:
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in obj.get("status", {}).get("conditions", [])
    )
    return "1/1" if ready else "0/1"


def _age(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    try:
        then = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    seconds = int((datetime.datetime.now(tz=datetime.UTC) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * 2:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _apply_defaults(obj: Any, schema: dict[str, Any]) -> None:
    if not isinstance(obj, dict):
        if isinstance(obj, list) and isinstance(schema.get("items"), dict):
            for item in obj:
                _apply_defaults(item, schema["items"])
        return
    for name, sub in schema.get("properties", {}).items():
        if name not in obj and "default" in sub:
            obj[name] = copy.deepcopy(sub["default"])
        if name in obj:
            _apply_defaults(obj[name], sub)


def _openapi_to_jsonschema(node: Any) -> Any:
    if isinstance(node, list):
        return [_openapi_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _openapi_to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-preserve-unknown-fields"):
        out.pop("additionalProperties", None)
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    out.pop("nullable", None)
    return out


# ---------------------------------------------------------------------------------------- process


async def serve(host: str, port: int, ready_file: Path | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with LocalApiServer() as api, kmock.Server(api, host=host, port=port) as server:
        url = f"http://{host}:{server.port}"
        if ready_file is not None:
            tmp = ready_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"url": url}))
            tmp.rename(ready_file)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.localcluster.apiserver")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", type=Path, default=None)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.ready_file))


if __name__ == "__main__":
    main()
