#!/usr/bin/env python3
"""SCP11b interoperability: an independent client (yubikit, PyPI package
`yubikey-manager`) opens a GlobalPlatform SCP11b session on the cardvault card
and sends protected commands.

Transports:
  --vpcd-listen HOST:PORT  act as the vpcd driver: listen, let the card
                           (applet-sim, a vpcd client) connect, and talk to it
                           directly (no pcscd). Port 0 picks a free port; the
                           port is printed as "VPCD_PORT <n>" on stdout.
  --pcsc READER            through pcscd and pyscard (card served by
                           `applet-sim --vpcd` behind the vpcd driver).

Exit status 0 when every check passed; the failing check otherwise.
Run by tests/scp11_interop.rs.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from yubikit.core import TRANSPORT, Tlv
from yubikit.core.smartcard import ApduError, SmartCardConnection, SmartCardProtocol
from yubikit.core.smartcard.scp import KeyRef, Scp11KeyParams, ScpKid

AID = bytes.fromhex("F043564C5401")
KVN = 0x01
TAG_CERTIFICATE_STORE = 0xBF21


class VpcdConnection(SmartCardConnection):
    """yubikit's SmartCardConnection over the vsmartcard vpcd socket protocol:
    2-byte big-endian length, then the payload; 1-byte payloads are control
    messages (00 off, 01 on, 02 reset, 04 get ATR)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._send(b"\x01")  # power on
        self._send(b"\x04")
        self.atr = self._recv()

    def _send(self, payload: bytes) -> None:
        self.sock.sendall(struct.pack(">H", len(payload)) + payload)

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("card closed the vpcd connection")
            buf += chunk
        return buf

    def _recv(self) -> bytes:
        (n,) = struct.unpack(">H", self._recv_exact(2))
        return self._recv_exact(n)

    @property
    def transport(self) -> TRANSPORT:
        return TRANSPORT.USB

    def send_and_receive(self, apdu: bytes) -> tuple[bytes, int]:
        self._send(apdu)
        resp = self._recv()
        return resp[:-2], struct.unpack(">H", resp[-2:])[0]

    def close(self) -> None:
        try:
            self._send(b"\x00")  # power off
        finally:
            self.sock.close()


class PcscConnection(SmartCardConnection):
    """yubikit's SmartCardConnection over pyscard."""

    def __init__(self, reader_name: str):
        from smartcard.System import readers

        matches = [r for r in readers() if str(r).startswith(reader_name)]
        if not matches:
            raise SystemExit(f"no PC/SC reader named {reader_name!r}")
        self.conn = matches[0].createConnection()
        self.conn.connect()

    @property
    def transport(self) -> TRANSPORT:
        return TRANSPORT.USB

    def send_and_receive(self, apdu: bytes) -> tuple[bytes, int]:
        data, sw1, sw2 = self.conn.transmit(list(apdu))
        return bytes(data), sw1 << 8 | sw2

    def close(self) -> None:
        self.conn.disconnect()


def check(cond: bool, what: str) -> None:
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}", flush=True)


def expect_sw(f, sw: int, what: str) -> None:
    try:
        f()
    except ApduError as e:
        check(e.sw == sw, f"{what} (got {e.sw:04X}, want {sw:04X})")
        return
    raise SystemExit(f"FAILED: {what}: succeeded, want {sw:04X}")


def card_certificate(protocol: SmartCardProtocol, root: x509.Certificate) -> x509.Certificate:
    query = Tlv(0xA6, Tlv(0x83, bytes([ScpKid.SCP11b, KVN])))
    data = protocol.send_apdu(0x00, 0xCA, TAG_CERTIFICATE_STORE >> 8, TAG_CERTIFICATE_STORE & 0xFF, query)
    certs = [x509.load_der_x509_certificate(c) for c in Tlv.parse_list(data)]
    check(len(certs) >= 1, "GET DATA BF21 returns the card certificate")
    leaf = certs[-1]
    leaf.verify_directly_issued_by(root)
    check(True, "the card certificate is signed by the test issuer root")
    return leaf


