"""The PHP unserialize parser, session decoders and php.ini reader (domain/phpserial.py,
domain/phpini.py), against PHP's own serialize() and session_decode() (php-cli)."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phpfix import php_binary, php_serialize, php_session_dir, php_write_sessions
from sessionctl.domain.errors import SessionctlError
from sessionctl.domain.phpini import (
    IniError,
    parse_ini,
    parse_save_path,
    session_settings,
)
from sessionctl.domain.phpserial import (
    CLASS_KEY,
    PhpCustom,
    PhpEnum,
    PhpFormatError,
    PhpObject,
    PhpRecursion,
    decode_session,
    session_data,
    to_data,
    unserialize,
)

# JSON values as json_decode(..., true) gives them to PHP: dict keys that are not integers in
# PHP's sense (PHP turns "5" into the key 5), floats that survive the round trip.
_KEY = st.text(alphabet='abcdefghij_é|;:"{}x ', min_size=1, max_size=8).filter(
    lambda k: not k.lstrip("-").isdigit()
)
_SCALAR = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False, width=64)
    | st.text(max_size=20)
)
_VALUE = st.recursive(
    _SCALAR,
    lambda inner: (
        st.lists(inner, min_size=1, max_size=4)
        | st.dictionaries(_KEY, inner, min_size=1, max_size=4)
    ),
    max_leaves=25,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(_VALUE, min_size=1, max_size=30))
def test_parser_reads_back_what_php_serialize_wrote(php_cli, values):
    for value, raw in zip(values, php_serialize(values), strict=True):
        parsed = to_data(unserialize(raw))
        assert parsed == value or (
            # -0.0 == 0.0 in Python; keep the sign check honest
            json.dumps(parsed) == json.dumps(value)
        ), (value, raw)


def test_objects_stay_class_name_and_fields_never_instantiated():
    raw = (
        b'a:3:{s:1:"o";O:7:"Evil\\Cl":3:{s:2:"id";i:5;s:6:"\x00*\x00pro";b:1;'
        b's:12:"\x00Evil\\Cl\x00pri";N;}'
        b's:1:"c";C:11:"ArrayObject":21:{x:i:0;a:0:{};m:a:0:{}}'
        b's:1:"e";E:11:"Suit:Hearts";}'
    )
    value = unserialize(raw)
    assert isinstance(value["o"], PhpObject) and value["o"].class_name == "Evil\\Cl"
    assert value["o"] == {"id": 5, "\x00*\x00pro": True, "\x00Evil\\Cl\x00pri": None}
    assert value["c"] == PhpCustom("ArrayObject", b"x:i:0;a:0:{};m:a:0:{}")
    assert value["e"] == PhpEnum("Suit", "Hearts")
    assert to_data(value) == {
        "o": {CLASS_KEY: "Evil\\Cl", "id": 5, "pro": True, "pri": None},
        "c": {CLASS_KEY: "ArrayObject", "__serialized": "x:i:0;a:0:{};m:a:0:{}"},
        "e": {CLASS_KEY: "Suit", "__case": "Hearts"},
    }
    # Only these types come out: no class of PHP's name is ever looked up, let alone built.
    assert {type(v) for v in value.values()} == {PhpObject, PhpCustom, PhpEnum}


def test_references_resolve_and_cycles_become_markers():
    # What PHP writes for: $o = new stdClass; $o->s = $o; $o->a = [$o, $o]
    cyclic = unserialize(b'O:8:"stdClass":2:{s:1:"s";r:1;s:1:"a";a:2:{i:0;r:1;i:1;r:1;}}')
    assert cyclic["s"] == PhpRecursion(1) and cyclic["a"] == {
        0: PhpRecursion(1),
        1: PhpRecursion(1),
    }
    assert to_data(cyclic) == {CLASS_KEY: "stdClass", "s": "*RECURSION*", "a": ["*RECURSION*"] * 2}
    # $x = [1,2]; serialize([$x, $x, &$x, &$x]): R:8 names the third element.
    shared = unserialize(
        b"a:4:{i:0;a:2:{i:0;i:1;i:1;i:2;}i:1;a:2:{i:0;i:1;i:1;i:2;}"
        b"i:2;a:2:{i:0;i:1;i:1;i:2;}i:3;R:8;}"
    )
    assert to_data(shared) == [[1, 2]] * 4 and shared[3] is shared[2]
    # References to what does not exist (yet), or to themselves, are errors as in PHP.
    for bad, offset in [(b"r:1;", 0), (b"a:1:{i:0;r:3;}", 9), (b"a:1:{i:0;R:0;}", 9)]:
        with pytest.raises(PhpFormatError) as caught:
            unserialize(bad)
        assert caught.value.offset == offset


def test_shared_references_that_expand_exponentially_are_refused():
    # 40 levels, each array holding the next one and a reference to it: 2**40 values once
    # expanded, from about 800 bytes. Level k is value number k + 1 (numbered in order).
    body = b"i:0;"
    for level in reversed(range(40)):
        body = b"a:2:{i:0;" + body + b"i:1;r:%d;}" % (level + 2)
    assert len(body) < 1000
    value = unserialize(body)
    with pytest.raises(PhpFormatError, match="expand"):
        to_data(value)


@pytest.mark.parametrize(
    "raw, offset, message",
    [
        (b"", 0, "end of data"),
        (b"x:1;", 0, "not a PHP serialized value"),
        (b"b:2;", 2, "boolean"),
        (b"i:;", 2, "integer"),
        (b"d:1e;", 2, "number"),
        (b's:9:"abc";', 5, "runs past the end"),
        (b's:1:"\xc3\xa9";', 6, "after 1 bytes"),
        (b"a:1:{N;i:1;}", 5, "array key"),
        (b"a:2:{i:0;i:1;}", 5, "cannot fit"),
        (b"a:1:{i:0;i:1;", 13, "'}'"),
        (b'O:3:"a-b":0:{}', 2, "class name"),
        (b"i:1;junk", 4, "after the value"),
        (b"N;N;", 2, "after the value"),
    ],
)
def test_malformed_payloads_raise_with_the_byte_offset(raw, offset, message):
    with pytest.raises(PhpFormatError, match=message) as caught:
        unserialize(raw)
    assert caught.value.offset == offset
    assert str(caught.value).endswith(f"at byte {offset}")


def test_depth_and_length_are_bounded_without_deep_recursion():
    deep = b"a:1:{i:0;" * 100_000 + b"N;" + b"}" * 100_000
    with pytest.raises(PhpFormatError, match="nested deeper than 128") as caught:
        unserialize(deep)
    assert caught.value.offset == 9 * 129
    assert unserialize(b"a:1:{i:0;" * 100 + b"N;" + b"}" * 100) is not None
    with pytest.raises(PhpFormatError, match="larger than 100 bytes"):
        unserialize(b"s:200:" + b"x" * 200, max_bytes=100)
    # A huge declared count or length costs nothing.
    with pytest.raises(PhpFormatError, match="cannot fit"):
        unserialize(b"a:9999999999999999:{}")
    with pytest.raises(PhpFormatError, match="runs past"):
        unserialize(b's:9999999999999999:"x";')
    with pytest.raises(PhpFormatError, match="more than 10 values"):
        unserialize(b"a:20:{" + b"i:0;N;" * 20 + b"}", max_values=10)


def _mutations(seed: int, count: int) -> list[bytes]:
    """Malformed (mostly) payloads: valid ones cut, with bytes flipped, inserted or deleted."""
    rng = random.Random(seed)
    seeds = [
        b'a:3:{s:1:"o";O:8:"stdClass":2:{s:1:"s";r:2;s:1:"a";a:2:{i:0;r:2;i:1;R:3;}}'
        b's:1:"f";d:0.5;s:1:"x";S:3:"\\41bc";}',
        b'a:2:{i:0;C:3:"Foo":4:{abcd}i:1;E:8:"Suit:Ace";}',
        b'a:2:{s:7:"user_id";i:7;s:4:"name";s:3:"ann";}',
        b"a:2:{i:0;a:2:{i:0;i:1;i:1;i:2;}i:1;R:2;}",
    ]
    alphabet = b'aAbCdEiNOrRsS:;{}"0123456789-.+\\\x00\xff'
    out = []
    for _ in range(count):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(4)
            where = rng.randrange(len(data) + 1)
            if op == 0:
                del data[where:]
            elif op == 1 and data:
                data[min(where, len(data) - 1)] = rng.choice(alphabet)
            elif op == 2:
                data[where:where] = bytes([rng.choice(alphabet)])
            elif data:
                del data[min(where, len(data) - 1)]
        out.append(bytes(data))
    return out


def test_ten_thousand_malformed_payloads_never_crash_the_parser():
    payloads = _mutations(14, 10_000) + [random.Random(i).randbytes(i % 64) for i in range(500)]
    errors = 0
    for raw in payloads:
        for handler in ("php", "php_binary", "php_serialize"):
            try:
                session_data(decode_session(raw, handler))
            except PhpFormatError as exc:
                errors += 1
                assert 0 <= exc.offset <= len(raw)
        try:
            to_data(unserialize(raw))
        except PhpFormatError as exc:
            assert 0 <= exc.offset <= len(raw)
    assert errors > len(payloads)  # most of them are malformed


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_any_bytes_parse_or_raise_the_parsers_own_error(raw):
    sys.setrecursionlimit(sys.getrecursionlimit())  # unchanged: the bounds hold under it
    for handler in ("php", "php_binary", "php_serialize"):
        try:
            session_data(decode_session(raw, handler))
        except PhpFormatError as exc:
            assert 0 <= exc.offset <= len(raw)


_DECODE_PHP = r"""
ob_start();
$out = [];
foreach (json_decode(stream_get_contents(STDIN), true) as $b64) {
    @session_start();
    $out[] = @session_decode(base64_decode($b64)) ? 1 : 0;
    @session_write_close();
}
ob_end_clean();
echo json_encode($out), "\n";
"""


@pytest.mark.parametrize("handler, head", [("php", b"v|"), ("php_binary", b"\x01v")])
def test_the_handlers_accept_exactly_what_php_session_decode_accepts(
    php_cli, tmp_path, handler, head
):
    """The differential test: 2,000 mutated payloads, PHP's own session_decode and ours agree
    on which ones decode (enum cases aside: PHP needs the enum to exist)."""
    import base64

    bodies = [p for p in _mutations(7, 3000) if b"E:" not in p and b"C:" not in p]
    payloads = [head + p for p in bodies][:2000]
    done = subprocess.run(
        [
            php_binary(),
            "-d",
            f"session.save_path={tmp_path}",
            "-d",
            "session.use_cookies=0",
            "-d",
            f"session.serialize_handler={handler}",
            "-r",
            _DECODE_PHP,
        ],
        input=json.dumps([base64.b64encode(p).decode() for p in payloads]),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    php_says = json.loads(done.stdout.strip().splitlines()[-1])
    differ = []
    for raw, accepted in zip(payloads, php_says, strict=True):
        try:
            decode_session(raw, handler)
            ours = 1
        except PhpFormatError:
            ours = 0
        if ours != accepted:
            differ.append((raw, accepted))
    assert differ == []
    assert sum(php_says) > 20 and len(payloads) - sum(php_says) > 1000


@pytest.mark.parametrize("handler", ["php", "php_binary", "php_serialize"])
def test_the_three_handlers_decode_what_php_wrote(php_cli, tmp_path, handler):
    folder = php_session_dir(tmp_path, handler=handler)
    expression = (
        "(function () { $o = new stdClass; $o->id = 5; $o->self = $o; $x = [1, 2];"
        ' return ["user_id" => 42, "name" => "zoë", "o" => $o, "list" => [$x, &$x, &$x],'
        ' "f" => 0.1, "nul" => null, "t" => true, "bin" => "\\xff\\xfe", 7 => "seven"]; })()'
    )
    written = php_write_sessions(folder, [{"php": expression}])
    raw = folder.path_of(written.ids[0]).read_bytes()
    data = session_data(decode_session(raw, handler))
    assert data == {
        "user_id": 42,
        "name": "zoë",
        "o": {CLASS_KEY: "stdClass", "id": 5, "self": "*RECURSION*"},
        "list": [[1, 2]] * 3,
        "f": 0.1,
        "nul": None,
        "t": True,
        "bin": {"$b64": "//4="},
        # The php and php_binary formats cannot carry a numeric key: PHP skips it.
        **({"7": "seven"} if handler == "php_serialize" else {}),
    }


@pytest.mark.parametrize(
    "handler, raw, offset",
    [
        ("php", b"a|i:1;b|", 8),
        ("php", b"a|i:1;junk", 6),
        ("php", b"a|b:2;", 4),
        ("php_binary", b"\x01ai:1;junk", 6),
        ("php_binary", b"\x81a", 0),
        ("php_serialize", b"i:5;", 0),
        ("php_serialize", b'a:1:{s:1:"x";i:1;', 17),
    ],
)
def test_session_payloads_php_refuses_are_errors_with_offsets(handler, raw, offset):
    with pytest.raises(PhpFormatError) as caught:
        decode_session(raw, handler)
    assert caught.value.offset == offset


def test_empty_session_file_is_an_empty_session():
    for handler in ("php", "php_binary", "php_serialize"):
        assert decode_session(b"", handler) == {}
        assert session_data({}) == {}


INI = r"""
[PHP]
; a comment
engine = On
short_open_tag = Off   ; trailing comment

