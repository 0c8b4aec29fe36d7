#!/usr/bin/env python3
"""Time from process start to /readyz answering 200 (discovery and JWKS loaded from an IdP
already up on loopback). Usage: startup.py BINARY CONFIG [runs]. Prints median and max ms."""
import http.client
import os
import socket
import statistics
import subprocess
import sys
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ready(port):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
        c.request("GET", "/readyz")
        return c.getresponse().status == 200
    except OSError:
        return False


def main():
    binary, config = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    times = []
    for _ in range(runs):
        port = free_port()
        env = dict(os.environ, BFF_SERVER__LISTEN=f"127.0.0.1:{port}")
        start = time.perf_counter()
        p = subprocess.Popen([binary, "serve", "--config", config], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = start + 10
            while time.perf_counter() < deadline:
                if ready(port):
                    times.append((time.perf_counter() - start) * 1000)
                    break
                time.sleep(0.002)
            else:
                print("startup: not ready within 10 s", file=sys.stderr)
                sys.exit(1)
        finally:
            p.terminate()
            p.wait(5)
    print(f"startup to ready: median {statistics.median(times):.0f} ms, max {max(times):.0f} ms over {runs} runs")


if __name__ == "__main__":
    main()
