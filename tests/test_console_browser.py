"""The web console in a real browser (headless Chromium driven by chromedriver) against a
real rz-master with two rz-workers: its pages show what the master knows and keep up with
it, an action with the token changes the master, and one without the token is refused."""

import http.client
import os
import shutil

import pytest

import fixtures_cluster as ws
from conftest import TESTS, wait_for
from rezina import TypologyBuilder
from rezina.control.http import HttpApi

pytestmark = pytest.mark.timeout(120)

CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
CHROMEDRIVER = shutil.which('chromedriver') or '/usr/bin/chromedriver'
FILES = os.path.join(os.path.dirname(TESTS), 'rezina', 'control', 'console_files')
DOCS = os.path.join(os.path.dirname(TESTS), 'docs')
HOSTILE = '<img src=x onerror=alert(1)>&amp;'      # a typology name that is not HTML
CHROMIUM_FLAGS = ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
                  '--no-first-run', '--disable-background-networking',
                  '--disable-component-update', '--disable-sync', '--window-size=1400,1000')


@pytest.fixture
def browser(tmp_path):
    """A headless Chromium through chromedriver; both are stopped after the test."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip('selenium is not installed (it is in the test extra)')
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.skip(f'{path} is not installed (tests/debian-packages.sh installs it)')
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    for flag in (*CHROMIUM_FLAGS, f'--user-data-dir={tmp_path / "chromium-profile"}'):
        options.add_argument(flag)
    service = Service(CHROMEDRIVER, log_output=str(tmp_path / 'chromedriver.log'))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            process = service.process
            if process is not None and process.poll() is None:
                process.kill()          # by its pid: quit() did not end it
                process.wait(timeout=10)


class Page:
    """What the browser shows, read in one script call each (the console redraws its
    tables every poll, so an element found in one call may be gone by the next)."""

    def __init__(self, driver, base):
        self.driver = driver
        self.base = base

    def open(self, route=''):
        self.driver.get(f'{self.base}/#/{route}')

    def text(self, css):
        return self.driver.execute_script(
            'const e = document.querySelector(arguments[0]); return e ? e.textContent : null',
            css)

    def texts(self, css):
        return self.driver.execute_script(
            'return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent)',
            css)

    def value(self, css):
        return self.driver.execute_script(
            'const e = document.querySelector(arguments[0]); return e ? e.value : null', css)

    def count(self, css):
        return self.driver.execute_script(
            'return document.querySelectorAll(arguments[0]).length', css)

    def number(self, css):
        text = (self.text(css) or '').strip()
        return int(text) if text.isdigit() else None

    def shows(self, predicate, what, timeout=15):
        wait_for(predicate, timeout=timeout, what=f'the console to show {what}')

    def click(self, css):
        self.driver.execute_script('document.querySelector(arguments[0]).click()', css)

    def type_into(self, css, text):
        element = self.driver.find_element('css selector', css)
        element.clear()
        element.send_keys(text)

    def confirm(self):
        """Accept the confirmation the page asks for; return its question."""
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait
        alert = WebDriverWait(self.driver, 5).until(expected_conditions.alert_is_present())
        question = alert.text
        alert.accept()
        return question

    def screenshot(self, tmp_path, name):
        """Save the whole page as tmp_path/NAME, and as docs/NAME for the README."""
        height = self.driver.execute_script('return document.documentElement.scrollHeight')
        self.driver.set_window_size(1400, min(max(height + 20, 500), 2600))
        path = tmp_path / name
        self.driver.save_screenshot(str(path))
        if os.path.isdir(DOCS):
            shutil.copy(path, os.path.join(DOCS, name))
        self.driver.set_window_size(1400, 1000)


def stage_nodes(cluster, typology, stage):
    """(nodes the master wants for stage, nodes it has placed)."""
    [wanted] = [s['nodes'] for s in cluster.request('stages', typology=typology)
                if s['stage'] == stage]
    return wanted, len(cluster.nodes(typology, stage))


def test_the_console_shows_the_cluster_live_and_acts_only_with_the_token(cluster, browser,
                                                                        tmp_path):
    (TypologyBuilder('127.0.0.1', cluster.port, 'weather')
     .add_hydrant(ws.numbers, args=(7,))
     .add_notch(ws.picky, 1, 2)
     .add_bocca(f"sqlite:{tmp_path / 'out.db'}")).start(interval=1)
    (TypologyBuilder('127.0.0.1', cluster.port, HOSTILE)
     .add_hydrant(ws.numbers, args=(3,))
     .add_notch(ws.record, 1, 1)
     .add_bocca(f"sqlite:{tmp_path / 'hostile.db'}")).start()
    cluster.wait_running('weather', count=3)
    page = Page(browser, f'http://127.0.0.1:{cluster.http_port}')

    # typologies: both listed, the hostile name as text, not as markup
    page.open('typologies')
    page.shows(lambda: 'RUNNING' in (page.text('tr[data-typology="weather"]') or ''),
               'weather RUNNING')
    page.shows(lambda: page.count('tbody tr') == 2, 'both typologies')
    assert HOSTILE in page.text('tbody')
    assert page.count('main img') == 0
    assert 'every 1 s' in page.text('tr[data-typology="weather"]')
    page.shows(lambda: page.number('tr[data-typology="weather"] [data-field="items"]') == 7,
               "the last run's 7 items")
    page.screenshot(tmp_path, 'console-typologies.png')

    # workers: both online, with their slots
    page.open('workers')
    page.shows(lambda: page.count('tr[data-worker]') == 2, 'two workers')
    assert page.text('tbody').count('ONLINE') == 2
    assert sorted(page.texts('[data-field=address]')) == ['127.0.0.2', '127.0.0.3']
    page.screenshot(tmp_path, 'console-workers.png')

    # one typology: its stages and nodes, counters that rise, runs, failures, log
    page.open('typology/weather')
    counted = 'tr[data-node="picky#0"] [data-field="items_in"]'
    page.shows(lambda: page.number(counted), "picky#0's items in")
    first = page.number(counted)
    page.shows(lambda: page.number(counted) > first, 'items in rising', timeout=10)
    assert page.count('.stage canvas.chart') == 3
    page.shows(lambda: page.count('.runs tbody tr') >= 2, 'the run history')
    # picky fails on multiples of 3: the master lists each failed item, as its node said
    page.shows(lambda: 'is a multiple of 3' in (page.text('.failed-items') or ''),
               'a failed item and its error')
    shown = page.texts('.failed-items td[data-field="id"]')
    known = {f['id']: f for f in cluster.request('failures', typology='weather', limit=200)}
    assert shown and set(shown) <= set(known)
    assert all(int(item.rpartition(':')[2]) % 3 == 0 for item in shown)
    assert 'ValueError' in page.text('.failed-items')
    assert page.text('.failed-items tbody tr td[data-field="node"]') == 'picky#0'
    page.shows(lambda: 'first run at' in (page.text('pre.log') or ''), 'the log')

    # scale without the token: refused, and the error shown; the master unchanged
    assert page.text('#token-state') == 'none: actions are refused'
    page.shows(lambda: page.value('form.scale select') == 'picky', 'the scale form')
    assert page.texts('form.scale select option') == ['picky', 'sqlite']   # no hydrant
    page.type_into('form.scale input[name=n]', '2')
    page.click('form.scale button')
    assert page.confirm() == 'Scale stage picky of weather to 2 nodes?'
    page.shows(lambda: 'refused' in (page.text('.outcome') or ''), 'the refusal')
    assert "'Authorization: Bearer TOKEN'" in page.text('.outcome .error')
    assert stage_nodes(cluster, 'weather', 'picky') == (1, 1)

    # with the master's token (kept in the tab's sessionStorage): scaled
    page.type_into('#token', (cluster.state / 'token').read_text().strip())
    assert page.text('#token-state') == 'kept for this tab'
    page.type_into('form.scale input[name=n]', '2')
    page.click('form.scale button')
    page.confirm()
    page.shows(lambda: 'from 1 to 2 nodes' in (page.text('.outcome .ok') or ''),
               'the scale done')
    wait_for(lambda: stage_nodes(cluster, 'weather', 'picky') == (2, 2), timeout=10,
             what='the master to place 2 picky nodes')
    page.shows(lambda: page.count('tr[data-node^="picky#"]') == 2, 'two picky nodes')
    cluster.wait_running('weather', 'picky', count=2, timeout=15)
    page.shows(lambda: 'RUNNING' in (page.text('tr[data-node="picky#1"]') or ''),
               'picky#1 RUNNING')
    page.screenshot(tmp_path, 'console-typology.png')

    # nothing went wrong in the page (a script error, a CSP violation) but the refusal
    errors = [entry['message'] for entry in browser.get_log('browser')
              if entry['level'] == 'SEVERE' and 'status of 401' not in entry['message']]
    assert errors == []


@pytest.fixture
def pages():
    """An HTTP API on a loopback port of its own; serving the console's files asks
    nothing of a master, so none is there."""
    api = HttpApi('127.0.0.1', 0, '127.0.0.1', 1, 'token-of-the-test').start()
    yield api
    api.close()


def get(api, path):
    """(status, content type, body) of a GET of path."""
    connection = http.client.HTTPConnection(*api.address, timeout=10)
    try:
        connection.request('GET', path)
        response = connection.getresponse()
        return response.status, response.headers['Content-Type'], response.read()
    finally:
        connection.close()


@pytest.mark.parametrize('path, content_type, file', [
    ('/', 'text/html; charset=utf-8', 'index.html'),
    ('/index.html', 'text/html; charset=utf-8', 'index.html'),
    ('/console/', 'text/html; charset=utf-8', 'index.html'),
    ('/console/app.js', 'text/javascript; charset=utf-8', 'app.js'),
    ('/console/style.css', 'text/css; charset=utf-8', 'style.css'),
])
def test_the_console_is_served_from_the_files_in_the_package(pages, path, content_type,
                                                              file):
    status, served_type, body = get(pages, path)
    with open(os.path.join(FILES, file), 'rb') as f:
        assert (status, served_type, body) == (200, content_type, f.read())


@pytest.mark.parametrize('path', [
    '/console/../web.py', '/console/%2e%2e/web.py', '/console/..%2fweb.py',
    '/console/%2e%2e%2f%2e%2e%2fsetup.cfg', '/console/..%5cweb.py', '/console/%00app.js',
    '/console/.hidden.js', '/console/nothere.js', '/console/index.htm', '/console/app.js/',
    '/console//etc/passwd.css', '/web.py', '/favicon.ico', '/console/%2fetc%2fpasswd',
])
def test_a_path_outside_the_console_files_is_404(pages, path):
    status, served_type, body = get(pages, path)
    assert (status, served_type) == (404, 'application/json'), body
    assert b'no such path' in body
