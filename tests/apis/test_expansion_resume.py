"""The expansion search (tools/expand.py) as a process: a resume is the
same search (a changed setting, criterion, seed or data list is refused),
J comes from a split held out of the training list, a killed search
leaves no trainer behind and one trainer at most runs a candidate, and on
Ray a stop (SIGTERM, Ctrl-C) cancels the running tasks and their
trainers."""
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT
from x3d_plugin.apis.expansion import Job, Point
from x3d_plugin.apis.expansion.data import read_list, split_held_out
from x3d_plugin.apis.expansion.launchers import LOCK_NAME, run_job
from x3d_plugin.apis.expansion.search import SearchError, SearchState

sys.path.insert(0, str(ROOT / 'tests' / 'apis'))
import expansion_synthetic  # noqa: E402

DEMO = ROOT / 'configs' / 'expand' / 'x3d_expand_demo.py'
FAKE_TRAIN = str(ROOT / 'tests' / 'apis' / 'expansion_fake_train.py')


def tool_env(**extra):
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), str(ROOT / 'tests' / 'apis')]), **extra)


def expand(config, work, *args, env=None, timeout=300):
    command = [sys.executable, str(ROOT / 'tools' / 'expand.py'),
               str(config), '--work-dir', str(work), *args]
    return subprocess.run(command, env=env or tool_env(),
                          capture_output=True, text=True, timeout=timeout)


def evaluations(work):
    path = work / 'evaluations.log'
    return path.read_text().split() if path.exists() else []


@pytest.mark.slow
def test_a_changed_setting_or_data_list_is_refused_on_resume(tmp_path):
    config = expansion_synthetic.write_config(tmp_path, DEMO, steps=1)
    work = tmp_path / 'work'
    first = expand(config, work)
    assert first.returncode == 0, first.stdout + first.stderr
    assert len(evaluations(work)) == 7  # the start and six axes
    # The same command again: the same search, nothing evaluated again.
    again = expand(config, work)
    assert again.returncode == 0, again.stderr
    assert len(evaluations(work)) == 7
    # Every change is named (one run with five of them).
    refused = expand(config, work, '--criterion', 'top1_per_doubling',
                     '--seed', '3', '--val-ratio', '0.3', '--target-gflops',
                     '0.002', '--cfg-options', 'train_cfg.max_epochs=2')
    assert refused.returncode != 0
    for named in ('criterion ("top1" -> "top1_per_doubling")',
                  'seed (0 -> 3)', 'held-out ratio (0.15 -> 0.3)',
                  'target_gflops (null -> 0.002)', 'proxy schedule'):
        assert named in refused.stderr, (named, refused.stderr)
    assert '--work-dir' in refused.stderr
    assert '--reuse-results' in refused.stderr
    assert 'base config' not in refused.stderr
    train_list = tmp_path / 'lists' / 'train_list.txt'
    train_list.write_text(train_list.read_text() + 'videos/x.mp4 3\n')
    refused = expand(config, work)
    assert refused.returncode != 0
    assert 'training list changed' in refused.stderr
    assert len(evaluations(work)) == 7
    # Asked to, it reuses the J and records the new fingerprint.
    reused = expand(config, work, '--reuse-results')
    assert reused.returncode == 0, reused.stderr
    assert '--reuse-results: keeping the J of 7' in reused.stdout
    assert len(evaluations(work)) == 7
    assert expand(config, work).returncode == 0


def test_a_state_of_another_search_names_every_change(tmp_path):
    path = str(tmp_path / 'state.json')
    state = SearchState(path, {'seed': dict(sha256='a', value='0'),
                               'training list': dict(sha256='b')})
    state.candidates['start'] = dict(cid='start', J=1.0)
    state.save()
    with pytest.raises(SearchError, match=r'seed \(0 -> 1\); training list '
                       'changed'):
        SearchState(path, {'seed': dict(sha256='c', value='1'),
                           'training list': dict(sha256='d')})
    same = SearchState(path, {'seed': dict(sha256='a', value='0'),
                              'training list': dict(sha256='b')})
    assert same.reused == [] and 'start' in same.candidates


