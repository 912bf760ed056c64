"""Ray addresses are parsed by the library (no Ray needed): HOST:PORT with a port in 1..65535;
an empty address is refused, not read as "start a local Ray"."""
import pytest

from soteria_lib.ray_cluster import check_reachable, parse_address


@pytest.mark.parametrize("address, parsed", [
    ("127.0.0.1:6379", ("127.0.0.1", 6379)),
    ("head-node.cluster.local:10001", ("head-node.cluster.local", 10001)),
    ("[::1]:6379", ("::1", 6379)),
    ("h:1", ("h", 1)),
    ("h:65535", ("h", 65535)),
])
def test_an_address_is_a_host_and_a_port(address, parsed):
    assert parse_address(address) == parsed


@pytest.mark.parametrize("address, needle", [
    ("", "got an empty one"),
    ("head", "got 'head'"),
    ("head:", "got 'head:'"),
    (":6379", "got ':6379'"),
    ("head:0", "must be in 1..65535, got 0"),
    ("head:65536", "must be in 1..65535, got 65536"),
    ("head:99999999999999999999", "must be in 1..65535"),
    ("head:port", "got 'head:port'"),
    ("ray://head:10001", "got 'ray://head:10001'"),
    ("a b:6379", "got 'a b:6379'"),
    ("::1:6379", "got '::1:6379'"),
])
def test_anything_else_is_one_line(address, needle):
    with pytest.raises(ValueError) as info:
        parse_address(address)
    message = str(info.value)
    assert needle in message and ("HOST:PORT" in message or "1..65535" in message), message
    with pytest.raises(ValueError):
        check_reachable(address)  # parsed before anything is tried
