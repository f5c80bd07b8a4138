"""Fresh interpreters for the plugin tests: this environment's Python, no PYTHONPATH to the repository, one
thread, offline. Only the installed autoload hook (and the editable install) can bring basicsr_ext in."""
import os
import subprocess
import sys

from basicsr_ext import autoload

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def child_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', autoload.ENV)}
    env.update(OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1', **extra)
    return env


def run_python(args, cwd, timeout=300, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=str(cwd), env=child_env(**extra), capture_output=True,
                          text=True, timeout=timeout)


def run_ok(args, cwd, timeout=600, **extra) -> subprocess.CompletedProcess:
    out = run_python(args, cwd, timeout=timeout, **extra)
    if out.returncode != 0:
        raise AssertionError(f'{" ".join(map(str, args))} failed ({out.returncode}):\n{out.stdout[-3000:]}\n'
                             f'{out.stderr[-5000:]}')
    return out