def run(conn: SmartCardConnection, root: x509.Certificate, pin: bytes) -> None:
    protocol = SmartCardProtocol(conn)
    protocol.select(AID)
    cert = card_certificate(protocol, root)
    pk_sd = cert.public_key()
    assert isinstance(pk_sd, ec.EllipticCurvePublicKey)
    params = Scp11KeyParams(KeyRef(ScpKid.SCP11b, KVN), pk_sd)

    protocol.init_scp(params)
    check(True, "SCP11b handshake (INTERNAL AUTHENTICATE), receipt verified by yubikit")

    protocol.send_apdu(0x00, 0x20, 0x00, 0x81, pin)
    check(True, "protected VERIFY of the PIN succeeds")
    status = protocol.send_apdu(0x00, 0xCA, 0x00, 0xE1)
    tlv = Tlv(status)
    flags = Tlv.parse_dict(tlv.value)[0xDF08]
    check(tlv.tag == 0xE1 and flags[0] & 2 != 0, "protected GET DATA E1 decrypts; the PIN is verified")
    memory = protocol.send_apdu(0x80, 0xB0, 0x00, 0x04, b"\x07\xd0")
    check(len(memory) == 2000, "a 2000-byte protected answer, fetched with GET RESPONSE below the channel")
    expect_sw(lambda: protocol.send_apdu(0x00, 0x20, 0x00, 0x81, b"000000"), 0x63C2,
              "a wrong PIN under SCP11 gives 63C2 with a valid R-MAC")
    protocol.send_apdu(0x00, 0x20, 0x00, 0x81, pin)
    check(True, "the right PIN again resets the counter")

    # Flip one bit of the next C-MAC: the card must refuse and end the session.
    state = protocol._processor.state
    real_mac = state.mac

    def tampered_mac(data: bytes) -> bytes:
        state.mac = real_mac
        mac = real_mac(data)
        return bytes([mac[0] ^ 0x01]) + mac[1:]

    state.mac = tampered_mac
    expect_sw(lambda: protocol.send_apdu(0x00, 0x20, 0x00, 0x81, pin), 0x6988,
              "a tampered C-MAC is refused with 6988")
    expect_sw(lambda: protocol.send_apdu(0x00, 0xCA, 0x00, 0xE1), 0x6982,
              "after it the session is gone: protected commands get 6982")

    # A new session works; a client holding the wrong card key fails the receipt.
    protocol.init_scp(params)
    protocol.send_apdu(0x00, 0x20, 0x00, 0x81, pin)
    check(True, "a new SCP11b session after the error works")
    wrong = Scp11KeyParams(KeyRef(ScpKid.SCP11b, KVN), ec.generate_private_key(ec.SECP256R1()).public_key())
    try:
        protocol.init_scp(wrong)
    except (ValueError, InvalidSignature):  # yubikit lets the CMAC check's error through
        check(True, "a handshake against the wrong card key fails the receipt check")
    else:
        raise SystemExit("FAILED: handshake with the wrong card key succeeded")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--vpcd-listen", metavar="HOST:PORT")
    where.add_argument("--pcsc", metavar="READER")
    ap.add_argument("--root", required=True, help="issuer root certificate (PEM)")
    ap.add_argument("--pin", default="123456")
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()
    with open(args.root, "rb") as f:
        root = x509.load_pem_x509_certificate(f.read())

    if args.vpcd_listen:
        host, port = args.vpcd_listen.rsplit(":", 1)
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((host, int(port)))
        srv.listen(1)
        srv.settimeout(args.timeout)
        print(f"VPCD_PORT {srv.getsockname()[1]}", flush=True)
        sock, _ = srv.accept()
        srv.close()
        sock.settimeout(args.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn: SmartCardConnection = VpcdConnection(sock)
    else:
        conn = PcscConnection(args.pcsc)
    try:
        run(conn, root, args.pin.encode())
    finally:
        conn.close()
    print("SCP11b interoperability with yubikit: all checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
