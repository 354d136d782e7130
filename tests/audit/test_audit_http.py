"""HTTP sources read by ranges, and servers that misbehave: the audit finishes, records every
image, retries failing sources a bounded number of times and never retries a bad image."""

from __future__ import annotations

from pathlib import Path

from imageintrospect.audit import audit
from imageintrospect.audit.records import read_records

from .audit_services import RangeServer
from .conftest import Images, agrees

RETRIES = 2


def run(urls: list[str], out: Path) -> dict[str, dict]:
    audit(urls, str(out), retries=RETRIES, backoff=0)
    return {r["url"]: r for r in read_records(str(out))}


def test_ranged_reads_agree_with_introspect(images: Images, http: RangeServer, tmp_path: Path):
    urls = [http.url("ok", name) for name in images.names]
    records = run(urls, tmp_path / "ok.jsonl")
    assert sorted(records) == sorted(urls)
    for name in images.names:
        record = records[http.url("ok", name)]
        agrees(record, images.expected(name, deep=False))
        assert record["attempts"] == 1
        # the counter on the wire and the audit's own count agree
        assert record["bytes_read"] == http.served[f"/ok/{name}"] <= 1 << 20
        assert record["etag"]


def test_misbehaving_servers_are_retried_then_recorded(
    images: Images, http: RangeServer, tmp_path: Path
) -> None:
    name, other = "plain-64M.qcow2", "disk-64M.vhd"
    urls = {
        "fail": http.url("fail", name),
        "drop": http.url("drop", name),
        "missing": http.url("ok", "no-such-image.qcow2"),
        "flaky": http.url("flaky", name),
        "dropfirst": http.url("dropfirst", other),
        "slow": http.url("slow", name),
        "ok": http.url("ok", other),
    }
    records = run(list(urls.values()), tmp_path / "bad.jsonl")
    assert sorted(records) == sorted(urls.values())  # nothing lost, one record each
    for kind in ("fail", "drop", "missing"):
        record = records[urls[kind]]
        assert record["verdict"] == "error" and record["error"].startswith("source failed")
        assert record["attempts"] == RETRIES + 1
        path = urls[kind][len(http.base) :]
        # bounded work: fsspec asks for the size (HEAD, then GET when HEAD fails) while
        # listing; then each attempt asks again or fetches, two requests at most
        assert http.requests[path] <= 2 + 2 * (RETRIES + 1)
    assert records[urls["flaky"]]["attempts"] > 1
    assert records[urls["dropfirst"]]["attempts"] == 2
    for kind, image in (("flaky", name), ("dropfirst", other), ("slow", name), ("ok", other)):
        agrees(records[urls[kind]], images.expected(image, deep=False))


def test_credentials_in_urls_never_reach_the_records(http: RangeServer, tmp_path: Path):
    secret_url = http.url("fail", "x.qcow2").replace("http://", "http://admin:hunter22@")
    signed = http.url("ok", "nothing.qcow2") + "?X-Amz-Signature=deadbeef1234&X-Amz-Credential=ak"
    out = tmp_path / "secret.jsonl"
    run([secret_url, signed], out)
    text = out.read_text()
    assert "hunter22" not in text and "deadbeef1234" not in text
    assert len(list(read_records(str(out)))) == 2
