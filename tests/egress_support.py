"""The outside world for egress tests: a test CA, local HTTP/HTTPS/mTLS servers, a fake resolver.

Reusable by end-to-end tests of the toolbelt::

    ca = CertificateAuthority()
    server_cert = ca.issue_server(["api.example.test", "localhost"])
    async with LocalServer(tls=server_cert, client_ca_pem=ca.cert_pem) as server:
        url = server.url("/echo", host="api.example.test")
        resolver = MappingResolver({"api.example.test": ["127.0.0.1"]})
        policy = EgressPolicy(exempt_cidrs=(ip_network("127.0.0.0/8"),), extra_ca_pem=ca.cert_pem)

Built-in routes (all answer on any method):

- ``/echo`` — 200 JSON ``{method, path, query, headers: {lower-name: value}, body, client_cn}``
- ``/status/<n>`` — status n, body ``status <n>``
- ``/redirect/<code>?to=<url>`` — status code with ``Location: <url>``
- ``/slow?delay_s=<s>`` — waits, then 200 ``slow``
- ``/bytes?n=<n>[&chunked=1]`` — n bytes of ``x`` (chunked: no Content-Length, 64 KiB chunks)
- ``/cookies`` — two ``Set-Cookie`` headers
Anything else is 404 unless added with :meth:`LocalServer.route`. Servers listen on
127.0.0.1 only, on a free port.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import socket
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# -- certificates --------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    cert_pem: str
    key_pem: str


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


class CertificateAuthority:
    """A throwaway CA (EC P-256) that issues server and client certificates."""

    def __init__(self, name: str = "fnbus test CA") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_pem = self._cert.public_bytes(serialization.Encoding.PEM).decode()

    def _issue(self, common_name: str, usage: x509.ObjectIdentifier,
               names: Sequence[x509.GeneralName]) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                           critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))

    def issue_server(self, dns_names: Sequence[str], ip_addresses: Sequence[str] = ("127.0.0.1",)) -> Issued:
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        return self._issue(dns_names[0] if dns_names else ip_addresses[0], ExtendedKeyUsageOID.SERVER_AUTH, names)

    def issue_client(self, common_name: str) -> Issued:
        return self._issue(common_name, ExtendedKeyUsageOID.CLIENT_AUTH, [])


def server_ssl_context(issued: Issued, client_ca_pem: str | None = None) -> ssl.SSLContext:
    """A server-side context; with ``client_ca_pem`` clients must present a cert from that CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory(prefix="fnbus-test-tls-") as directory:
        cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
        with open(cert_path, "w") as f:
            f.write(issued.cert_pem)
        with open(key_path, "w") as f:
            f.write(issued.key_pem)
        context.load_cert_chain(cert_path, key_path)
    if client_ca_pem:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=client_ca_pem)
    return context


# -- a name resolver for tests -------------------------------------------------------------


class MappingResolver:
    """Resolves only the names it was given (never the real DNS); counts lookups."""

    def __init__(self, mapping: Mapping[str, Sequence[str]]) -> None:
        self.mapping = {k.lower(): list(v) for k, v in mapping.items()}
        self.lookups: list[str] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        found = self.mapping.get(host.lower().rstrip("."))
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} is not known to the test resolver")
        return list(found)


# -- a small HTTP/1.1 server ---------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: list[tuple[str, str]]  # lower-case names, in order
    body: bytes
    client_cn: str | None

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name.lower():
                return value
        return None

    def arg(self, name: str, default: str = "") -> str:
        return self.query.get(name, [default])[0]


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    # None = send the body with Content-Length; otherwise the chunk size of a chunked body.
    chunk_size: int | None = None


Handler = Callable[[Request], Awaitable[Response]]

_REASONS = {200: "OK", 201: "Created", 204: "No Content", 301: "Moved Permanently", 302: "Found",
            303: "See Other", 307: "Temporary Redirect", 308: "Permanent Redirect", 400: "Bad Request",
            404: "Not Found", 418: "I'm a teapot", 500: "Internal Server Error", 503: "Service Unavailable"}


async def _echo(request: Request) -> Response:
    payload = {"method": request.method, "path": request.path, "query": request.query,
               "headers": dict(request.headers), "body": request.body.decode("utf-8", "replace"),
               "client_cn": request.client_cn}
    return Response(200, json.dumps(payload).encode(), [("content-type", "application/json")])