[Session]
session.save_handler = files
session.save_path = "2;/var/lib/php/sessions"   ; quoted: the ; inside is not a comment
session.gc_maxlifetime = 1440
session.serialize_handler = php_binary
session.gc_maxlifetime = 3600
flag = yes
off = none
raw = 'a\"b;c'
escaped = "a\"b\\c"
env = ${HOME}/x
joined = "a" 'b' c

[PATH=/var/www/other]
session.gc_maxlifetime = 60
[HOST=example.org]
session.save_path = /elsewhere
"""


def test_php_ini_grammar():
    ini = parse_ini(INI, env={"HOME": "/home/u"})
    assert ini["session.save_path"] == "2;/var/lib/php/sessions"
    assert ini["session.gc_maxlifetime"] == "3600"  # the last one outside [PATH=]/[HOST=]
    assert ini["engine"] == "1" and ini["short_open_tag"] == "" and ini["flag"] == "1"
    assert ini["off"] == ""
    assert ini["raw"] == 'a\\"b;c' and ini["escaped"] == 'a"b\\c'
    assert ini["env"] == "/home/u/x" and ini["joined"] == "abc"
    settings_ = session_settings(ini)
    assert (settings_.save_path, settings_.gc_maxlifetime, settings_.serialize_handler) == (
        "2;/var/lib/php/sessions",
        3600,
        "php_binary",
    )
    with pytest.raises(IniError, match="line 2"):
        parse_ini('a = 1\nb = "open\n')
    with pytest.raises(SessionctlError, match="igbinary"):
        session_settings({"session.serialize_handler": "igbinary"})
    with pytest.raises(SessionctlError, match="not seconds"):
        session_settings({"session.gc_maxlifetime": "24m"})
    defaults = session_settings({})
    assert (defaults.save_path, defaults.gc_maxlifetime, defaults.serialize_handler) == (
        None,
        1440,
        "php",
    )


def test_save_path_syntax():
    assert parse_save_path("/var/lib/php/sessions").depth == 0
    two = parse_save_path("2;/srv/s")
    assert (two.folder, two.depth, two.mode) == ("/srv/s", 2, None)
    three = parse_save_path("3;0660;/srv/s")
    assert (three.folder, three.depth, three.mode) == ("/srv/s", 3, 0o660)
    for bad in ("x;/srv", "2;99;/srv", "2;", "1;2;3;/srv"):
        with pytest.raises(SessionctlError):
            parse_save_path(bad)


def test_the_real_debian_php_ini_if_installed():
    from pathlib import Path

    found = sorted(Path("/etc/php").glob("*/cli/php.ini"))
    if not found:
        pytest.skip("no /etc/php/*/cli/php.ini here")
    ini = parse_ini(found[-1].read_text())
    settings_ = session_settings(ini, str(found[-1]))
    assert settings_.gc_maxlifetime == 1440 and settings_.serialize_handler == "php"