def test_j_is_measured_on_a_split_held_out_of_the_training_list(tmp_path):
    config = expansion_synthetic.write_config(tmp_path, DEMO, steps=1)
    work = tmp_path / 'work'
    done = expand(config, work, '--val-ratio', '0.3', '--axes', 'depth')
    assert done.returncode == 0, done.stdout + done.stderr
    from mmengine.config import Config
    lists = tmp_path / 'lists'
    train_list = read_list(str(lists / 'train_list.txt'))
    test_list = read_list(str(lists / 'test_list.txt'))
    for cid in ('start', 'step1-depth'):
        cfg = Config.fromfile(str(work / 'candidates' / cid / 'config.py'))
        trained = read_list(cfg.train_dataloader.dataset.ann_file)
        held = read_list(cfg.val_dataloader.dataset.ann_file)
        assert cfg.val_dataloader.dataset.ann_file == str(
            work / 'data' / 'held_out.txt')
        # Three of each class's ten training videos, none trained on and
        # none of the test list.
        assert len(held) == 24 and len(trained) == 56
        assert sorted(held + trained) == sorted(train_list)
        assert not set(held) & set(trained)
        assert not set(held) & set(test_list)
        assert sorted(line.split()[1] for line in held) == sorted(
            str(c) for c in range(8) for _ in range(3))
        assert (cfg.val_dataloader.dataset.data_prefix ==
                cfg.train_dataloader.dataset.data_prefix)
    # The final network trains on the whole training list.
    final = Config.fromfile(str(work / 'final_config.py'))
    assert final.train_dataloader.dataset.ann_file == str(
        lists / 'train_list.txt')
    # Measuring J on the config's validation list, here its test list, is
    # refused.
    refused = expand(config, tmp_path / 'other', '--val-ratio', '0')
    assert refused.returncode != 0
    assert 'also the test list' in refused.stderr


def test_the_held_out_split_is_seeded_and_per_class():
    lines = [f'v{i}.mp4 {i % 4}' for i in range(40)] + ['lone.mp4 9']
    train, held = split_held_out(lines, 0.2, seed=0)
    assert split_held_out(lines, 0.2, seed=0) == (train, held)
    assert split_held_out(lines, 0.2, seed=1)[1] != held
    # Two of each class of ten; a class of one stays in training.
    assert sorted(line.split()[1] for line in held) == [
        '0', '0', '1', '1', '2', '2', '3', '3']
    assert 'lone.mp4 9' in train
    with pytest.raises(ValueError, match=r'in \(0, 1\)'):
        split_held_out(lines, 1.0, seed=0)


def trainers_of(folder):
    """Pids of live fake trainers whose command line names ``folder``."""
    found = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/cmdline', 'rb') as f:
                command = f.read().decode(errors='replace')
            with open(f'/proc/{entry}/stat') as f:
                state = f.read().rsplit(')', 1)[1].split()[0]
        except OSError:
            continue
        if FAKE_TRAIN in command and str(folder) in command and \
                state != 'Z':
            found.append(int(entry))
    return found