async def _status(request: Request) -> Response:
    code = int(request.path.rsplit("/", 1)[1])
    return Response(code, f"status {code}".encode(), [("content-type", "text/plain")])


async def _redirect(request: Request) -> Response:
    code = int(request.path.rsplit("/", 1)[1])
    return Response(code, b"", [("location", request.arg("to"))])


async def _slow(request: Request) -> Response:
    await asyncio.sleep(float(request.arg("delay_s", "5")))
    return Response(200, b"slow")


async def _bytes(request: Request) -> Response:
    size = int(request.arg("n", "0"))
    return Response(200, b"x" * size, [("content-type", "application/octet-stream")],
                    chunk_size=64 * 1024 if request.arg("chunked") else None)


async def _cookies(request: Request) -> Response:
    return Response(200, b"ok", [("set-cookie", "a=1"), ("set-cookie", "b=2")])


class LocalServer:
    """An asyncio HTTP/1.1 server with keep-alive on 127.0.0.1 (TLS and mTLS optional).

    ``connections`` counts accepted TCP connections and ``requests`` keeps every request,
    so tests can assert that a refused request never reached the server.
    """

    def __init__(self, *, tls: Issued | None = None, client_ca_pem: str | None = None,
                 host: str = "127.0.0.1") -> None:
        self.host = host
        self.scheme = "https" if tls else "http"
        self._ssl = server_ssl_context(tls, client_ca_pem) if tls else None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0
        self.requests: list[Request] = []
        self._routes: dict[str, Handler] = {"/echo": _echo, "/slow": _slow, "/bytes": _bytes,
                                            "/cookies": _cookies}
        self._prefixes: dict[str, Handler] = {"/status/": _status, "/redirect/": _redirect}

    def route(self, path: str, handler: Handler) -> None:
        self._routes[path] = handler

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, path: str = "/", *, host: str | None = None) -> str:
        return f"{self.scheme}://{host or self.host}:{self.port}{path}"

    async def start(self) -> None:
        if self._ssl is None:
            self._server = await asyncio.start_server(self._connection, self.host, 0)
        else:
            # A short shutdown: a client that broke off the handshake must not hold stop() for 30 s.
            self._server = await asyncio.start_server(self._connection, self.host, 0, ssl=self._ssl,
                                                      ssl_handshake_timeout=5.0, ssl_shutdown_timeout=1.0)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> LocalServer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            while await self._one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            # stop() cancels open connections; ending quietly keeps asyncio from logging it.
            writer.transport.abort()
        finally:
            self._tasks.discard(task)
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, ssl.SSLError):
                pass

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:] if line)]
        request = Request(method, urlsplit(target).path, parse_qs(urlsplit(target).query), headers, b"",
                          _client_cn(writer))
        if (request.header("transfer-encoding") or "").lower() == "chunked":
            request.body = await _read_chunked(reader)
        elif request.header("content-length"):
            request.body = await reader.readexactly(int(request.header("content-length") or 0))
        self.requests.append(request)
        handler = self._routes.get(request.path)
        if handler is None:
            handler = next((h for p, h in self._prefixes.items() if request.path.startswith(p)), None)
        response = await handler(request) if handler else Response(404, b"not found")
        await _write(writer, request.method, response)
        return (request.header("connection") or "").lower() != "close"


def _client_cn(writer: asyncio.StreamWriter) -> str | None:
    peer = writer.get_extra_info("peercert")
    if not peer:
        return None
    for rdn in peer.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def _write(writer: asyncio.StreamWriter, method: str, response: Response) -> None:
    status = f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Status')}\r\n"
    headers = list(response.headers)
    bodiless = method == "HEAD" or response.status in (204, 304) or response.status < 200
    body = b"" if bodiless else response.body
    if response.status in (204, 304) or response.status < 200:
        pass
    elif response.chunk_size is None:
        headers.append(("content-length", str(len(response.body))))
    else:
        headers.append(("transfer-encoding", "chunked"))
    writer.write((status + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode("latin-1"))
    if bodiless:
        pass
    elif response.chunk_size is None:
        writer.write(body)
    elif body:
        for start in range(0, len(body), response.chunk_size):
            piece = body[start:start + response.chunk_size]
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
    else:
        writer.write(b"0\r\n\r\n")
    await writer.drain()
