"""Start one candidate's trainer so that it cannot outlive the search or
share its candidate with another trainer (Linux).

Run as a script, never imported by the package (it must start fast and
load nothing)::

    python candidate_guard.py LOCK_FILE PARENT_PID SIGNAL -- COMMAND...

It asks the kernel to send ``SIGNAL`` to this process when its parent
dies (``prctl(PR_SET_PDEATHSIG)``: delivered even when the search is
killed by SIGKILL or the OOM killer), takes an exclusive ``flock`` on
``LOCK_FILE`` (the candidate's ``train.lock``) and then becomes
``COMMAND`` by ``execv``: the trainer keeps this process's id, the death
signal and the lock, and its data-loader workers inherit the lock, so the
candidate stays locked until every process of the trainer is gone.

Exits with :data:`BUSY` when another process holds the lock, and with
:data:`ORPHANED` when the parent died before the death signal was armed.
"""
import ctypes
import ctypes.util
import fcntl
import os
import signal
import sys

BUSY = 75  # sysexits.h EX_TEMPFAIL
ORPHANED = 76
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def arm_death_signal(signum: int) -> bool:
    """``prctl(PR_SET_PDEATHSIG, signum)``; False where there is none."""
    if not sys.platform.startswith('linux'):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6',
                       use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), 'prctl(PR_SET_PDEATHSIG) failed')
    return True


def main(argv):
    lock_file, parent, signame, separator, *command = argv
    if separator != '--' or not command:
        sys.exit('usage: candidate_guard.py LOCK_FILE PARENT_PID SIGNAL -- '
                 'COMMAND...')
    arm_death_signal(getattr(signal, signame))
    # The parent may have died between fork and prctl: then no signal
    # comes and this process was handed to init or a subreaper.
    if os.getppid() != int(parent):
        sys.exit(ORPHANED)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors='replace').strip()
        print(f'{lock_file} is held by process {holder or "?"}: another '
              'trainer runs this candidate (a second search on the same '
              'work directory?); stop it or wait for it before running '
              'this search again', file=sys.stderr, flush=True)
        sys.exit(BUSY)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
    os.set_inheritable(fd, True)
    os.execv(command[0], command)


if __name__ == '__main__':
    main(sys.argv[1:])