def wait_for(condition, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    return condition()


def state_of(work):
    try:
        return json.loads(
            (work / 'search_state.json').read_text())['candidates']
    except (OSError, json.JSONDecodeError, KeyError):
        return {}


@pytest.mark.slow
def test_sigkill_of_the_search_leaves_no_trainer_alive(tmp_path):
    """Trainers start through the guard (parent-death signal): killing the
    search with SIGKILL kills them; the next run reuses every finished
    candidate."""
    config = expansion_synthetic.write_config(
        tmp_path, DEMO, steps=1, train_script=FAKE_TRAIN,
        axes=['depth', 'width', 'bottleneck'])
    work = tmp_path / 'work'
    command = [sys.executable, str(ROOT / 'tools' / 'expand.py'),
               str(config), '--work-dir', str(work), '--parallel', '2']
    env = tool_env(SYNTHETIC_SLEEP='5')
    search = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        # The start finished, two trainers of step 1 running.
        assert wait_for(lambda: len(state_of(work)) >= 1 and
                        len(trainers_of(work)) == 2), 'no trainers seen'
        running = trainers_of(work)
    finally:
        search.send_signal(signal.SIGKILL)
        search.wait()
    finished = set(state_of(work))
    assert wait_for(lambda: not trainers_of(work), timeout=10), (
        f'trainers {trainers_of(work)} outlived the search')
    assert len(running) == 2
    again = subprocess.run(command, env=tool_env(), capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    log = evaluations(work)
    for cid in finished:
        assert log.count(cid) == 1, (cid, log)
        assert f'{cid}: already evaluated' in again.stdout
    assert set(log) == set(state_of(work))


def test_a_second_trainer_on_a_candidate_is_refused(tmp_path):
    folder = tmp_path / 'search' / 'candidates' / 'step1-depth'
    folder.mkdir(parents=True)
    config = expansion_synthetic.write_config(tmp_path, DEMO)
    from mmengine.config import Config
    from x3d_plugin.apis.expansion import point_config
    point = Point(1, 8, 32, depth_factor=2.2)
    point_config(Config.fromfile(str(config)), point).dump(
        str(folder / 'config.py'))
    job = Job('step1-depth', point.to_dict(), str(folder / 'config.py'),
              str(folder), FAKE_TRAIN)
    with open(folder / LOCK_NAME, 'w') as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write('12345\n')
        held.flush()
        result = run_job(job)
    assert 'another process holds' in result['busy']
    assert 'held by process 12345' in (folder / 'train.log').read_text()
    assert not (folder / 'trainer.pid').exists()
    # Free, it trains.
    result = run_job(job)
    assert 'busy' not in result and 'error' not in result, result
    assert result['metrics']['acc/top1'] == pytest.approx(
        expansion_synthetic.synthetic_j(point.to_dict()))


def test_a_second_search_on_the_same_work_dir_is_refused(tmp_path):
    config = expansion_synthetic.write_config(tmp_path, DEMO, steps=1)
    work = tmp_path / 'work'
    work.mkdir()
    with open(work / 'search.lock', 'w') as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write('4242\n')
        held.flush()
        refused = expand(config, work)
    assert refused.returncode != 0
    assert 'another search (process 4242) runs in' in refused.stderr
    assert not (work / 'search_state.json').exists()


@pytest.mark.slow
def test_a_stop_cancels_the_ray_tasks_and_their_trainers(tmp_path):
    """On a local Ray instance (still up after the stop), the launcher
    asked to stop (what SIGTERM and Ctrl-C do) cancels its running tasks:
    they come back as interrupted and no trainer of theirs runs on."""
    pytest.importorskip('ray')
    import ray
    from mmengine.config import Config
    from x3d_plugin.apis.expansion import RayLauncher, point_config
    from x3d_plugin.apis.expansion.launchers import STOP
    config = expansion_synthetic.write_config(tmp_path, DEMO)
    jobs = []
    for cid, point in (('step1-depth', Point(1, 8, 32, depth_factor=2.2)),
                       ('step1-width', Point(1, 8, 32, width_factor=2.0))):
        folder = tmp_path / 'search' / 'candidates' / cid
        folder.mkdir(parents=True)
        point_config(Config.fromfile(str(config)), point).dump(
            str(folder / 'config.py'))
        jobs.append(Job(cid, point.to_dict(), str(folder / 'config.py'),
                        str(folder), FAKE_TRAIN,
                        env=dict(SYNTHETIC_SLEEP='600')))
    launcher = RayLauncher('local', num_cpus=2)
    try:
        results = launcher.run(jobs, interval=0.5)
        seen = []

        def progress():
            seen.extend(trainers_of(tmp_path))
            return len(set(seen)) == 2

        # The launcher's generator blocks this thread until a result or
        # the stop; another thread sets the stop once both trainers run.
        stopper = threading.Thread(
            target=lambda: wait_for(progress, timeout=240) and STOP.set())
        stopper.start()
        out = list(results)
        stopper.join()
        assert len(set(seen)) == 2, 'the trainers did not start on Ray'
        assert sorted(r['cid'] for r in out) == ['step1-depth',
                                                 'step1-width']
        assert all(r.get('interrupted') for r in out), out
        assert ray.is_initialized()
        assert wait_for(lambda: not trainers_of(tmp_path), timeout=30), (
            f'trainers {trainers_of(tmp_path)} outlived the cancel')
    finally:
        STOP.clear()
        ray.shutdown()


class _RetryingRay:
    """Ray's task API as ``RayLauncher._cancel`` uses it, with the race of
    ray-project/ray#54260: the first cancel of ``retried`` lets Ray run it
    again; the retry returns ``first_retry`` (``None``: it keeps running
    until cancelled once more)."""

    class Cancelled(Exception):
        pass

    def __init__(self, retried, first_retry):
        self.retried, self.first_retry = retried, first_retry
        self.cancels = {}
        self.outcome = {}

    def cancel(self, ref, force):
        assert force
        self.cancels[ref] = self.cancels.get(ref, 0) + 1
        if ref in self.outcome:  # finished: nothing to cancel
            return
        if ref == self.retried and self.cancels[ref] == 1:
            if self.first_retry is not None:
                self.outcome[ref] = self.first_retry
        else:
            self.outcome[ref] = self.Cancelled()

    def wait(self, refs, num_returns, timeout):
        done = [r for r in refs if r in self.outcome]
        return done, [r for r in refs if r not in self.outcome]

    def get(self, ref, timeout):
        outcome = self.outcome[ref]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


@pytest.mark.parametrize('first_retry', [
    dict(cid='a', wall_s=0.1, busy='another process holds the lock'),
    None,
])
def test_a_task_ray_retries_while_cancelling_is_cancelled_again(first_retry):
    """A retry of a cancelled task that found the killed trainer's lock
    still held is reported as interrupted, not busy; a retry that started
    a trainer is cancelled again; a task that had finished keeps its
    result."""
    from x3d_plugin.apis.expansion import RayLauncher
    launcher = RayLauncher.__new__(RayLauncher)
    launcher.ray = _RetryingRay('ref-a', first_retry)
    launcher.ray.outcome['ref-c'] = dict(cid='c', metrics={'acc/top1': 0.5})
    refs = {f'ref-{c}': Job(c, {}, 'config.py', f'work/{c}', FAKE_TRAIN)
            for c in 'abc'}
    out = list(launcher._cancel(['ref-a', 'ref-b', 'ref-c'], refs))
    assert [r['cid'] for r in out] == ['a', 'b', 'c']
    assert out[0]['interrupted'] and out[1]['interrupted']
    assert out[2] == dict(cid='c', metrics={'acc/top1': 0.5})
    assert launcher.ray.cancels['ref-a'] == (1 if first_retry else 2)
