"""The man pages: each command's SYNOPSIS is its usage, its OPTIONS are those of its usage
with the same defaults, its exit statuses are rezina.exitcodes, groff reads every page
without a warning, and an installed rezina has them in share/man."""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig

import pytest

from conftest import TESTS, finish

from rezina import exitcodes

MAN = os.path.join(os.path.dirname(TESTS), 'man')
COMMANDS = ['rz-hydrant', 'rz-notch', 'rz-bocca', 'rz-master', 'rz-worker', 'rz', 'rezina-cli']
PAGES = [f'{name}.1' for name in COMMANDS] + ['rezina.7']
EXIT_SECTIONS = {f'{name}.1': 'EXIT STATUS' for name in COMMANDS}
EXIT_SECTIONS['rezina.7'] = 'ERRORS AND EXIT STATUS'

FONT_MACROS = {'B', 'I', 'SM', 'SB'}                    # arguments joined by spaces
ALTERNATING_MACROS = {'BR', 'RB', 'BI', 'IB', 'IR', 'RI'}  # arguments joined as they are
ESCAPES = {r'\-': '-', r'\e': '\\', r'\&': '', r'\|': '', r'\^': '', r'\ ': ' ',
           r'\(aq': "'", r'\(dq': '"', r'\(lq': '"', r'\(rq': '"', r'\(mu': 'x',
           r'\(bu': '*', r'\(:u': '\u00fc'}
ESCAPE = re.compile(r'\\f(?:\[[^\]]*\]|\(..|.)|\\\(..|\\.')
MACRO_ARGUMENT = re.compile(r'"((?:[^"]|"")*)"|(\S+)')
LONG_OPTION = re.compile(r'--[a-z][a-z-]*')


# the command's usage text

def help_text(procs, name):
    code, out, err = finish(procs.start([name, '--help'], stdout=subprocess.PIPE))
    assert code == exitcodes.OK, err
    return out.decode()


def block(text, heading):
    """The lines after the line `heading` up to the first blank line."""
    lines = text.splitlines()
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]


def usage_lines(text):
    return [line.strip() for line in block(text, 'Usage:')]


def usage_options(text):
    """{long option: its default or None} of the Options table of a usage text."""
    entries = []
    for line in block(text, 'Options:'):
        if line.lstrip().startswith('-'):
            entries.append(line.strip())
        else:
            entries[-1] += ' ' + line.strip()
    options = {}
    for entry in entries:
        spec = re.split(r'\s{2,}', entry, maxsplit=1)[0]
        default = re.search(r'\[default: ([^\]]*)\]', entry)
        for option in LONG_OPTION.findall(spec):
            options[option] = default.group(1) if default else None
    return options


# the man page

def read_page(page):
    with open(os.path.join(MAN, page), encoding='utf-8') as f:
        return f.read()


def sections(source):
    """{section name: its roff lines} of a man page."""
    found, name = {}, None
    for line in source.splitlines():
        if line.startswith('.SH'):
            name = line[3:].strip().strip('"')
            found[name] = []
        elif name is not None:
            found[name].append(line)
    return found


def unescape(text):
    return ESCAPE.sub(lambda m: ESCAPES.get(m.group(0), ''), text)


def plain(line):
    """The text a roff line shows: font macros and escapes removed, other requests empty."""
    if not line.startswith('.'):
        return unescape(line)
    macro, _, rest = line[1:].partition(' ')
    words = [m.group(2) if m.group(1) is None else m.group(1).replace('""', '"')
             for m in MACRO_ARGUMENT.finditer(rest)]
    if macro in FONT_MACROS:
        return unescape(' '.join(words))
    if macro in ALTERNATING_MACROS:
        return unescape(''.join(words))
    return ''


def tagged_entries(lines):
    """[(tag, body)] of the .TP paragraphs in lines, as plain text."""
    entries = []
    for index, line in enumerate(lines):
        if line.startswith('.TP') and index + 1 < len(lines):
            body = []
            for following in lines[index + 2:]:
                if following.startswith(('.TP', '.SH', '.SS', '.PP')):
                    break
                body.append(plain(following))
            entries.append((plain(lines[index + 1]).strip(),
                            re.sub(r'\s+', ' ', ' '.join(body)).strip()))
    return entries


def page_options(page):
    """{long option: the plain text of its OPTIONS entry} of a man page."""
    options = {}
    for tag, body in tagged_entries(sections(read_page(page))['OPTIONS']):
        for option in LONG_OPTION.findall(tag):
            options[option] = body
    return options


# the tests

@pytest.mark.parametrize('name', COMMANDS)
def test_synopsis_is_the_usage_of_the_command(procs, name):
    synopsis = [plain(line).strip() for line in sections(read_page(f'{name}.1'))['SYNOPSIS']]
    assert [line for line in synopsis if line] == usage_lines(help_text(procs, name))


@pytest.mark.parametrize('name', COMMANDS)
def test_options_section_documents_every_option_of_the_usage_and_no_other(procs, name):
    documented = page_options(f'{name}.1')
    assert sorted(documented) == sorted(usage_options(help_text(procs, name)))


@pytest.mark.parametrize('name', COMMANDS)
def test_options_section_states_the_defaults_of_the_usage(procs, name):
    documented = page_options(f'{name}.1')
    for option, default in usage_options(help_text(procs, name)).items():
        if default is not None:
            entry = documented.get(option, '')
            assert f'The default is {default}' in entry, f"{option}: {entry!r}"


@pytest.mark.parametrize('page', PAGES)
def test_exit_statuses_are_those_of_rezina_exitcodes(page):
    lines = sections(read_page(page))[EXIT_SECTIONS[page]]
    statuses = {tag for tag, _ in tagged_entries(lines)}
    assert statuses == {str(code) for code in (exitcodes.OK, exitcodes.FAILED,
                                                exitcodes.USAGE,
                                                exitcodes.DOWNSTREAM_CLOSED)}


@pytest.mark.parametrize('page', PAGES)
def test_groff_reads_the_page_without_a_warning(page):
    if shutil.which('groff') is None:
        pytest.skip('groff is not installed (apt-get install groff), so the pages cannot be '
                    'checked with groff -man -ww -z')
    result = subprocess.run(['groff', '-man', '-ww', '-z', os.path.join(MAN, page)],
                            capture_output=True, text=True, timeout=60)
    assert result.stderr == '', result.stderr
    assert (result.returncode, result.stdout) == (0, '')


@pytest.mark.parametrize('page', PAGES)
def test_pages_are_installed_into_share_man_with_the_package(page):
    records = glob.glob(os.path.join(sysconfig.get_path('purelib'), 'rezina-*.dist-info',
                                     'direct_url.json'))
    assert records, "rezina is not installed in this Python's site-packages"
    with open(records[0], encoding='utf-8') as f:
        if json.load(f).get('dir_info', {}).get('editable'):
            pytest.skip("rezina is installed in editable mode, which installs no man pages")
    section = 'man' + page.rpartition('.')[2]
    path = os.path.join(sys.prefix, 'share', 'man', section, page)
    assert os.path.isfile(path), f"{page} is not installed: no {path}"
