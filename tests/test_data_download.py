"""Downloader against a local HTTP server on 127.0.0.1 serving zips built here (no internet needed)."""
from __future__ import annotations

import argparse
import io
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gdna.data import download
from gdna.data.cli import register
from gdna.data.genomic_benchmarks import load_task
from gdna.errors import DataError

COHN = "human_enhancers_cohn"


def make_zip(task: str, top_folder: bool) -> bytes:
    buf = io.BytesIO()
    prefix = f"{task}/" if top_folder else ""
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for split in ("train", "test"):
            for cls, seq in (("negative", "ACGTACGT"), ("positive", "GGGGCCCC")):
                for i in range(3):
                    zf.writestr(f"{prefix}{split}/{cls}/{i}.txt", seq[: 5 + i])
        zf.writestr("__MACOSX/junk", "x")
    return buf.getvalue()


class Handler(BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, bytes, int | None]] = {}  # path -> (status, body, declared length)

    def do_GET(self):  # noqa: N802
        status, body, declared = self.routes.get(self.path.split("?")[0], (404, b"not found", None))
        self.send_response(status)
        self.send_header("Content-Length", str(declared if declared is not None else len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture()
def server(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr(download, "TIMEOUT_S", 5)
    Handler.routes = {}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/files", Handler.routes
    httpd.shutdown()
    httpd.server_close()


def leftovers(root: Path) -> list[str]:
    gb = root / "genomic_benchmarks"
    return sorted(p.name for p in gb.iterdir()) if gb.exists() else []


@pytest.mark.parametrize("top_folder", [True, False])
def test_download_unpacks_either_zip_layout_and_skips_present_tasks(tmp_path, server, top_folder):
    base, routes = server
    routes[f"/files/{COHN}_v0.zip"] = (200, make_zip(COHN, top_folder), None)
    log = io.StringIO()
    status = download.download_genomic_benchmarks(tmp_path, [COHN], base_url=base, log=log)
    assert status == {COHN: "downloaded"}
    assert leftovers(tmp_path) == [COHN]  # temp dir gone, no __MACOSX
    task = load_task(tmp_path, COHN, cache=False)
    assert task.classes == ("negative", "positive") and len(task.train) == 6 and len(task.test) == 6
    assert "MB" in log.getvalue()  # progress output
    routes.clear()  # a second call must not touch the network
    assert download.download_genomic_benchmarks(tmp_path, [COHN], base_url=base, log=log) == {COHN: "present"}


def test_base_url_from_environment(tmp_path, server, monkeypatch):
    base, routes = server
    routes[f"/files/{COHN}_v0.zip"] = (200, make_zip(COHN, True), None)
    monkeypatch.setenv(download.GB_BASE_URL_ENV, base)
    assert download.download_task(tmp_path, COHN, log=io.StringIO()) == "downloaded"


@pytest.mark.parametrize(
    "route, pattern",
    [
        (None, r"_v0\.zip: download failed \(HTTP 404"),
        ((200, b"PK\x03\x04 not really a zip", None), r"_v0\.zip: not a valid zip"),
        ((200, b"short body", 5000), r"_v0\.zip: (truncated download \(10 of 5000 bytes\)|download interrupted)"),
    ],
)
def test_download_failures_are_one_line_and_leave_nothing_behind(tmp_path, server, route, pattern):
    base, routes = server
    if route is not None:
        routes[f"/files/{COHN}_v0.zip"] = route
    with pytest.raises(DataError, match=pattern) as e:
        download.download_task(tmp_path, COHN, base_url=base, log=io.StringIO())
    assert "\n" not in str(e.value)
    assert leftovers(tmp_path) == []


def test_md5_mismatch_and_corrupt_member(tmp_path, server, monkeypatch):
    base, routes = server
    good = make_zip(COHN, True)
    routes[f"/files/{COHN}_v0.zip"] = (200, good, None)
    monkeypatch.setitem(download.KNOWN_MD5, f"{COHN}_v0.zip", "0" * 32)
    with pytest.raises(DataError, match="md5 mismatch"):
        download.download_task(tmp_path, COHN, base_url=base, log=io.StringIO())
    monkeypatch.delitem(download.KNOWN_MD5, f"{COHN}_v0.zip")
    stored = io.BytesIO()
    with zipfile.ZipFile(stored, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{COHN}/train/a/0.txt", "ACGTACGTACGT")
    corrupt = stored.getvalue().replace(b"ACGTACGTACGT", b"ACGTACGTACGA")  # data no longer matches its CRC
    routes[f"/files/{COHN}_v0.zip"] = (200, corrupt, None)
    with pytest.raises(DataError, match=r"corrupt zip \(bad CRC in .*0\.txt\)"):
        download.download_task(tmp_path, COHN, base_url=base, log=io.StringIO())
    assert leftovers(tmp_path) == []


def test_unreachable_server(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError, match=r"cannot reach the server .*are you offline\?") as e:
        download.download_task(tmp_path, COHN, base_url=f"http://127.0.0.1:{port}", log=io.StringIO())
    assert "\n" not in str(e.value)


def test_unknown_task_is_rejected(tmp_path):
    with pytest.raises(DataError, match="unknown task 'human_nope'"):
        download.download_genomic_benchmarks(tmp_path, ["human_nope"])


def test_cli_download_and_hg38(tmp_path, server, capsys):
    base, routes = server
    routes[f"/files/{COHN}_v0.zip"] = (200, make_zip(COHN, True), None)
    fasta = b">chrA\nACGTACGTAC\nGT\n>chrB\nNNNNACGT\n"
    import gzip

    routes["/files/hg38.ml.fa.gz"] = (200, gzip.compress(fasta), None)
    routes["/files/seq.bed"] = (200, b"chrA\t0\t12\ttrain\nchrB\t0\t8\tvalid\n", None)
    parser = argparse.ArgumentParser(prog="gdna")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", "download", "genomic-benchmarks", "--tasks", COHN, "--data-root", str(tmp_path), "--base-url", base])
    assert args.func(args) == 0
    assert "1 downloaded, 0 already present" in capsys.readouterr().out
    args = parser.parse_args(["data", "download", "hg38", "--data-root", str(tmp_path),
                              "--url", f"{base}/hg38.ml.fa.gz", "--bed-url", f"{base}/seq.bed"])
    assert args.func(args) == 0
    genome = tmp_path / "genome"
    assert (genome / "hg38.ml.fa").read_bytes() == fasta
    assert (genome / "hg38.ml.fa.fai").read_text().startswith("chrA\t12\t")
    assert (genome / "sequences_human.bed").exists()
    assert sorted(p.name for p in genome.iterdir()) == ["hg38.ml.fa", "hg38.ml.fa.fai", "sequences_human.bed"]


def test_a_zip_whose_task_would_not_load_is_not_installed(tmp_path, server):
    base, routes = server
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{COHN}/train/negative/0.txt", "ACGT")
        zf.writestr(f"{COHN}/train/positive/0.txt", "ACGT")
        zf.writestr(f"{COHN}/test/negative/0.txt", "ACGT")
        zf.writestr(f"{COHN}/test/other/0.txt", "ACGT")
    routes[f"/files/{COHN}_v0.zip"] = (200, buf.getvalue(), None)
    with pytest.raises(DataError, match="class folders differ between train"):
        download.download_task(tmp_path, COHN, base_url=base, log=io.StringIO())
    assert leftovers(tmp_path) == []


def test_unwritable_data_root_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(DataError, match="cannot write here"):
        download.download_task(blocker, COHN, base_url="http://127.0.0.1:1", log=io.StringIO())
