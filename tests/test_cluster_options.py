"""`--cluster` and `--cluster-workers` refused in one sentence where they cannot apply,
before anything starts or is stored; a scheduler with no workers is one sentence too."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from lipon_hw.cli import main

from recipes import LNMO


@pytest.mark.parametrize("args, message", [
    (["run", "lipon_rf_sputter", "--cluster", "local"],
     "error: --cluster spreads a cell test's channels or a sweep's runs; a deposition run is "
     "driven by one engine (use `lipon-hw sweep` for its variants)"),
    (["run", "{protocol}", "--cluster", "foo"],
     "error: --cluster 'foo' is neither `local` nor a Dask scheduler's address "
     "(tcp://HOST:8786)"),
    (["run", "{protocol}", "--cluster-workers", "2"],
     "error: --cluster-workers sizes --cluster local; give --cluster too"),
    (["run", "{protocol}", "--cluster", "tcp://127.0.0.1:8786", "--cluster-workers", "2"],
     "error: --cluster-workers sizes a local cluster; tcp://127.0.0.1:8786 is a running "
     "scheduler, whose workers are started where they run"),
])
def test_a_cluster_option_that_cannot_apply_is_one_sentence(tmp_path, args, message):
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(LNMO.format(channels="1", cycles=1), encoding="utf-8")
    data = tmp_path / "data"
    out = CliRunner().invoke(main, [a.format(protocol=protocol) for a in args]
                             + ["--data", str(data)])
    assert (out.exit_code, out.output.strip()) == (2, message)
    assert not data.exists()


def test_a_scheduler_with_no_workers_is_one_sentence(tmp_path):
    import distributed

    from lipon_hw.cluster import connect

    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(LNMO.format(channels="1", cycles=1), encoding="utf-8")
    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as bare:
        old, connect.CONNECT_TIMEOUT_S = connect.CONNECT_TIMEOUT_S, 0.5
        try:
            out = CliRunner().invoke(main, ["run", str(protocol), "--data",
                                            str(tmp_path / "data"), "--cluster",
                                            bare.scheduler_address])
        finally:
            connect.CONNECT_TIMEOUT_S = old
    assert out.exit_code == 1
    assert out.output.strip() == (
        f"error: the Dask scheduler at {bare.scheduler_address} has no workers (none joined "
        f"within 0.5 s): start some with `dask worker {bare.scheduler_address} --nthreads 1`")
    assert not (tmp_path / "data").exists()
