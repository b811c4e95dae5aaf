"""node.toml validation: good files load, bad ones give one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from dcis.dtn.cl.udp import AckMode
from dcis.dtn.runtime.config import ConfigError, load_config
from dcis.tools.dtn_node import main as dtn_node_main

GOOD = """
node = 2
listen = "127.0.0.1:4556"
app_socket = "n2.sock"
plan = "plan.ionrc"
plan_epoch_unix_s = 1764000000
log_level = "DEBUG"
[store]
path = "n2.db"
limit_bytes = 5000000
synchronous = "normal"
[udp]
ack_timeout_s = 0.25
max_tries = 2
[[neighbours]]
node = 3
address = "127.0.0.1:4557"
ack = "off"
[[neighbours]]
node = 4
address = "[::1]:4558"
cla = "mtcp"
always_on = true
rate_bytes_s = 125000
"""


def test_good_config_loads_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    p = tmp_path / "node.toml"
    p.write_text(GOOD)
    c = load_config(p)
    assert c.node == 2
    assert c.eid == "ipn:2.0"
    assert c.listen == ("127.0.0.1", 4556)
    assert c.store_path == str(tmp_path / "n2.db")
    assert c.plan == str(tmp_path / "plan.ionrc")
    assert c.app_socket == str(tmp_path / "n2.sock")
    assert c.plan_epoch_unix_s == 1764000000.0
    assert c.log_level == "debug"
    assert c.store_synchronous == "NORMAL"
    assert c.ack_timeout_s == 0.25
    assert [n.node for n in c.neighbours] == [3, 4]
    assert c.neighbours[0].ack is AckMode.OFF
    assert c.neighbours[1].address == ("::1", 4558)
    assert c.neighbours[1].cla == "mtcp"
    assert c.neighbours[1].always_on is True


def test_eid_may_name_the_node(tmp_path: Path) -> None:
    p = tmp_path / "node.toml"
    p.write_text('eid = "ipn:7.0"\n')
    assert load_config(p).node == 7


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('listen = "x:1"\n', "node"),
        ('node = "two"\n', "node"),
        ("node = 0\n", "node"),
        ('node = 1\nlisten = "nohost"\n', "listen"),
        ('node = 1\nlisten = "h:99999"\n', "listen"),
        ('node = 1\nlog_level = "loud"\n', "log_level"),
        ("node = 1\nmtu_bytes = 10\n", "mtu_bytes"),
        ("node = 1\ncolour = 3\n", "colour"),
        ("node = 1\n[store]\nlimit_bytes = -1\n", "store.limit_bytes"),
        ('node = 1\n[store]\nsynchronous = "OFF"\n', "store.synchronous"),
        ("node = 1\n[udp]\nack_timeout_s = 0\n", "udp.ack_timeout_s"),
        (
            "node = 1\n[limits]\nudp_max_transfer_bytes = 4294967296\n",
            "limits.udp_max_transfer_bytes",
        ),
        (
            "node = 1\n[limits]\nudp_max_partial_bytes = 0\n",
            "limits.udp_max_partial_bytes",
        ),
        (
            "node = 1\n[limits]\nudp_max_partial_bytes = 1000000\n",
            "limits.udp_max_transfer_bytes",
        ),
        (
            'node = 1\n[[neighbours]]\nnode = 2\naddress = "h"\n',
            "neighbours[0].address",
        ),
        ("node = 1\n[[neighbours]]\nnode = 2\n", "neighbours[0].address"),
        ('node = 1\n[[neighbours]]\nnode = 1\naddress = "h:1"\n', "neighbours[0].node"),
        (
            'node = 1\n[[neighbours]]\nnode = 2\naddress = "h:1"\nack = "maybe"\n',
            "neighbours[0].ack",
        ),
        (
            'node = 1\n[[neighbours]]\nnode = 2\naddress = "h:1"\ncla = "tcp"\n',
            "neighbours[0].cla",
        ),
        (
            'node = 1\n[[neighbours]]\nnode = 2\naddress = "h:1"\nalways_on = 1\n',
            "neighbours[0].always_on",
        ),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    p = tmp_path / "node.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    msg = str(info.value)
    assert msg.startswith(key + ":") or f" {key}" in msg or msg.startswith(f"{key} "), (
        msg
    )
    assert "\n" not in msg


def test_dtn_node_exits_2_with_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "node.toml"
    p.write_text('node = 1\n[[neighbours]]\nnode = 2\naddress = "localhost"\n')
    assert dtn_node_main(["--config", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: neighbours[0].address: expected \"host:port\", got 'localhost'"
    ]


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    p = tmp_path / "node.toml"
    p.write_text("node = = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)


@pytest.mark.parametrize(
    ("text", "prefix"),
    [
        ('node = 1\nlisten = "127.0.0.1:0"\nplan = "missing.ionrc"\n', "error: plan: "),
        ('node = 1\nlisten = "192.0.2.1:4556"\n', "error: listen: cannot bind"),
        (
            'node = 1\nlisten = "127.0.0.1:0"\n[store]\npath = "no/such/dir/x.db"\n',
            "error: store.path: ",
        ),
    ],
)
def test_startup_failures_name_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, prefix: str
) -> None:
    p = tmp_path / "node.toml"
    p.write_text(text)
    assert dtn_node_main(["--config", str(p)]) == 2
    err = [
        line
        for line in capsys.readouterr().err.splitlines()
        if not line.startswith("{")
    ]
    assert len(err) == 1
    assert err[0].startswith(prefix), err
