"""Running the candidates of a step: each is an ordinary training run
(``tools/train.py`` on the candidate's config), started as its own process,
locally (a pool sized to the machine, the CPU threads split between the
candidates) or as Ray tasks on an existing Ray cluster.

A candidate is a :class:`Job`; running it gives a result dict with the
validation metrics, the wall time, the checkpoint and log paths, or the
error that stopped it. A job can also name a Python function instead of
the training (``evaluate='module:function'``, called with the point and the
work directory, returning metrics): the tests search with a known J that
way, without training.

A trainer cannot outlive the search: it starts through
``candidate_guard.py``, which arms the kernel's parent-death signal
(``PR_SET_PDEATHSIG``) and then becomes the trainer, so a search killed
even by SIGKILL takes its trainers with it (on Ray, a task cancelled with
``force=True`` kills the worker, and the worker's trainer follows). The
guard also locks the candidate (``flock`` on ``<candidate>/train.lock``,
held by the trainer and its data-loader workers): a second trainer on the
same candidate does not start. The guard is a separate program rather
than a ``preexec_fn`` because the local launcher starts trainers from a
thread pool, where ``preexec_fn`` can deadlock.
"""
import contextlib
import fcntl
import glob
import importlib
import json
import os
import os.path as osp
import queue
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Set

from x3d_plugin.utils.fileio import read_last_checkpoint
from . import candidate_guard

GUARD_SCRIPT = candidate_guard.__file__
LOCK_NAME = 'train.lock'


@dataclass
class Job:
    """One candidate to train and evaluate.

    Attributes:
        cid: the candidate's id in the search state (e.g. ``step2-fast``).
        point: the candidate's :class:`~.space.Point` as a dict.
        config: the candidate's config file.
        work_dir: its work directory (logs, checkpoints).
        train_script: ``tools/train.py`` of this checkout.
        threads: CPU threads it may use (``OMP_NUM_THREADS``).
        gpus: GPUs per candidate (0: CPU); more than one trains with
            ``torchrun`` (the ``tools/dist_train.sh`` way).
        evaluate: ``'module:function'`` to call instead of training.
        seed: the run's seed (``tools/train.py --seed``), None: the
            config's.
        env: environment variables of the run (over this process's).
    """
    cid: str
    point: dict
    config: str
    work_dir: str
    train_script: str
    threads: int = 1
    gpus: int = 0
    evaluate: Optional[str] = None
    seed: Optional[int] = None
    env: Dict[str, str] = field(default_factory=dict)


# How often the Ray launcher looks at STOP while it waits.
STOP_POLL_S = 0.5
# Set when this process is asked to stop: no candidate starts after it.
STOP = threading.Event()
_CHILDREN: Set[subprocess.Popen] = set()
_CHILDREN_LOCK = threading.Lock()


def stop_on_sigterm() -> None:
    """On SIGTERM or Ctrl-C (SIGINT), stop starting candidates and stop the
    running ones: local trainers get SIGTERM (they save and exit), Ray
    tasks are cancelled by the launcher. They are recorded as interrupted,
    not failed, and the next run resumes them from their last checkpoints
    (``--resume``). A second Ctrl-C ends the search at once (its trainers
    die with it)."""

    def handler(signum, frame):
        if STOP.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        STOP.set()
        with _CHILDREN_LOCK:
            for child in _CHILDREN:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@contextlib.contextmanager
