"""NodeConfig: TOML + ACCESSFABRIC_* overrides; errors name the file, the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from accessfabric.carriers.tcp_timers import DEFAULT_RTO_MIN
from accessfabric.identity.keys import NodeKey
from accessfabric.node.config.node_config import ConfigError, load_node_config
from accessfabric.node.dialing.address import Endpoint, HostPort
from accessfabric.wire.registry import TrafficClass

REPO = Path(__file__).resolve().parents[2]
PEER_ID = NodeKey.from_seed(b"\x01" * 32).node_id
BAD_CHECKSUM = PEER_ID[:-1] + ("a" if PEER_ID[-1] != "a" else "b")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def test_example_file_loads() -> None:
    config = load_node_config(REPO / "docs" / "examples" / "node.toml", environ={})
    assert config.listen[0] == Endpoint(carrier="tcp", host="127.0.0.1", port=7443)
    assert config.roles
    assert config.peers and config.services


def test_minimal_file_and_defaults(tmp_path: Path) -> None:
    config = load_node_config(write(tmp_path, 'key_path = "keys/node.key"\n'), environ={})
    assert config.key_path == tmp_path / "keys" / "node.key"  # relative to the config file
    assert config.cert_dir == tmp_path / "keys" / "tls"  # next to the key
    assert config.listen == () and config.peers == () and config.roles == ()
    assert config.drain_timeout == 10.0
    assert config.session.handshake_timeout == 10.0
    assert config.tcp_rto_min == DEFAULT_RTO_MIN


def test_tcp_rto_min_seconds_or_false_and_its_variable(tmp_path: Path) -> None:
    config = load_node_config(write(tmp_path, 'key_path = "k"\ntcp_rto_min = 0.05'), environ={})
    assert config.tcp_rto_min == 0.05
    config = load_node_config(write(tmp_path, 'key_path = "k"\ntcp_rto_min = false'), environ={})
    assert config.tcp_rto_min is None  # the kernel's own 200 ms
    path = write(tmp_path, 'key_path = "k"\ntcp_rto_min = 0.05')
    assert load_node_config(path, {"ACCESSFABRIC_TCP_RTO_MIN": "off"}).tcp_rto_min is None
    assert load_node_config(path, {"ACCESSFABRIC_TCP_RTO_MIN": "0.2"}).tcp_rto_min == 0.2


def test_full_file(tmp_path: Path) -> None:
    text = f"""
key_path = "/etc/accessfabric/node.key"
cert_dir = "/var/lib/accessfabric/tls"
roles = ["relay", "exit"]
drain_timeout = 3
log_json = true

[[listen]]
carrier = "tcp"
address = "[::1]:0"

[[listen]]
carrier = "websocket"
address = "0.0.0.0:8443"

[[peers]]
node_id = "{PEER_ID.upper()}"
endpoints = ["tcp://192.0.2.1:7443", "wss://hub.example:443/fabric"]
connect = "always"

[[services]]
name = "rdp"
target = "127.0.0.1:3389"
traffic_class = "interactive"

