"""nexus-kernel: --generate-config and the demo, run as a user would."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nexus.kernel.cli import build_parser, main
from nexus.kernel.config import NexusConfig, load_config


def run_cli(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nexus.kernel.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"HOME": str(cwd), "PATH": "/usr/bin:/bin"},
    )


def test_generate_config_writes_a_loadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "config.toml"
    assert main(["--generate-config", str(target)]) == 0
    assert str(target) in capsys.readouterr().out
    assert load_config(target)[0] == NexusConfig()
    assert main(["--generate-config", str(target)]) == 1  # no silent overwrite
    assert main(["demo", "--generate-config", str(target), "--force"]) == 0  # the classic demo flag too


def test_demo_accepts_the_classic_flags() -> None:
    args = build_parser().parse_args(
        ["demo", "--config", "c.toml", "--log-level", "debug", "--log-format", "json", "-n", "4", "-d", "10"]
    )
    assert (args.config, args.log_level, args.log_format, args.num_agents, args.duration) == (
        "c.toml",
        "debug",
        "json",
        4,
        10,
    )
    short = build_parser().parse_args(["demo", "-c", "x", "-l", "warn", "-f", "pretty", "-n", "2", "-d", "0"])
    assert (short.config, short.log_level, short.log_format) == ("x", "warn", "pretty")


def test_demo_runs_agents_prints_throughput_and_shuts_down(tmp_path: Path) -> None:
    result = run_cli("demo", "-n", "50", "-d", "1.5", "--log-format", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("nexus-kernel demo: 50 agents")
    progress = [line for line in lines if "msg/s" in line and line.startswith("[")]
    assert progress and "agents=50" in progress[0]
    assert lines[-1].startswith("done:") and "dropped 0" in lines[-1]
    logs = [json.loads(line) for line in result.stderr.splitlines()]
    assert any("calculates" in entry["message"] for entry in logs)  # the demo's classic messages
    assert any("shut down" in entry["message"] for entry in logs)


def test_demo_uses_config_from_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[kernel]\nmailbox_capacity = 64\n[logging]\nformat = "json"\n')
    result = run_cli("demo", "-n", "3", "-d", "0.5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    first = json.loads(result.stderr.splitlines()[0])
    assert "mailbox_capacity=64" in first["message"] and "config.toml" in first["message"]


def test_demo_with_a_broken_config_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[kernel]\nmailbox_capacity = 0\n")
    result = run_cli("demo", "-n", "2", "-d", "0.1", cwd=tmp_path)
    assert result.returncode == 1 and "config.toml" in result.stderr


def test_demo_with_duration_zero_runs_until_interrupted(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "nexus.kernel.cli", "demo", "-n", "20", "-d", "0", "-l", "error"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    try:
        assert proc.stdout is not None
        assert "until Ctrl-C" in proc.stdout.readline()
        assert "msg/s" in proc.stdout.readline()  # it is running and reporting
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.splitlines()[-1].startswith("done:")


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out
