"""The SSRF address policy: every private form refused, public addresses allowed."""

from __future__ import annotations

import ipaddress

import pytest

from tools.search.netguard import NetworkPolicy, blocked_reason, split_url
from tools.search.results import BlockedURLError

BLOCKED = [
    "127.0.0.1",
    "127.255.0.9",
    "::1",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",
    "169.254.1.1",
    "100.64.0.1",
    "100.100.100.200",
    "0.0.0.0",
    "::",
    "224.0.0.1",
    "239.255.255.250",
    "ff02::1",
    "fe80::1",
    "fc00::1",
    "fd00:ec2::254",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::a00:1",
    "2002:a00:1::",
    "::10.0.0.1",
    "198.18.0.1",
    "192.0.2.1",
    "240.0.0.1",
    "255.255.255.255",
]
PUBLIC = ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "1.1.1.1"]


@pytest.mark.parametrize("address", BLOCKED)
def test_private_and_special_addresses_are_blocked(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) is None


def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"no lookup expected for {host}")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://127.0.0.1/", "loopback"),
        ("http://[::1]:8080/x", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://10.1.2.3/", "private"),
        ("http://[::ffff:10.0.0.1]/", "IPv6 form of 10.0.0.1"),
        ("http://2130706433/", "loopback"),  # 127.0.0.1 as one number
        ("http://0x7f.1/", "loopback"),
        ("http://127.1/", "loopback"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
        ("file:///etc/passwd", "only http and https"),
        ("gopher://example.com/", "only http and https"),
        ("http://user:secret@example.com/", "credentials"),
        ("http:///nohost", "no host"),
    ],
)
def test_urls_are_refused_with_a_reason(url: str, words: str) -> None:
    with pytest.raises(BlockedURLError, match=words):
        NetworkPolicy(resolver=no_dns).resolve(url)


def test_a_name_resolving_to_a_private_address_is_refused() -> None:
    policy = NetworkPolicy(resolver=lambda host, port: ["10.0.0.5"])
    with pytest.raises(BlockedURLError) as refused:
        policy.resolve("http://intranet.example.com/admin")
    assert "intranet.example.com resolves to 10.0.0.5" in str(refused.value)
    assert "private" in str(refused.value)


def test_a_name_with_any_private_address_is_refused() -> None:
    policy = NetworkPolicy(resolver=lambda host, port: ["93.184.216.34", "127.0.0.1"])
    with pytest.raises(BlockedURLError, match="loopback"):
        policy.resolve("https://mixed.example.com/")


def test_localhost_through_the_real_resolver_is_refused() -> None:
    with pytest.raises(BlockedURLError, match=r"localhost resolves to .*loopback"):
        NetworkPolicy().resolve("http://localhost:9/")


def test_public_names_resolve_to_the_checked_address() -> None:
    seen = []

    def resolver(host: str, port: int) -> list[str]:
        seen.append((host, port))
        return ["93.184.216.34"]

    target = NetworkPolicy(resolver=resolver).resolve("https://Example.COM./a/b?q=1#frag")
    assert seen == [("example.com", 443)]
    assert (target.host, target.port, target.address) == ("example.com", 443, "93.184.216.34")
    assert target.path == "/a/b?q=1"
    assert target.host_header == "example.com"


def test_allowed_hosts_skip_the_address_check_only_for_them() -> None:
    policy = NetworkPolicy(allow_hosts=["127.0.0.1", "LocalHost"])
    assert policy.resolve("http://127.0.0.1:8000/").address == "127.0.0.1"
    assert policy.resolve("http://localhost:8000/").host_header == "localhost:8000"
    with pytest.raises(BlockedURLError):
        policy.resolve("http://[::1]:8000/")
    with pytest.raises(BlockedURLError):
        policy.resolve("http://10.0.0.1/")


def test_split_url_defaults_ports_and_paths() -> None:
    assert split_url("HTTP://Example.com") == ("http", "example.com", 80, "/")
    assert split_url("https://[2606:4700::1111]:8443/p") == ("https", "2606:4700::1111", 8443, "/p")
    with pytest.raises(BlockedURLError):
        split_url("http://example.com:99999/")
