"""The Ray work of the pipeline, one package per stage; the Prefect flows in ``pipelines`` call into these.

    runtime   Ray (start or join), what the cluster can hold, progress lines, injected faults
    store     everything under ROOT: Store, layout, the commit protocol, the model registry, schemas, PNG labels
    data      sources -> clean -> dedup -> split -> a curated version (and the one reader of curated splits)
    gate      quality references, figures of a set of outputs, and every gate decision (policy)
    train     Ray Train: the driver, the worker loop, checkpoints, when to retrain, registering a version
    generate  Ray Data: requests -> rows -> sampling actors -> finishing actors -> a staged, then published night
    mix       real + synthetic mixtures (``aigc augment``)

A package imports only those above it in this list (``tests/test_code_layout.py`` checks it); none imports Prefect.
"""
