from tapetum.detect.runtime import plan_cpu_workers


def test_auto_plan_uses_two_single_thread_workers_on_two_cores() -> None:
    assert plan_cpu_workers(cores=2) == (2, 1)


def test_auto_plan_shares_cores_between_workers() -> None:
    assert plan_cpu_workers(cores=16) == (2, 8)
    assert plan_cpu_workers(workers=4, cores=16) == (4, 4)
    assert plan_cpu_workers(threads=4, cores=16) == (4, 4)
    assert plan_cpu_workers(workers=3, threads=2, cores=16) == (3, 2)


def test_single_core_gets_one_worker() -> None:
    assert plan_cpu_workers(cores=1) == (1, 1)
    assert plan_cpu_workers(threads=2, cores=2) == (1, 2)


def test_sessions_keep_the_cpu_arena_unless_told_not_to() -> None:
    from tapetum.detect.runtime import RuntimeOptions, make_session_options

    assert make_session_options(RuntimeOptions(), 1).enable_cpu_mem_arena is True
    assert not make_session_options(RuntimeOptions(cpu_mem_arena=False), 1).enable_cpu_mem_arena
