"""A stand-in for 3D Slicer's ``PythonSlicer``, which is CTK's AppLauncher, for the Stop/Cancel tests.

It is *not* CTK's launcher; it reproduces what of its behaviour matters to a parent that wants to stop
the real interpreter, as read in commontk/AppLauncher (``Main.cpp``, ``Base/ctkAppLauncher.cpp``):

- the launcher starts the real program as its own child (``QProcess::start`` in ``runProcess``). The
  child is not put into a new session or process group: it shares the launcher's;
- output channels are forwarded (``QProcess::ForwardedChannels``): the child writes straight into the
  stdout/stderr the launcher inherited, i.e. the parent's pipes;
- the launcher installs no signal handlers and forwards no signal to the child. A SIGTERM/SIGINT sent to
  the launcher takes the default action on the launcher alone: it dies, and the child runs on as an
  orphan that still holds the parent's pipes;
- otherwise it waits for the child and exits with the child's exit code (``applicationFinished``;
  ``EXIT_FAILURE`` when the child crashed, i.e. died of a signal).

``--ignore-signals`` gives a variant that ignores SIGTERM/SIGINT instead of dying (it still forwards
nothing), so a test can cover a launcher that survives the signal as well.

Usage, like ``PythonSlicer ARGS``: ``python ctk_launcher_standin.py [--child-pid-file F]
[--ignore-signals] [--] ARGS...`` runs ``sys.executable ARGS...``; ``--child-pid-file`` writes the real
child's pid to F (for the tests' orphan checks).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def main(argv: list[str]) -> int:
    pid_file = None
    ignore = False
    while argv and argv[0] in ("--child-pid-file", "--ignore-signals", "--"):
        option = argv.pop(0)
        if option == "--":
            break
        if option == "--child-pid-file":
            pid_file = argv.pop(0)
        else:
            ignore = True
    # No new session or group, inherited stdout/stderr (forwarded channels), default signals in the child
    # (started before the launcher changes its own dispositions: an ignored signal would be inherited).
    child = subprocess.Popen([sys.executable, *argv])
    # A C++ program's default dispositions: SIGINT kills too (Python's default would raise KeyboardInterrupt).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN if ignore else signal.SIG_DFL)
    if pid_file:
        with open(pid_file + ".tmp", "w") as f:
            f.write(str(child.pid))
        os.replace(pid_file + ".tmp", pid_file)
    code = child.wait()
    return 1 if code < 0 else code  # a child killed by a signal: CTK reports a crash and exits with EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
