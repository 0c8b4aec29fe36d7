#!/usr/bin/env python3
"""Log in to oidc-bff through the demo IdP with plain HTTP and print the session cookie
("name=value"), for load tests. Usage: login.py http://127.0.0.1:PORT [user]"""
import http.client
import re
import sys
import urllib.parse


def request(url, method="GET", body=None, headers=None, jar=None):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    h = dict(headers or {})
    cookies = (jar or {}).get((u.hostname, u.port), {})
    if cookies:
        h["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    path = u.path + (("?" + u.query) if u.query else "")
    conn.request(method, path, body=body, headers=h)
    r = conn.getresponse()
    data = r.read().decode("utf-8", "replace")
    if jar is not None:
        store = jar.setdefault((u.hostname, u.port), {})
        for k, v in r.getheaders():
            if k.lower() == "set-cookie":
                name, _, rest = v.partition("=")
                value = rest.split(";", 1)[0]
                if "Max-Age=0" in v or value == "":
                    store.pop(name, None)
                else:
                    store[name] = value
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data


def main():
    base = sys.argv[1].rstrip("/")
    user = sys.argv[2] if len(sys.argv) > 2 else "bench"
    jar = {}
    status, h, _ = request(base + "/login", jar=jar)
    assert status == 302, f"/login answered {status}"
    url = h["location"]
    for _ in range(12):
        status, h, body = request(url, jar=jar)
        if status in (301, 302, 303, 307, 308):
            url = urllib.parse.urljoin(url, h["location"])
            if url.startswith(base):
                break
            continue
        m = re.search(r'action="([^"]+)"', body)
        assert status == 200 and m, f"IdP answered {status}"
        action = urllib.parse.urljoin(url, m.group(1).replace("&amp;", "&"))
        status, h, _ = request(action, "POST", "login=" + user,
                               {"Content-Type": "application/x-www-form-urlencoded"}, jar)
        url = urllib.parse.urljoin(action, h["location"])
    status, _, _ = request(url, jar=jar)
    assert status == 302, f"/callback answered {status}"
    u = urllib.parse.urlsplit(base)
    cookies = jar[(u.hostname, u.port)]
    session = {k: v for k, v in cookies.items() if k in ("bff", "__Host-bff") or re.match(r"(__Host-)?bff\.\d$", k)}
    assert session, "no session cookie"
    print("; ".join(f"{k}={v}" for k, v in session.items()))


if __name__ == "__main__":
    main()
