"""GradWatchConfig and load_config: defaults, normalisation, and one test per kind of config error."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from gradwatch import ConfigError, GradWatchError
from gradwatch.config import KEYS, GradWatchConfig, load_config, read_config_file

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def write(tmp_path: Path, text: str, name: str = "watch.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------
# the shipped configs


def test_default_yaml_restates_every_default():
    assert load_config(CONFIGS / "default.yaml") == GradWatchConfig()


def test_default_yaml_documents_every_key():
    data = yaml.safe_load((CONFIGS / "default.yaml").read_text(encoding="utf-8"))
    assert set(data) == set(KEYS)


def test_default_yaml_comments_every_key():
    lines = (CONFIGS / "default.yaml").read_text(encoding="utf-8").splitlines()
    for key in KEYS:
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{key}:"))
        assert lines[index - 1].startswith("#"), f"{key} has no comment above it"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    assert isinstance(load_config(path), GradWatchConfig)


def test_debug_config_schedules_checks_and_skips_dropout():
    config = load_config(CONFIGS / "debug.yaml")
    assert config.every and config.on_dropout == "skip" and config.logdir and config.enabled is True


# ------------------------------------------------------------------------------------------
# values


def test_after_steps_int_means_one_step(tmp_path):
    assert load_config(write(tmp_path, "after_steps: 500\n")).after_steps == (500,)


def test_after_steps_list_is_sorted_and_deduplicated(tmp_path):
    assert load_config(write(tmp_path, "after_steps: [300, 100, 300]\n")).after_steps == (100, 300)


@pytest.mark.parametrize("key", ["epsilon", "threshold"])
def test_exponent_without_dot_is_read_as_a_number(tmp_path, key):
    path = write(tmp_path, f"{key}: 1e-7\n")
    assert yaml.safe_load(path.read_text()) == {key: "1e-7"}  # what YAML 1.1 hands us
    assert getattr(load_config(path), key) == 1e-7


def test_empty_file_gives_the_defaults(tmp_path):
    assert load_config(write(tmp_path, "# nothing set\n")) == GradWatchConfig()


def test_mapping_is_accepted():
    assert load_config({"sample": 10, "every": 100}).sample == 10


def test_read_config_file_returns_only_the_keys_set(tmp_path):
    assert read_config_file(write(tmp_path, "every: 50\nseed: 3\n")) == {"every": 50, "seed": 3}


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        GradWatchConfig().every = 3  # type: ignore[misc]


def test_replace_validates():
    with pytest.raises(ConfigError, match="every"):
        GradWatchConfig().replace(every=0)


# ------------------------------------------------------------------------------------------
# errors


def test_unknown_key_names_file_key_allowed_keys_and_a_close_match(tmp_path):
    path = write(tmp_path, "sampel: all\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "'sampel'" in message
    assert "did you mean 'sample'" in message
    assert all(key in message for key in KEYS)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_wrong_type_names_key_expected_type_and_received(tmp_path):
    path = write(tmp_path, 'every: "ten"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "every" in message and "positive int" in message
    assert "'ten' (str)" in message


def test_bad_value_message_says_what_is_allowed(tmp_path):
    path = write(tmp_path, "sample: -3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f'{path}: sample must be "all", "auto" or a positive int; got -3'


@pytest.mark.parametrize(
    "text, key",
    [
        ("at_init: maybe\n", "at_init"),
        ("after_steps: [10, -1]\n", "after_steps"),
        ("after_steps: 2.5\n", "after_steps"),
        ("every: 0\n", "every"),
        ("sample: some\n", "sample"),
        ("epsilon: -1e-7\n", "epsilon"),
        ("threshold: small\n", "threshold"),
        ("seed: -1\n", "seed"),
        ("logdir: 7\n", "logdir"),
        ('logdir: "runs/a\\0b"\n', "logdir"),
        ("enabled: sometimes\n", "enabled"),
        ("dropout_active: 3\n", "dropout_active"),
        ("on_dropout: ignore\n", "on_dropout"),
        ("on_failure: shout\n", "on_failure"),
        ("progress: 2\n", "progress"),
    ],
)
def test_each_key_rejects_a_bad_value(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: {key} must be")


def test_invalid_yaml_names_the_file(tmp_path):
    path = write(tmp_path, "every: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_top_level_must_be_a_mapping(tmp_path):
    path = write(tmp_path, "- every\n- 5\n")
    with pytest.raises(ConfigError, match="must be a mapping") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_config_error_is_a_gradwatch_error_and_a_value_error():
    with pytest.raises(GradWatchError):
        load_config({"every": -1})
    with pytest.raises(ValueError):
        load_config({"every": -1})


def test_not_a_path_nor_a_mapping_is_refused():
    with pytest.raises(ConfigError, match="path to a YAML file or a mapping"):
        load_config(42)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# hostile files


def alias_bomb(key: str) -> str:
    """A 'billion laughs' under a known key: nine levels of nine aliases, 9**9 values once expanded."""
    lines = [f"{key}:", "  - &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for level in range(1, 9):
        lines.append(f"  - &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("key", ["after_steps", "sample", "no_such_key"])
def test_an_alias_bomb_is_refused_naming_the_file(tmp_path, key):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(key))
    with pytest.raises(ConfigError, match=r"bomb\.yaml: its YAML aliases expand to more than"):
        load_config(path)


def test_a_few_aliases_are_fine(tmp_path):
    path = tmp_path / "anchors.yaml"
    path.write_text("after_steps: &steps [10, 20]\nevery: 5\n")
    assert load_config(path).after_steps == (10, 20)


def test_an_error_about_a_huge_shared_value_shows_a_cut_value():
    from gradwatch.config import _got

    value = [1] * 9
    for _ in range(30):  # 9**30 values if written out whole: only a cut repr can be built
        value = [value] * 9
    shown = _got(value)
    assert len(shown) <= 100 and shown.endswith("(list)")


def test_a_file_that_is_not_utf8_is_a_config_error_naming_it(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("logdir: runs/d\xe9bogage\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not UTF-8 text \(byte 0xe9 at offset 14\)"):
        load_config(path)


def test_a_duplicate_key_is_a_config_error_naming_file_key_and_lines(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("every: 100\nseed: 0\nevery: 5\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml: key 'every' is given twice \(lines 1 and 3\)"):
        load_config(path)


def test_a_file_larger_than_any_config_is_refused(tmp_path):
    from gradwatch.config import MAX_CONFIG_BYTES

    path = tmp_path / "huge.yaml"
    path.write_text("# " + "x" * MAX_CONFIG_BYTES + "\n")
    with pytest.raises(ConfigError, match=r"huge\.yaml: a config file is at most"):
        load_config(path)


def test_yaml_nested_beyond_reason_is_a_config_error(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("after_steps: " + "[" * 5_000 + "]" * 5_000 + "\n")
    with pytest.raises(ConfigError, match=r"deep\.yaml"):
        load_config(path)