def candidate_lock(work_dir: str):
    """Hold ``<work_dir>/train.lock`` (yields False when another process
    holds it): the in-process ``evaluate`` path's counterpart of the
    trainer's lock taken by ``candidate_guard.py``."""
    fd = os.open(osp.join(work_dir, LOCK_NAME), os.O_RDWR | os.O_CREAT,
                 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def import_function(path: str) -> Callable:
    """``'package.module:function'`` -> the function."""
    module, _, name = path.partition(':')
    if not module or not name:
        raise ValueError(f'expected "module:function", got {path!r}')
    return getattr(importlib.import_module(module), name)


def latest_val_metrics(work_dir: str) -> Optional[Dict[str, float]]:
    """The last validation record MMEngine's runner logged in
    ``work_dir`` (``<timestamp>/vis_data/scalars.json``; a resumed run
    has several timestamps), or None when it logged none."""
    best_step, found = -1, None
    for path in glob.glob(osp.join(work_dir, '*', 'vis_data',
                                   'scalars.json')):
        with open(path, encoding='utf-8') as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a kill
                if 'acc/top1' in record and record.get('step',
                                                       -1) >= best_step:
                    best_step, found = record.get('step', -1), record
    return found


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            return ''.join(f.readlines()[-lines:])
    except OSError:
        return ''


def _train_command(job: Job) -> List[str]:
    args = [job.config, '--work-dir', job.work_dir, '--resume']
    if job.seed is not None:
        args += ['--seed', str(job.seed)]
    if job.gpus > 1:
        command = [
            # --standalone: a free rendezvous port per candidate.
            sys.executable, '-m', 'torch.distributed.run', '--standalone',
            f'--nproc_per_node={job.gpus}',
            job.train_script, *args, '--launcher', 'pytorch'
        ]
        # torchrun passes SIGTERM on to its workers; SIGKILL would leave
        # them behind.
        death_signal = 'SIGTERM'
    else:
        command = [sys.executable, job.train_script, *args]
        # Nothing is gained by a graceful stop once the search is dead:
        # the trainer resumes from its last checkpoint next time.
        death_signal = 'SIGKILL'
    return [
        sys.executable, GUARD_SCRIPT,
        osp.join(job.work_dir, LOCK_NAME), str(os.getpid()), death_signal,
        '--', *command
    ]


def _busy(job: Job) -> str:
    return (f'another process holds {osp.join(job.work_dir, LOCK_NAME)}: '
            'a trainer of this candidate is still running (a second search '
            'on the same work directory?); stop it or wait for it, then '
            'run the search again')


def run_job(job: Job) -> dict:
    """Train and evaluate one candidate; never raises for a failed run.

    Training restarts with ``--resume``: a candidate whose run was killed
    continues from its last checkpoint.
    """
    os.makedirs(job.work_dir, exist_ok=True)
    log = osp.join(job.work_dir, 'train.log')
    start = time.time()
    result = dict(cid=job.cid, log=log, work_dir=job.work_dir)
    if STOP.is_set():
        return dict(result, interrupted=True)
    if job.evaluate:
        with candidate_lock(job.work_dir) as locked:
            if not locked:
                return dict(result, busy=_busy(job))
            try:
                metrics = import_function(job.evaluate)(job.point,
                                                        job.work_dir)
            except Exception as err:  # a failed candidate is data
                return dict(result, error=f'{type(err).__name__}: {err}',
                            wall_s=time.time() - start)
        return dict(result, metrics=metrics, wall_s=time.time() - start)
    env = dict(os.environ, **job.env)
    threads = str(max(1, job.threads))
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    with open(log, 'a', encoding='utf-8') as out:
        child = subprocess.Popen(_train_command(job), stdout=out,
                                 stderr=subprocess.STDOUT, env=env)
        with _CHILDREN_LOCK:
            _CHILDREN.add(child)
        try:
            code = child.wait()
        finally:
            with _CHILDREN_LOCK:
                _CHILDREN.discard(child)
    result.update(wall_s=time.time() - start,
                  checkpoint=read_last_checkpoint(job.work_dir) or None)
    if STOP.is_set():
        return dict(result, interrupted=True)
    if code == candidate_guard.BUSY:
        return dict(result, busy=_busy(job))
    if code != 0:
        return dict(result, error=f'training exited with code {code}; last '
                    f'lines of {log}:\n{_tail(log)}')
    metrics = latest_val_metrics(job.work_dir)
    if metrics is None:
        return dict(result, error=f'training logged no validation metric '
                    f'(acc/top1) in {job.work_dir}; does the config '
                    'validate (val_dataloader, val_interval)?')
    return dict(result, metrics=metrics)


def progress(job: Job) -> str:
    """The last training progress line of a running candidate's log."""
    for line in reversed(_tail(osp.join(job.work_dir, 'train.log'),
                               40).splitlines()):
        if 'Epoch(train)' in line or 'Epoch(val)' in line:
            return line.split(' - mmengine - INFO - ')[-1][:90]
    return 'starting'


class LocalLauncher:
    """Candidates as processes on this machine, ``parallel`` at a time;
    with ``gpus`` per candidate, each running candidate holds its own
    GPUs (``CUDA_VISIBLE_DEVICES``)."""

    name = 'local'

    def __init__(self, parallel: int, gpus: int = 0):
        self.parallel = max(1, parallel)
        self.gpus = gpus
        self._free = queue.Queue()
        if gpus:
            import torch
            have = torch.cuda.device_count()
            if have < gpus * self.parallel:
                raise RuntimeError(
                    f'{self.parallel} parallel candidates x {gpus} GPUs '
                    f'need {gpus * self.parallel} GPUs, this machine has '
                    f'{have}; lower --parallel or --gpus-per-candidate')
            for slot in range(self.parallel):
                self._free.put(','.join(
                    str(i) for i in range(slot * gpus, (slot + 1) * gpus)))

    def run(self, jobs: List[Job],
            on_progress: Optional[Callable[[Dict[str, str]], None]] = None,
            interval: float = 30.0) -> Iterable[dict]:
        """Yield each job's result as it finishes."""
        with ThreadPoolExecutor(self.parallel) as pool:
            running = {pool.submit(self._run, job): job for job in jobs}
            pending = set(running)
            while pending:
                done, pending = wait(pending, timeout=interval,
                                     return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
                if not done and on_progress:
                    on_progress({running[f].cid: progress(running[f])
                                 for f in pending if f.running()})

    def _run(self, job: Job) -> dict:
        if not self.gpus:
            return run_job(job)
        devices = self._free.get()
        try:
            job.env['CUDA_VISIBLE_DEVICES'] = devices
            return run_job(job)
        finally:
            self._free.put(devices)


# Rounds of ray.cancel and how long each waits for the tasks to end.
CANCEL_ROUNDS = 3
CANCEL_WAIT_S = 30


class RayLauncher:
    """Candidates as Ray tasks on a Ray cluster, each reserving its CPUs
    and GPUs; Ray decides where and when each runs. The work directory
    must be on a file system that every node sees (as for any multi-node
    MMEngine run)."""

    name = 'ray'

    def __init__(self, address: Optional[str] = 'auto', gpus: int = 0,
                 num_cpus: Optional[int] = None):
        try:
            import ray
        except ImportError:
            raise ImportError(
                '--launcher ray needs Ray: pip install "x3d_plugin[ray]" '
                '(or pip install "ray[default]")') from None
        self.ray = ray
        self.gpus = gpus
        if not ray.is_initialized():
            if address == 'local':
                ray.init(num_cpus=num_cpus, include_dashboard=False,
                         log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)

    def run(self, jobs: List[Job],
            on_progress: Optional[Callable[[Dict[str, str]], None]] = None,
            interval: float = 30.0) -> Iterable[dict]:
        """Yield each job's result as it finishes; once :data:`STOP` is
        set, cancel the running tasks (``force=True``: the worker and its
        trainer are killed) and yield them as interrupted."""
        ray = self.ray
        remote = ray.remote(run_job)
        refs = {
            remote.options(num_cpus=job.threads, num_gpus=job.gpus).remote(
                job): job
            for job in jobs
        }
        pending = list(refs)
        last_progress = time.time()
        while pending:
            if STOP.is_set():
                yield from self._cancel(pending, refs)
                return
            done, pending = ray.wait(pending, num_returns=1,
                                     timeout=STOP_POLL_S)
            for ref in done:
                yield ray.get(ref)
            if (on_progress and pending
                    and time.time() - last_progress >= interval):
                last_progress = time.time()
                on_progress({refs[r].cid: progress(refs[r])
                             for r in pending})

    def _cancel(self, pending, refs) -> Iterable[dict]:
        """Cancel the pending tasks until Ray has ended them all. Ray may
        retry a task it was cancelling (ray-project/ray#54260): the retry
        either finds the killed trainer's lock still held and returns at
        once, or starts a new trainer; the first is read as interrupted,
        the second is cancelled in the next round."""
        ray = self.ray
        results = {}
        waiting = list(pending)
        for _ in range(CANCEL_ROUNDS):
            if not waiting:
                break
            for ref in waiting:
                ray.cancel(ref, force=True)
            done, waiting = ray.wait(waiting, num_returns=len(waiting),
                                     timeout=CANCEL_WAIT_S)
            for ref in done:
                results[ref] = self._cancelled_result(ref, refs[ref])
        for ref in pending:
            yield results.get(ref) or dict(cid=refs[ref].cid,
                                           interrupted=True)

    def _cancelled_result(self, ref, job: Job) -> dict:
        try:
            result = self.ray.get(ref, timeout=0)
        except Exception:  # cancelled: TaskCancelledError & co.
            return dict(cid=job.cid, interrupted=True)
        # A task that finished before the cancel is still a result; any
        # other outcome (busy, killed trainer) is the stop's doing.
        if 'metrics' in result:
            return result
        return dict(result, interrupted=True)
