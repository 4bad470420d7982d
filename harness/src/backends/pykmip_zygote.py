"""The PyKMIP zygote of a run (see pykmip_zygote.rs): imports PyKMIP's server once,
then forks one fresh server process per request, so a cell's server starts without
paying for Python's imports again.

Usage: python3 pykmip_zygote.py SOCKET

Listens on the unix socket SOCKET. A request is one JSON line on a new connection:
{"args": [server arguments], "stderr": path}. The answer is one JSON line, {"pid": N}
or {"error": text}. The server then runs as process N with the arguments of
`pykmip-server` and its stderr in `path`, leading a process group of its own (PyKMIP
starts helper processes: its policy monitor). The group holds the connection and ends
at once when the client closes it (or dies), so a client sees end-of-file there exactly
when the whole group is gone; the client stops it early by signalling the group.
"""

import ctypes
import json
import os
import random
import signal
import socket
import sys
import threading


def read_line(conn):
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > 65536:
            raise ValueError("request line longer than 64 KiB")
    return data.decode("utf-8")


def serve(conn, request, server):
    """In the forked child: become the server the request asks for; never returns."""
    try:
        os.setpgid(0, 0)
        # `ps` and the tests know it by the name: PR_SET_NAME (15), inherited by the
        # helper processes PyKMIP starts.
        ctypes.CDLL(None).prctl(15, b"pykmip-server", 0, 0, 0)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # The zygote's random state is every child's otherwise.
        random.seed()
        err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(err, 2)
        os.close(null)
        os.close(err)

        def watch():
            try:
                while conn.recv(1):
                    pass
            finally:
                os.killpg(0, signal.SIGKILL)

        threading.Thread(target=watch, daemon=True).start()
        sys.argv = ["pykmip-server"] + [str(a) for a in request["args"]]
        server.main()
        os._exit(0)
    except BaseException as e:  # noqa: BLE001 - the child must never return
        try:
            sys.stderr.write("pykmip zygote child: %r\n" % (e,))
            sys.stderr.flush()
        finally:
            os._exit(1)


def main():
    path = sys.argv[1]
    from kmip.services.server import server

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    # The kernel reaps the children: nobody here waits for them.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        conn, _ = listener.accept()
        try:
            request = json.loads(read_line(conn))
            if not isinstance(request.get("args"), list) or not isinstance(
                request.get("stderr"), str
            ):
                raise ValueError("a request needs `args` (a list) and `stderr` (a path)")
        except Exception as e:  # noqa: BLE001 - a bad request is answered, not fatal
            conn.sendall((json.dumps({"error": str(e)}) + "\n").encode())
            conn.close()
            continue
        pid = os.fork()
        if pid == 0:
            listener.close()
            serve(conn, request, server)
        conn.sendall((json.dumps({"pid": pid}) + "\n").encode())
        conn.close()


if __name__ == "__main__":
    main()
