"""The example jobs, run as a user runs them (on a small share of their data)."""

import os
import subprocess
import sys

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'examples')


def run_example(args, tmp_path):
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ['PATH'])
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


def test_weather_job_stores_every_city_once(tmp_path):
    done = run_example([os.path.join(EXAMPLES, 'weather', 'run.py'), '--limit', '300',
                        '--delay', '0.05', '--db', 'w.db'], tmp_path)
    assert done.returncode == 0, done.stderr
    assert 'cities stored: 300 of 300 (300 rows)' in done.stdout
    assert str(tmp_path / 'w.db') in done.stdout


def test_filehash_job_hashes_every_file(tmp_path):
    tree = tmp_path / 'tree'
    (tree / 'sub').mkdir(parents=True)
    for i in range(30):
        (tree / ('sub' if i % 2 else '') / f'f{i}.txt').write_text('line\n' * i)
    done = run_example([os.path.join(EXAMPLES, 'filehash', 'run.py'), str(tree), '--db',
                        'h.db'], tmp_path)
    assert done.returncode == 0, done.stderr
    assert 'files hashed:  30 of 30' in done.stdout
