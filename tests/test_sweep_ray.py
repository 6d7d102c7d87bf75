"""tta sweep on a real local Ray cluster of two worker nodes, one of which is killed mid-sweep."""
from __future__ import annotations

import threading
import time

import pytest

from tta.pipeline.config import RunConfig
from tta.sweep.store import Store
from tta.sweep import LocalBackend, plan, sweep

ray = pytest.importorskip("ray", reason="Ray is not installed; pip install 'tta-toolkit[ray]' (CI's test extra has it)")
cluster_utils = pytest.importorskip("ray.cluster_utils")


def _configs(data_dir, checkpoint) -> list[RunConfig]:
    return [RunConfig(method=m, shift=s, seed=seed, dataset="cifar10", data_dir=str(data_dir), model="resnet20",
                      checkpoint=str(checkpoint), domains=["noise_low", "noise_high"], n_examples=40, batch_size=20)
            for m in ("source", "tbn") for s in ("continual", "iid") for seed in (1, 2)]


def _errors(store: Store) -> dict[str, dict]:
    return {d["_cell"]["id"]: d["metrics"]["domain_errors"] for d in store.documents()}


@pytest.mark.realdata
@pytest.mark.slow
def test_ray_sweep_survives_a_dead_node_and_matches_the_local_backend(small_cifar_c_dir, resnet20_checkpoint, tmp_path):
    from tta.sweep import RayBackend  # noqa: PLC0415

    cells = plan(_configs(small_cifar_c_dir, resnet20_checkpoint))
    assert len(cells) == 8 and len({c.id for c in cells}) == 8
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 0,
                                                                          "object_store_memory": 80 * 2**20})
    nodes = [cluster.add_node(num_cpus=1, object_store_memory=80 * 2**20) for _ in range(2)]
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        backend = RayBackend(jobs=2)
        box: dict = {}

        def run() -> None:  # a store connection belongs to the thread that opened it
            with Store(tmp_path / "ray.db") as own:
                box["summary"] = sweep(cells, own, backend)

        worker = threading.Thread(target=run)
        worker.start()
        # kill one worker node as soon as the first cell is stored: the other cells are queued or running on it
        probe = Store(tmp_path / "ray.db")
        deadline = time.time() + 240
        while time.time() < deadline and probe.counts()["done"] == 0:
            time.sleep(0.2)
        done_at_kill = probe.counts()["done"]
        assert 1 <= done_at_kill < 8  # cells were still queued or running when the node died
        cluster.remove_node(nodes[1])
        assert sum(n["Alive"] for n in ray.nodes()) == 2  # the head and one worker node remain
        worker.join(timeout=300)
        assert not worker.is_alive()
        summary = box["summary"]
        store = Store(tmp_path / "ray.db")
        assert summary.failed == [] and len(summary.ran) == 8
        rows = store.rows()
        assert len(rows) == 8 and {r["status"] for r in rows} == {"done"} and {r["id"] for r in rows} == {c.id for c in cells}
        # a rerun claims nothing
        again = sweep(cells, store, backend)
        assert again.ran == [] and again.already_done == 8
        ray_errors = _errors(store)
    finally:
        ray.shutdown()
        cluster.shutdown()
    # the same cells on the local backend give identical errors
    local = Store(tmp_path / "local.db")
    backend = LocalBackend(jobs=1)
    try:
        sweep(cells, local, backend)
    finally:
        backend.close()
    assert _errors(local) == ray_errors
