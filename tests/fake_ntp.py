"""A fake SNTP server for the gateway's clock tests (there is no internet here, and no NTP server)."""

import socket
import threading
import time

from aimass_gateway.clock import _to_ntp


class FakeNtp:
    """An SNTP server on a free UDP port whose clock runs ``skew_s`` ahead of ours."""

    def __init__(self, skew_s: float, stratum: int = 2, delay_s: float = 0.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.skew_s, self.stratum, self.delay_s = skew_s, stratum, delay_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                data, addr = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            t2 = time.time() + self.skew_s
            time.sleep(self.delay_s)
            reply = bytearray(48)
            reply[0] = (4 << 3) | 4  # version 4, server mode
            reply[1] = self.stratum
            reply[24:32] = data[40:48]  # origin = the client's transmit time
            reply[32:40] = _to_ntp(t2)
            reply[40:48] = _to_ntp(time.time() + self.skew_s)
            self.sock.sendto(bytes(reply), addr)

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.sock.close()
