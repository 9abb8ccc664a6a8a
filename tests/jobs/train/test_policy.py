"""When the nightly flow retrains a model, on a real registry."""


def test_retrain_policy_on_the_tiny_registry(tiny_night):
    from jobs.train.policy import retrain_reason

    cfg, store, result = tiny_night
    gan, version = cfg.model("tiny-gan"), result.preprocess.dataset_version
    assert retrain_reason(store, gan, cfg.train, version, "2026-11-21") is None
    assert retrain_reason(store, gan, cfg.train, "other", "2026-11-21").startswith("dataset changed")
    changed = gan.model_copy(update={"seed": 5})
    assert retrain_reason(store, changed, cfg.train, version, "2026-11-21").startswith("model or train config changed")
    relaxed = cfg.train.model_copy(update={"retrain": cfg.train.retrain.model_copy(update={"on_config_change": False})})
    assert retrain_reason(store, changed, relaxed, version, "2026-11-21") is None
    weekly = cfg.train.model_copy(update={"retrain": cfg.train.retrain.model_copy(update={"every_days": 7})})
    assert retrain_reason(store, gan, weekly, version, "2099-01-01").startswith("cadence: production is")
    assert retrain_reason(store, cfg.model("tiny-gpt").model_copy(update={"name": "never-trained"}), cfg.train,
                          version, "2026-11-21") == "no production version yet"
