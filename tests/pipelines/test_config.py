"""Config loading and the CLI's exit codes: bad input names its key and exits 2, with no traceback."""

from pathlib import Path

import pytest
import yaml

from pipelines.cli import main
from pipelines.config import DEFAULT_CONFIG, ConfigError, apply_override, load_config

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def write(tmp_path, mutate):
    data = yaml.safe_load(TINY.read_text())
    mutate(data)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_demo_and_tiny_configs_are_valid():
    demo = load_config(DEFAULT_CONFIG)
    assert demo.output == "./runs" and [m.family for m in demo.models] == ["vae", "gpt"]
    assert load_config(TINY).models[0].hyperparameters == {"g_width": 8, "d_width": 8, "z_dim": 16}


@pytest.mark.parametrize("mutate,key", [
    (lambda d: d["train"].update(epochz=3), "train.epochz: unknown key"),
    (lambda d: d["train"].update(epochs="many"), "train.epochs: Input should be a valid integer"),
    (lambda d: d["train"].update(num_workers=0), "train.num_workers"),
    (lambda d: d.update(colour="blue"), "colour: unknown key"),
    (lambda d: d["models"][0].update(family="vqgan"), "models.0.family"),
    (lambda d: d["models"][0].update(g_widht=8), "models.0.g_widht: unknown key 'g_widht' for family dcgan"),
    (lambda d: d["models"][1].update(n_layer="two"), "models.1.n_layer"),
    (lambda d: d["generate"]["requests"][0].update(model="nope"), "generate.requests.0.model: no model named 'nope'"),
    (lambda d: d["generate"]["requests"][0].update(per_prompt=3), "generate.requests.0"),
    (lambda d: d["sources"][0].update(name="mnist"), "sources.0.name"),
    (lambda d: d["sources"].append(dict(d["sources"][0])), "sources.2: the same source is listed twice"),
    (lambda d: d["preprocess"].update(resolution=30), "preprocess.resolution: Value error, must be a power of two"),
    (lambda d: d["schedule"].update(cron="every night"), "schedule.cron"),
    (lambda d: d["schedule"].update(timezone="Mars/Olympus"), "schedule.timezone"),
])
def test_bad_values_name_the_key(tmp_path, mutate, key):
    path = write(tmp_path, mutate)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert key.replace("Value error, ", "") in message and "\n" not in message


def test_set_overrides_parse_yaml_values_and_name_bad_paths():
    data = {"train": {"epochs": 1}, "models": [{"name": "a"}]}
    apply_override(data, "train.epochs=7")
    apply_override(data, "models.0.epochs=3")
    apply_override(data, "generate.requests=[]")
    assert data["train"]["epochs"] == 7 and data["models"][0]["epochs"] == 3 and data["generate"]["requests"] == []
    with pytest.raises(ConfigError, match="models.5 is not an index"):
        apply_override(data, "models.5.epochs=1")
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_override(data, "train.epochs")
    cfg = load_config(TINY, ["train.num_workers=1", "models.0.epochs=5"], output="/tmp/elsewhere")
    assert cfg.train.num_workers == 1 and cfg.models[0].epochs == 5 and cfg.output == "/tmp/elsewhere"
    with pytest.raises(ConfigError, match=r"^augment.dates"):  # an impossible date names its key, no traceback
        load_config(TINY, ["augment.dates=[2026-13-01]"])


@pytest.mark.parametrize("argv,needle", [
    (["train", "--config", "/no/such.yaml"], "--config: file not found: /no/such.yaml"),
    (["generate", "--config", str(TINY), "--set", "generate.batch_size=-1"], "generate.batch_size"),
    (["nightly", "--config", str(TINY), "--set", "train.bogus=1"], "train.bogus: unknown key"),
    (["train", "--config", str(TINY), "--model", "nope"], "--model: no model named 'nope'"),
    (["generate", "--config", str(TINY), "--count", "0"], "--count"),
])
def test_cli_bad_config_exits_2_with_one_line(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and err.count("\n") == 1


def test_cli_bad_date_and_unknown_command_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--date", "2026-13-45"])
    assert exc.value.code == 2 and "expected YYYY-MM-DD" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2


def test_not_a_mapping_and_broken_yaml(tmp_path):
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")
