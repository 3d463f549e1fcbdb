"""keep_freed_memory: freed tensors stay in the process (glibc)."""
import subprocess
import sys
import textwrap

import pytest

from x3d_plugin.utils.malloc import keep_freed_memory

SCRIPT = textwrap.dedent('''
    import os, sys
    import torch
    from x3d_plugin.utils.malloc import keep_freed_memory

    def rss_mb():
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20

    applied = keep_freed_memory() if sys.argv[1] == 'keep' else False
    before = rss_mb()
    t = torch.empty(100 * 2**20 // 4)
    t.fill_(1.0)                      # touch every page: 100 MiB resident
    touched = rss_mb()
    del t
    after = rss_mb()
    print(applied, round(touched - before), round(after - before))
''')


def _run(mode, env=None):
    import os
    out = subprocess.run([sys.executable, '-c', SCRIPT, mode],
                         capture_output=True, text=True, check=True,
                         env=dict(os.environ, **(env or {})))
    applied, touched, kept = out.stdout.split()
    return applied == 'True', int(touched), int(kept)


@pytest.mark.skipif(not sys.platform.startswith('linux'),
                    reason='glibc malloc thresholds are Linux-only')
def test_freed_tensor_memory_stays_in_the_process():
    applied, touched, kept = _run('default')
    assert not applied
    assert touched >= 95
    assert kept < 10, 'glibc returns a freed 100 MiB block by default'

    applied, touched, kept = _run('keep')
    if not applied:
        pytest.skip('not glibc: keep_freed_memory does nothing here')
    assert touched >= 95
    assert kept >= 95, 'the freed 100 MiB block stays for reuse'


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv('X3D_PLUGIN_KEEP_FREED_MEMORY', '0')
    assert keep_freed_memory() is False
    applied, _, kept = _run('keep', {'X3D_PLUGIN_KEEP_FREED_MEMORY': '0'})
    assert not applied and kept < 10
