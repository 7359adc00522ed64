"""TOML config: lookup order, defaults, validation, the generated template."""

from pathlib import Path

import pytest

from nexus.kernel.config import (
    ConfigError,
    KernelConfig,
    NexusConfig,
    default_search_paths,
    generate_config,
    load_config,
    render_config,
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_match_the_documented_ones() -> None:
    config = NexusConfig()
    assert (config.kernel.mailbox_capacity, config.kernel.send_timeout_ms, config.kernel.handle_timeout_ms) == (
        1024,
        500,
        30_000,
    )
    assert (config.logging.level, config.logging.format) == ("info", "compact")


def test_no_file_anywhere_means_defaults(tmp_path: Path) -> None:
    config, source = load_config(search=[tmp_path / "a.toml", tmp_path / "b.toml"])
    assert config == NexusConfig() and source is None


def test_first_existing_file_wins(tmp_path: Path) -> None:
    second = write(tmp_path / "second.toml", "[kernel]\nmailbox_capacity = 2\n")
    third = write(tmp_path / "third.toml", "[kernel]\nmailbox_capacity = 3\n")
    config, source = load_config(search=[tmp_path / "missing.toml", second, third])
    assert source == second and config.kernel.mailbox_capacity == 2


def test_missing_keys_keep_their_defaults(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", '[kernel]\nsend_timeout_ms = 50\n[logging]\nformat = "json"\n')
    config, _ = load_config(path)
    assert config.kernel == KernelConfig(send_timeout_ms=50)
    assert config.logging.format == "json" and config.logging.level == "info"


def test_default_locations_are_cwd_then_home_then_etc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    paths = default_search_paths()
    assert paths == [
        Path("config.toml"),
        tmp_path / "home" / ".config" / "nexus" / "config.toml",
        Path("/etc/nexus/config.toml"),
    ]
    write(tmp_path / "home" / ".config" / "nexus" / "config.toml", "[kernel]\nmailbox_capacity = 7\n")
    assert load_config(search=paths[:2])[0].kernel.mailbox_capacity == 7
    write(tmp_path / "config.toml", "[kernel]\nmailbox_capacity = 8\n")
    assert load_config(search=paths[:2])[0].kernel.mailbox_capacity == 8


def test_explicit_path_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    "text",
    [
        "[kernel]\nmailbox_capacity = 0\n",
        "[kernel]\nsend_timeout_ms = -1\n",
        '[kernel]\nhandle_timeout_ms = "soon"\n',
        '[logging]\nformat = "xml"\n',
        "[kernel\n",
    ],
)
def test_a_bad_file_is_an_error_naming_it_not_silently_skipped(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(search=[path])


def test_generated_template_loads_back_to_the_defaults(tmp_path: Path) -> None:
    path = generate_config(tmp_path / "sub" / "config.toml")
    assert load_config(path)[0] == NexusConfig()
    assert "[kernel]" in render_config() and "[logging]" in render_config()


def test_generate_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", "# mine\n")
    with pytest.raises(ConfigError, match="exists"):
        generate_config(path)
    assert path.read_text() == "# mine\n"
    generate_config(path, force=True)
    assert load_config(path)[0] == NexusConfig()
