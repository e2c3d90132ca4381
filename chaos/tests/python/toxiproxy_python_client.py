"""Drives a chaos-proxy with the independent Toxiproxy client `toxiproxy-python` (0.1.1).

Usage: toxiproxy_python_client.py API_HOST API_PORT ECHO_UPSTREAM

ECHO_UPSTREAM is a host:port that echoes what it receives. Exits 0 when every check held;
an assertion failure exits 1 with a traceback naming the check.
"""

import socket
import sys
import time

from toxiproxy import Toxiproxy
from toxiproxy.exceptions import NotFound, ProxyExists


def round_trip(listen):
    host, port = listen.rsplit(":", 1)
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"ping")
        got = b""
        while len(got) < 4:
            chunk = sock.recv(4 - len(got))
            assert chunk, "the proxy closed the connection before echoing"
            got += chunk
    assert got == b"ping", got
    return time.monotonic() - started


def refused(listen):
    host, port = listen.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def main():
    api_host, api_port, upstream = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    server = Toxiproxy()
    server.update_api_consumer(api_host, api_port)

    assert server.running(), "the API port accepts connections"
    version = server.version()
    assert b'"version"' in version and b"2." in version, version

    proxy = server.create(upstream=upstream, name="py_echo", listen="127.0.0.1:0")
    assert proxy.name == "py_echo"
    assert proxy.enabled is True
    assert proxy.upstream == upstream
    assert not proxy.listen.endswith(":0"), "the bound address is reported: " + proxy.listen

    listed = server.proxies()
    assert "py_echo" in listed, listed
    assert listed["py_echo"].listen == proxy.listen

    try:
        server.create(upstream=upstream, name="py_echo")
        raise AssertionError("creating a proxy twice must fail")
    except ProxyExists:
        pass

    fast = round_trip(proxy.listen)

    proxy.add_toxic(type="latency", attributes={"latency": 300})
    toxics = proxy.toxics()
    assert list(toxics) == ["latency_downstream"], toxics
    toxic = toxics["latency_downstream"]
    assert toxic.type == "latency"
    assert toxic.stream == "downstream"
    assert toxic.toxicity == 1
    assert toxic.attributes == {"latency": 300, "jitter": 0}, toxic.attributes
    slow = round_trip(proxy.listen)
    assert slow >= 0.3, "latency 300 ms gave a round trip of %.3f s" % slow

    proxy.add_toxic(type="bandwidth", stream="upstream", name="thin", toxicity=0.5,
                    attributes={"rate": 1000})
    assert proxy.get_toxic("thin").toxicity == 0.5
    assert proxy.destroy_toxic("latency_downstream")
    assert proxy.destroy_toxic("thin")
    assert proxy.toxics() == {}
    again = round_trip(proxy.listen)
    assert again < 0.25, "the removed latency still applies: %.3f s" % again

    with proxy.down():
        assert refused(proxy.listen), "a disabled proxy refuses connections"
        assert server.get_proxy("py_echo").enabled is False
    assert server.get_proxy("py_echo").enabled is True
    round_trip(proxy.listen)

    proxy.add_toxic(type="timeout", name="stall", attributes={"timeout": 0})
    proxy.disable()
    assert server.reset()
    after_reset = server.get_proxy("py_echo")
    assert after_reset.enabled is True, "reset re-enables proxies"
    assert proxy.toxics() == {}, "reset removes toxics"
    round_trip(proxy.listen)

    populated = server.populate([
        {"name": "py_populated", "upstream": upstream, "listen": "127.0.0.1:0"},
    ])
    assert [p.name for p in populated] == ["py_populated"], populated

    assert server.destroy(proxy)
    assert server.get_proxy("py_echo") is None
    try:
        proxy.toxics()
        raise AssertionError("a destroyed proxy's toxics must be NotFound")
    except NotFound:
        pass

    server.destroy_all()
    assert server.proxies() == {}
    print("toxiproxy-python: every check held (round trips: %.1f ms, %.1f ms with latency, "
          "%.1f ms after removal)" % (fast * 1000, slow * 1000, again * 1000))


if __name__ == "__main__":
    main()
