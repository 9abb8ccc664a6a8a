"""Capacity checks on hand-built nodes: placement per node, not the cluster's total."""

import pytest

from jobs.generate.pools import FINISHER_CPUS
from jobs.runtime.capacity import CapacityError, Demand, check, fits, largest_fitting

TASK_CPUS = 0.25  # what generation's expand and write tasks asked for, before the actors wrote their own files
TWO_BY_TWO = [{"CPU": 2.0}, {"CPU": 2.0, "accel": 1.0}]


def pipeline(generators: int, finishers: int, write_cpus: float = TASK_CPUS, **extra: float) -> list[Demand]:
    return [Demand("sampling actor", "generate.concurrency", {"CPU": 1.0, **extra}, generators),
            Demand("finishing actor", "generate.encode_concurrency", {"CPU": FINISHER_CPUS}, finishers),
            Demand("write task", "generate.encode_concurrency", {"CPU": write_cpus})]


def test_the_demo_pools_fit_two_nodes_of_two_cpus_with_room_for_the_write_task():
    assert fits(pipeline(2, 2), TWO_BY_TWO)
    assert not fits(pipeline(3, 2), TWO_BY_TWO)  # 3 + 1 + 0.25 > 4


def test_enough_cpus_in_total_is_not_enough_when_no_node_has_them():
    nodes = [{"CPU": 1.5}, {"CPU": 1.5}]  # 3 CPUs, but no node with 2
    demand = [Demand("group of 2 training workers (STRICT_PACK: one node)", "train.num_workers", {"CPU": 2.0})]
    with pytest.raises(CapacityError, match=r"^train.num_workers: training cannot fit the Ray cluster: enough in total, "
                                            r"but no node has CPU 2 left"):
        check(demand, "training", nodes)


def test_a_shortfall_names_the_resource_and_every_key_that_asks_for_it():
    with pytest.raises(CapacityError) as err:
        check(pipeline(2, 1, accel=1.0), "generation", TWO_BY_TWO)
    message = str(err.value)
    assert message.startswith("generate.concurrency: generation cannot fit the Ray cluster: short of accel 1 in total.")
    assert "Cluster: node 1: CPU 2; node 2: CPU 2, accel 1" in message
    assert "Lower generate.concurrency (or" in message  # only the sampling actors ask for accel


def test_strict_spread_needs_a_node_per_unit():
    workers = lambda n: [Demand("training worker", "train.num_workers", {"CPU": 0.5}, n, spread=True)]
    assert fits(workers(2), TWO_BY_TWO)
    with pytest.raises(CapacityError, match="3 units one per node need 3 nodes"):
        check(workers(3), "training", TWO_BY_TWO)


def test_an_autoscaling_pool_shrinks_to_what_fits_and_a_minimum_that_cannot_fit_is_reported():
    assert largest_fitting(1, 4, lambda n: pipeline(n, 1, accel=1.0), TWO_BY_TWO) == 1
    assert largest_fitting(1, 4, lambda n: pipeline(n, 1), TWO_BY_TWO) == 3
    assert largest_fitting(2, 4, lambda n: pipeline(n, 1, accel=1.0), TWO_BY_TWO) == 1  # lo - 1: none fits


def test_a_one_cpu_stage_task_beside_half_cpu_actors_is_what_hung():
    """The shape of the old hang: read/write tasks of a whole CPU, once actors spread one sampling and one
    finishing actor per node, have no node to run on. With one node of 4 the same pools fit."""
    spread_out = [{"CPU": 2.0 - 1.0 - FINISHER_CPUS}, {"CPU": 2.0 - 1.0 - FINISHER_CPUS}]  # what each node had left
    assert not fits([Demand("read task", "-", {"CPU": 1.0})], spread_out)
    assert fits([Demand("write task", "-", {"CPU": TASK_CPUS})], spread_out)
