"""Staging from s3:// against moto's S3 server run on loopback by the test (a real bucket over HTTP)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hotswap_contract.digest import folder_digest

from tests.agent.agent_fakes import ClientFactory, run_op, write_model

BUCKET = "weights"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    import boto3

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=BUCKET)
    yield client
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    client.delete_bucket(Bucket=BUCKET)


def upload_folder(s3: Any, folder: Path, prefix: str) -> None:
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            s3.put_object(
                Bucket=BUCKET, Key=f"{prefix}{p.relative_to(folder).as_posix()}", Body=p.read_bytes()
            )


async def test_folder_prefix(
    agent_client: ClientFactory, s3: Any, s3_endpoint: str, sources_root: Path, models_root: Path
) -> None:
    src = write_model(sources_root / "v1", "one", size=300_000)
    upload_folder(s3, src, "rerankers/v1/")
    s3.put_object(Bucket=BUCKET, Key="rerankers/v1-other/config.json", Body=b"not part of v1")
    # the endpoint as S3-compatible stores are usually configured: AWS_ENDPOINT_URL
    client = await agent_client(
        allow=(f"s3://{BUCKET}/rerankers/",), environ={"AWS_ENDPOINT_URL": s3_endpoint}
    )
    op = await run_op(client, "stage", {"version": "v1", "uri": f"s3://{BUCKET}/rerankers/v1",
                                        "sha256": folder_digest(src)})  # fmt: skip
    assert op["state"] == "succeeded", op
    assert op["progress"]["bytesDone"] == op["progress"]["bytesTotal"] == op["result"]["bytes"]
    assert folder_digest(models_root / "v1") == folder_digest(src)


async def test_tarball_and_mismatch(
    agent_client: ClientFactory, s3: Any, s3_endpoint: str, sources_root: Path, models_root: Path
) -> None:
    src = write_model(sources_root / "v2", "two")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src, arcname=".")
    s3.put_object(Bucket=BUCKET, Key="rerankers/v2.tar.gz", Body=buf.getvalue())
    client = await agent_client("--s3-endpoint-url", s3_endpoint, allow=(f"s3://{BUCKET}/rerankers/",))
    uri = f"s3://{BUCKET}/rerankers/v2.tar.gz"
    op = await run_op(client, "stage", {"version": "v2", "uri": uri, "sha256": "f" * 64})
    assert (op["state"], op["errorType"]) == ("failed", "digest_mismatch")
    assert [p.name for p in models_root.iterdir()] == [".hotswap"]
    op = await run_op(client, "stage", {"version": "v2", "uri": uri, "sha256": folder_digest(src)})
    assert op["state"] == "succeeded", op
    assert op["progress"]["bytesTotal"] == len(buf.getvalue())


async def test_missing_and_unsafe_keys(
    agent_client: ClientFactory, s3: Any, s3_endpoint: str, models_root: Path
) -> None:
    client = await agent_client("--s3-endpoint-url", s3_endpoint, allow=(f"s3://{BUCKET}/",))
    op = await run_op(client, "stage", {"version": "v1", "uri": f"s3://{BUCKET}/nothing-here/"})
    assert (op["state"], op["errorType"], op["sourceFault"]) == ("failed", "source_unavailable", "gone")
    op = await run_op(client, "stage", {"version": "v1", "uri": f"s3://{BUCKET}/nothing-here.tar"})
    assert (op["state"], op["errorType"], op["sourceFault"]) == ("failed", "source_unavailable", "gone")
    s3.put_object(Bucket=BUCKET, Key="evil/a\\b", Body=b"x")
    op = await run_op(client, "stage", {"version": "v1", "uri": f"s3://{BUCKET}/evil/"})
    assert (op["state"], op["errorType"]) == ("failed", "source_invalid")
    assert [p.name for p in models_root.iterdir()] == [".hotswap"]