[session]
max_concurrent_streams = 64
idle_timeout = 300
keepalive_interval = false
"""
    config = load_node_config(write(tmp_path, text), environ={})
    assert config.cert_dir == Path("/var/lib/accessfabric/tls")
    assert config.roles == ("relay", "exit")
    assert config.listen[0] == Endpoint(carrier="tcp", host="::1", port=0)
    assert config.listen[1].path == "/fabric"
    peer = config.peers[0]
    assert peer.node_id == PEER_ID and peer.connect == "always"
    assert [e.url for e in peer.endpoints] == [
        "tcp://192.0.2.1:7443",
        "wss://hub.example:443/fabric",
    ]
    service = config.services[0]
    assert service.target == HostPort(host="127.0.0.1", port=3389)
    assert service.traffic_class is TrafficClass.INTERACTIVE and service.mode == "forward"
    assert config.session.max_concurrent_streams == 64
    assert config.session.idle_timeout == 300.0
    assert config.session.keepalive_interval is None
    assert config.drain_timeout == 3.0 and config.log_json


PEER = '[[peers]]\nnode_id = "{id}"\nendpoints = ["tcp://127.0.0.1:7443"]\n'


@pytest.mark.parametrize(
    ("body", "key", "problem"),
    [
        ("", "key_path", "required"),
        ('key_path = ""', "key_path", "must not be empty"),
        ("key_path = 5", "key_path", "expected a string"),
        ('key_path = "k"\nkye = 1', "kye", "unknown key"),
        ('key_path = "k"\nroles = ["relay", "pilot"]', "roles[1]", "unknown role 'pilot'"),
        (
            'key_path = "k"\n' + PEER.format(id=PEER_ID) + PEER.format(id=BAD_CHECKSUM),
            "peers[1].node_id",
            "checksum mismatch",
        ),
        ('key_path = "k"\n' + PEER.format(id="afn1zz"), "peers[0].node_id", "bad node id length"),
        (
            f'key_path = "k"\n[[peers]]\nnode_id = "{PEER_ID}"\nendpoints = ["http://x:1"]',
            "peers[0].endpoints[0]",
            "unknown scheme 'http'",
        ),
        (
            f'key_path = "k"\n[[peers]]\nnode_id = "{PEER_ID}"\nendpoints = []',
            "peers[0].endpoints",
            "at least one endpoint",
        ),
        (
            'key_path = "k"\n[[listen]]\ncarrier = "sctp"\naddress = "127.0.0.1:1"',
            "listen[0].carrier",
            "unknown carrier 'sctp'",
        ),
        (
            'key_path = "k"\n[[listen]]\ncarrier = "tcp"\naddress = "127.0.0.1:99999"',
            "listen[0].address",
            "port must be 0..65535",
        ),
        (
            'key_path = "k"\n[[listen]]\ncarrier = "tcp"\naddress = "nohost"',
            "listen[0].address",
            "expected 'host:port'",
        ),
        (
            'key_path = "k"\n[[services]]\nname = "echo"\ntarget = "127.0.0.1:7"',
            "services[0].name",
            "built-in",
        ),
        (
            'key_path = "k"\n[[services]]\nname = "x"\ntarget = "a:1"\ntraffic_class = "fast"',
            "services[0].traffic_class",
            "unknown traffic class 'fast'",
        ),
        ('key_path = "k"\n[session]\nmax_frame_size = 10', "session.max_frame_size", "must be"),
        ('key_path = "k"\n[session]\nping_timeout = "1"', "session.ping_timeout", "expected"),
        ('key_path = "k"\n[session]\nwindow = 1', "session.window", "unknown key"),
        ('key_path = "k"\ndrain_timeout = -1', "drain_timeout", "positive"),
        ('key_path = "k"\ntcp_rto_min = 0.5', "tcp_rto_min", "at most 0.2 seconds"),
        ('key_path = "k"\ntcp_rto_min = 0', "tcp_rto_min", "more than 0"),
        ('key_path = "k"\ntcp_rto_min = true', "tcp_rto_min", "expected a number"),
    ],
)
def test_errors_name_file_key_and_problem(
    tmp_path: Path, body: str, key: str, problem: str
) -> None:
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as caught:
        load_node_config(path, environ={})
    message = str(caught.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert problem in message
    assert "\n" not in message


def test_toml_syntax_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"node\.toml: invalid TOML"):
        load_node_config(write(tmp_path, "key_path = "), environ={})
    with pytest.raises(ConfigError, match="config file does not exist"):
        load_node_config(tmp_path / "missing.toml", environ={})


def test_pressure_rate_cap_is_on_unless_turned_off(tmp_path: Path) -> None:
    assert (
        load_node_config(write(tmp_path, 'key_path = "k"'), environ={}).session.pressure_min_rate
        == 512 * 1024
    )
    path = write(tmp_path, 'key_path = "k"\n[session]\npressure_min_rate = false')
    assert load_node_config(path, environ={}).session.pressure_min_rate is None
    path = write(tmp_path, 'key_path = "k"\n[session]\npressure_min_rate = 262144')
    assert load_node_config(path, environ={}).session.pressure_min_rate == 262144
    off = {"ACCESSFABRIC_SESSION_PRESSURE_MIN_RATE": "off"}
    assert load_node_config(path, environ=off).session.pressure_min_rate is None
    path = write(tmp_path, 'key_path = "k"\n[session]\npressure_min_rate = 10')
    with pytest.raises(ConfigError, match=r"session\.pressure_min_rate: must be 1024\.\."):
        load_node_config(path, environ={})


def test_environment_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path, 'key_path = "a.key"\nroles = ["relay"]\n[[listen]]\ncarrier="tcp"\naddress="x:1"'
    )
    env = {
        "ACCESSFABRIC_KEY_PATH": "/keys/b.key",
        "ACCESSFABRIC_LISTEN": "tcp://127.0.0.1:7443, wss://0.0.0.0:8443/fabric",
        "ACCESSFABRIC_ROLES": "exit,service-host",
        "ACCESSFABRIC_DRAIN_TIMEOUT": "2.5",
        "ACCESSFABRIC_LOG_JSON": "1",
        "ACCESSFABRIC_SESSION_IDLE_TIMEOUT": "off",
        "ACCESSFABRIC_SESSION_MAX_CONCURRENT_STREAMS": "8",
        "ACCESSFABRIC_SOMETHING_ELSE": "ignored",
    }
    config = load_node_config(path, environ=env)
    assert config.key_path == Path("/keys/b.key")
    assert config.cert_dir == Path("/keys/tls")
    assert [e.url for e in config.listen] == ["tcp://127.0.0.1:7443", "wss://0.0.0.0:8443/fabric"]
    assert config.roles == ("exit", "service-host")
    assert config.drain_timeout == 2.5 and config.log_json
    assert config.session.idle_timeout is None
    assert config.session.max_concurrent_streams == 8


def test_environment_only() -> None:
    config = load_node_config(None, environ={"ACCESSFABRIC_KEY_PATH": "/k/node.key"})
    assert config.key_path == Path("/k/node.key") and config.source == "environment"
    with pytest.raises(ConfigError, match=r"^environment: key_path: required"):
        load_node_config(None, environ={})


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("ACCESSFABRIC_LISTEN", "tcp://127.0.0.1", "expected 'host:port'"),
        ("ACCESSFABRIC_ROLES", "relay,wizard", "unknown role 'wizard'"),
        ("ACCESSFABRIC_SESSION_MAX_CONCURRENT_STREAMS", "many", "expected an integer"),
        ("ACCESSFABRIC_LOG_JSON", "maybe", "expected true/false"),
        ("ACCESSFABRIC_TCP_RTO_MIN", "25ms", "expected a number"),
        ("ACCESSFABRIC_TCP_RTO_MIN", "1", "at most 0.2 seconds"),
    ],
)
def test_environment_errors_name_the_variable(variable: str, value: str, problem: str) -> None:
    env = {"ACCESSFABRIC_KEY_PATH": "/k", variable: value}
    with pytest.raises(ConfigError) as caught:
        load_node_config(None, environ=env)
    assert str(caught.value).startswith(f"environment: {variable}")
    assert problem in str(caught.value)


def test_empty_string_in_a_validated_field_is_reported_once(tmp_path: Path) -> None:
    body = 'key_path = "k"\n[[peers]]\nnode_id = ""\nendpoints = ["tcp://127.0.0.1:1"]\n'
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as caught:
        load_node_config(path, environ={})
    assert str(caught.value) == f"{path}: peers[0].node_id: must not be empty"


def test_sealing_keys_and_switch(tmp_path: Path) -> None:
    import base64

    peer, other = NodeKey.generate(), NodeKey.generate()
    peer_key = base64.b64encode(peer.sealing_public_key_bytes).decode()
    other_key = base64.b64encode(other.sealing_public_key_bytes).decode()
    config = load_node_config(
        write(
            tmp_path,
            'key_path = "n.key"\n'
            f'[[peers]]\nnode_id = "{peer.node_id}"\nendpoints = ["tcp://127.0.0.1:7443"]\n'
            f'sealing_key = "{peer_key}"\n'
            "[sealing]\none_hop = false\n[sealing.keys]\n"
            f'"{other.node_id.upper()}" = "{other_key}"\n',
        ),
        environ={},
    )
    assert config.peers[0].sealing_key == peer.sealing_public_key_bytes
    assert config.sealing.one_hop is False
    assert dict(config.sealing.keys) == {other.node_id: other.sealing_public_key_bytes}
    assert load_node_config(write(tmp_path, 'key_path = "n.key"\n'), environ={}).sealing.one_hop


@pytest.mark.parametrize(
    ("value", "cipher"),
    [
        (None, "auto"),
        ('"auto"', "auto"),
        ('"AES-256-GCM"', "aes-256-gcm"),
        ('" chacha20-poly1305"', "chacha20-poly1305"),
    ],
)
def test_sealing_cipher(tmp_path: Path, value: str | None, cipher: str) -> None:
    text = 'key_path = "n.key"\n' + ("" if value is None else f"[sealing]\ncipher = {value}\n")
    assert load_node_config(write(tmp_path, text), environ={}).sealing.cipher == cipher


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('"rc4"', "unknown cipher 'rc4' (choose from auto, chacha20-poly1305, aes-256-gcm)"),
        ('"aes-128-gcm"', "unknown cipher 'aes-128-gcm' (choose from auto, chacha20-poly1305, "),
        ("1", "expected a string, got "),
        ('""', "must not be empty"),
    ],
)
def test_a_bad_sealing_cipher_names_file_key_and_problem(
    tmp_path: Path, value: str, problem: str
) -> None:
    path = write(tmp_path, f'key_path = "n.key"\n[sealing]\ncipher = {value}\n')
    with pytest.raises(ConfigError) as caught:
        load_node_config(path, environ={})
    assert str(caught.value).startswith(f"{path}: sealing.cipher: {problem}")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[sealing]\nkeys = { "afn1x" = "AAAA" }\n', "sealing.keys.afn1x: "),
        ("[sealing]\none_hop = 1\n", "sealing.one_hop: "),
        ("[sealing]\nseal = true\n", "sealing.seal: unknown key"),
    ],
)
def test_sealing_errors(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_node_config(write(tmp_path, 'key_path = "n.key"\n' + text), environ={})


def test_peer_sealing_key_must_be_32_base64_bytes(tmp_path: Path) -> None:
    peer = NodeKey.generate()
    text = (
        f'key_path = "n.key"\n[[peers]]\nnode_id = "{peer.node_id}"\n'
        'endpoints = ["tcp://127.0.0.1:7443"]\nsealing_key = "AAAA"\n'
    )
    with pytest.raises(ConfigError, match=r"peers\[0\].sealing_key: a sealing key is 32 bytes"):
        load_node_config(write(tmp_path, text), environ={})


@pytest.mark.parametrize(
    ("toml", "error"),
    [
        ('[ranking]\nhalf_life = "x"\n', "ranking.half_life: expected a number, got str"),
        ("limits = 3\n", "limits: expected a table, got int"),
        ("[vpn]\ndns_ports = [0]\n", "vpn.dns_ports: expected ports 1..65535, got 0"),
        ("vpn = 1\n", "vpn: expected a table, got int"),
        ('[session]\nmax_frame_size = "big"\n', "session.max_frame_size: expected an integer"),
        ("[session]\nmax_frame_size = 1\n", "session.max_frame_size: must be 16384..16777215"),
        (
            "[session]\npressure_min_rate = 1.5\n",
            "session.pressure_min_rate: expected an integer or false (off), got a number",
        ),
        (
            "[session]\npressure_min_rate = 1\n",
            "session.pressure_min_rate: must be 1024..1099511627776 (or false for off), got 1",
        ),
    ],
)
def test_table_and_integer_errors_name_the_key(tmp_path: Path, toml: str, error: str) -> None:
    """The [ranking]/[limits]/[vpn] readers and the session integers share one reader each."""
    path = write(tmp_path, 'key_path = "k"\n' + toml)
    with pytest.raises(ConfigError) as caught:
        load_node_config(path, environ={})
    assert str(caught.value).startswith(f"{path}: {error}"), caught.value
