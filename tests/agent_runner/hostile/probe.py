"""Run INSIDE an agent command (the policy names `python3 scripts/probe.py *`): it tries to get out
and writes what it managed into probe-out/<name>.txt, in the workspace, which the runner commits and
pushes. The tests read those files and the machine around them. Never run directly."""

import os
import socket
import subprocess
import sys
import time


def report(name: str, lines: list[str]) -> None:
    os.makedirs("probe-out", exist_ok=True)
    with open(os.path.join("probe-out", f"{name}.txt"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


def attempt(label: str, action) -> str:
    try:
        action()
        return f"{label}: DONE"
    except Exception as exc:  # noqa: BLE001 — what stopped it is the point
        return f"{label}: blocked ({type(exc).__name__})"


def write(path: str, text: str = "pwned\n", mode: str = "w") -> None:
    with open(path, mode) as fh:
        fh.write(text)


def main() -> None:
    what, args = sys.argv[1], sys.argv[2:]
    if what == "write-outside":
        sentinel, marker = os.path.join("..", "..", "sentinel"), os.path.join("/tmp", args[0])
        report(
            what,
            [
                attempt("sentinel", lambda: write(os.path.join(sentinel, "pwned"))),
                attempt("sentinel-file", lambda: write(os.path.join(sentinel, "secret.txt"), "owned\n", "a")),
                attempt("tmp-marker", lambda: write(marker)),
                attempt("git-config", lambda: write(".git/config", "[core]\n\tfsmonitor = id\n", "a")),
                attempt("git-hook", lambda: write(".git/hooks/pre-commit", "#!/bin/sh\nid\n")),
                attempt(
                    "git-hook-via-link", lambda: (os.symlink(".git/hooks", "hooklink"), write("hooklink/post-checkout"))
                ),
                attempt("etc", lambda: write(os.path.join("/etc", args[0]))),
                attempt("usr", lambda: write(os.path.join("/usr/local/bin", args[0]))),
            ],
        )
    elif what == "environ":
        seen = []
        try:
            pids = sorted(p for p in os.listdir("/proc") if p.isdigit())
        except OSError as exc:
            pids = []
            seen.append(f"/proc: unreadable ({type(exc).__name__})")
        for pid in pids:
            try:
                with open(f"/proc/{pid}/environ", "rb") as fh:
                    seen.append(f"{pid}: " + fh.read().replace(b"\0", b" ").decode(errors="replace"))
            except OSError as exc:
                seen.append(f"{pid}: unreadable ({type(exc).__name__})")
        report(what, [f"pids: {len(pids)}", *seen])
    elif what == "net":
        host, port = args[0], int(args[1])
        report(what, [attempt("tcp", lambda: socket.create_connection((host, port), timeout=3).close())])
    elif what == "survive":
        how, marker = args
        child = [sys.executable, "-c", "import time; time.sleep(120)", marker]
        if how == "setsid":
            subprocess.Popen(child, start_new_session=True)
        elif how == "double-fork":
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    os.execv(sys.executable, child)
                os._exit(0)
            os.wait()
        else:
            subprocess.Popen(["nohup", *child], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.2)
        report(f"{what}-{how}", ["started"])
    elif what == "kill":
        pid = int(args[0])
        report(what, [attempt("kill", lambda: os.kill(pid, 9))])
    elif what == "nofile":
        handles = []
        try:
            for _ in range(5000):
                handles.append(open(__file__))  # noqa: SIM115 — kept open for the life of the probe
        except OSError:
            pass
        count = len(handles)
        for handle in handles:
            handle.close()
        report(what, [f"opened: {count}"])
    elif what == "home":
        report(
            what,
            [
                f"home: {os.environ.get('HOME', '')}",
                attempt("gitconfig", lambda: write(os.path.expanduser("~/.gitconfig"), "[alias]\n\tst = !id\n")),
            ],
        )


if __name__ == "__main__":
    main()
