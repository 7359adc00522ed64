"""A command cannot leave a setuid or setgid file behind. The workspace is a directory of the machine,
and a root runner's commands (a container's root, or the local runtime's default) write it as root: a
copy of an interpreter made setuid there ran as root for any user of the machine who reached it (the
local runtime makes run directories 0755). The bits are cleared after every command, whatever set them
(`chmod`, an `open` with mode 04755, `install -m`, an archive's modes), and the result says so."""

import os
import stat
from typing import Any

import pytest

from nexus.agent_runner.hypervisor import sandbox as confinement

MAKE = (
    "import os, shutil\n"
    "shutil.copy('/usr/bin/id', 'by-chmod')\n"
    "os.chmod('by-chmod', 0o6755)\n"
    "fd = os.open('by-open', os.O_CREAT | os.O_WRONLY, 0o4755)\n"
    "os.write(fd, open('/usr/bin/id', 'rb').read())\n"
    "os.close(fd)\n"
    "os.makedirs('sub', exist_ok=True)\n"
    "shutil.copy('/usr/bin/id', 'sub/deep')\n"
    "os.chmod('sub/deep', 0o2755)\n"
)


@pytest.mark.skipif(os.geteuid() != 0, reason="a runner that is not root can make no file run as root")
@pytest.mark.parametrize("mode", ["bwrap", "landlock", "none"])
async def test_no_setuid_file_outlives_the_command_that_made_it(sandbox: Any, mode: str) -> None:
    if confinement.detect(mode) != mode:
        pytest.skip(f"{mode} is not available here")
    hv = sandbox.make(sandbox_mode=mode)
    (sandbox.ws / "make.py").write_text(MAKE)
    result = await hv.call("run_command", {"cmd": "python3 make.py"})
    assert result.ok, result.error
    for name in ("by-chmod", "by-open", "sub/deep"):
        mode_bits = (sandbox.ws / name).stat().st_mode
        assert not mode_bits & (stat.S_ISUID | stat.S_ISGID), (name, oct(mode_bits))
        assert mode_bits & 0o111  # still executable: only the privilege is gone
    assert "setuid/setgid bits removed" in result.output and "by-chmod" in result.output
    again = await hv.call("run_command", {"cmd": "chmod u+s by-chmod"})
    assert again.ok and not (sandbox.ws / "by-chmod").stat().st_mode & stat.S_ISUID
    sandbox.assert_recorded()


@pytest.mark.skipif(os.geteuid() != 0, reason="a runner that is not root can make no file run as root")
async def test_a_hard_link_to_a_privileged_file_outside_keeps_that_file_as_it_was(sandbox: Any) -> None:
    """Clearing the bits through a hard link would change the machine's own setuid program (the `none`
    mode reaches every path of the machine): such a name is removed from the workspace instead."""
    if confinement.detect("none") != "none":
        pytest.skip("none is not available here")
    outside = sandbox.sentinel / "privileged"
    outside.write_bytes(b"\x7fELF")
    outside.chmod(0o4755)
    hv = sandbox.make(sandbox_mode="none")
    (sandbox.ws / "link.py").write_text(f"import os\nos.link({str(outside)!r}, 'linked')\n")
    result = await hv.call("run_command", {"cmd": "python3 link.py"})
    assert result.ok, result.error
    assert stat.S_IMODE(outside.stat().st_mode) == 0o4755
    assert not (sandbox.ws / "linked").exists()
    assert "linked" in result.output
