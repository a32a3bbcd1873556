"""Outbound HTTP for lambdas: the allowlist, the network policy and the limits (docs/egress.md).

Containers have no network; a lambda's ``http.request`` (and ``lp.request``) toolbelt call
reaches the world through :class:`Egress` on the host. The engine knows nothing of Kafka
or the registry: the caller hands it the request, the account's allowlist, a rate key
(the lambda id), the invocation's deadline and, for mTLS, the client certificate.

Errors::

    EgressError(code)            one of the wire codes of docs/runner-protocol.md
     ├── not_allowlisted         the host (of any hop) is not on the domain allowlist
     ├── address_refused         network policy: private/loopback/metadata/... or a platform port
     ├── rate_limited            more than ``requests_per_s`` for this rate key
     ├── response_too_large      the body passed ``max_response_bytes`` while streaming
     ├── timeout                 min(request timeout, what is left of the invocation) ran out
     ├── connect_error           DNS, TCP or HTTP protocol failure
     ├── tls_error               certificate verification or handshake failure
     ├── too_many_redirects      more hops than allowed
     └── bad_request             not a request we can send (scheme, method, header, URL)

Contract of :meth:`Egress.fetch`:

1. The URL's host is checked against the allowlist (unless ``check_allowlist=False``)
   before any DNS lookup; an IP literal, however spelled, is checked against the network
   policy first.
2. The host name is resolved once by our resolver; every address is checked; the TCP
   connection goes to a checked address (never to the name), while TLS SNI, certificate
   verification and the Host header use the name. No second resolution, no rebinding.
3. Every redirect hop goes through 1 and 2 again before it is followed.
4. The whole call, hops and body included, is bounded by min(timeout_s, deadline - now);
   the body is streamed and refused as soon as it passes the size cap.
5. Connections are pooled with keep-alive, one pool for plain/verified TLS and one per
   client certificate fingerprint.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import ipaddress
import logging
import os
import re
import socket
import ssl
import tempfile
import time
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, cast
from urllib.parse import urlsplit

import certifi
import httpcore
import httpx
import idna
from prometheus_client import Counter

from fnbus.config import SERVICE_NAMES, Settings

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Error codes (the wire's, docs/runner-protocol.md).
NOT_ALLOWLISTED = "not_allowlisted"
ADDRESS_REFUSED = "address_refused"
RATE_LIMITED = "rate_limited"
RESPONSE_TOO_LARGE = "response_too_large"
TIMEOUT = "timeout"
CONNECT_ERROR = "connect_error"
TLS_ERROR = "tls_error"
TOO_MANY_REDIRECTS = "too_many_redirects"
BAD_REQUEST = "bad_request"

# Docker's TCP API ports, refused on loopback/exempt addresses whatever docker_host says.
DOCKER_PORTS = (2375, 2376)
# The KRaft controller listener of deploy/local/infra.sh (FNBUS_KAFKA_CONTROLLER_PORT).
KAFKA_CONTROLLER_PORT = 9093
DEFAULT_POSTGRES_PORT = 5432
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Client pools kept for distinct client certificates; the least recently used goes first.
MAX_CERTIFICATE_POOLS = 32
MAX_CONNECTIONS_PER_POOL = 100
MAX_KEEPALIVE_PER_POOL = 20
KEEPALIVE_EXPIRY_S = 30.0
# The lambda sets these through the URL and the body; its own values are dropped.
_DROPPED_REQUEST_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection",
                                      "keep-alive", "upgrade", "te", "proxy-connection"})
# Credentials that must not follow a redirect to another host.
_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
_METHOD = re.compile(r"^[A-Z]{1,20}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HEADER_VALUE_FORBIDDEN = re.compile(r"[\r\n\x00]")

REQUESTS = Counter("fnbus_egress_requests_total",
                   "Outbound HTTP requests of lambdas by outcome (ok or an error code)", ["outcome"])
REFUSALS = Counter("fnbus_egress_refusals_total",
                   "Outbound HTTP requests of lambdas refused by policy, by reason", ["reason"])


class RefusalReason(str, enum.Enum):
    """The bounded label values of ``fnbus_egress_refusals_total``."""

    NOT_ALLOWLISTED = "not_allowlisted"
    PRIVATE_ADDRESS = "private_address"
    PLATFORM_PORT = "platform_port"
    UNSUPPORTED_SCHEME = "unsupported_scheme"
    RATE_LIMITED = "rate_limited"
    RESPONSE_TOO_LARGE = "response_too_large"
    TOO_MANY_REDIRECTS = "too_many_redirects"


class EgressError(Exception):
    """A request the engine refused or could not complete; ``code`` is a wire error code."""

    def __init__(self, code: str, message: str, *, reason: RefusalReason | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        # Set when a policy refused the request (counted in fnbus_egress_refusals_total).
        self.reason = reason


# -- host names and the allowlist ----------------------------------------------------------

def parse_ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` denotes if it is an IP literal in any spelling a resolver accepts.

    IPv4 follows inet_aton(3): one to four parts, each decimal, octal (leading ``0``) or
    hex (``0x``), the last part filling the remaining bytes (``127.1``, ``2130706433``,
    ``0x7f.1``, ``017700000001``). IPv6 may come in brackets. An IPv4-mapped IPv6 address
    is returned as the IPv4 address it reaches. ``None`` means "a name".
    """
    value = host.strip()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    if value.endswith(".") and ":" not in value:
        value = value[:-1]
    if not value:
        return None
    if ":" in value:
        try:
            v6 = ipaddress.IPv6Address(value)
        except ValueError:
            return None
        return v6.ipv4_mapped or v6
    return _inet_aton(value)


def _inet_aton(value: str) -> ipaddress.IPv4Address | None:
    parts = value.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers: list[int] = []
    for part in parts:
        low = part.lower()
        try:
            if low.startswith("0x"):
                number = int(low[2:], 16) if low[2:] else 0
            elif len(low) > 1 and low.startswith("0"):
                number = int(low[1:], 8)
            elif low.isdigit():
                number = int(low, 10)
            else:
                return None
        except ValueError:
            return None
        numbers.append(number)
    *head, last = numbers
    if any(n > 0xFF for n in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    total = 0
    for n in head:
        total = (total << 8) | n
    total = (total << (8 * (4 - len(head)))) | last
    return ipaddress.IPv4Address(total)


def canonical_host(host: str) -> str:
    """Lower case, no trailing dot, IDNA (punycode) labels; IP literals in their plain form."""
    address = parse_ip_literal(host)
    if address is not None:
        return str(address)
    value = host.strip().rstrip(".").lower()
    if value.isascii():
        return value
    try:
        return idna.encode(value, uts46=True).decode("ascii")
    except idna.IDNAError:
        return value


def host_allowed(host: str, allowlist: Sequence[str]) -> bool:
    """Whether ``host`` is on ``allowlist`` (pure).

    Entries are exact host names, or ``*.<domain>`` matching exactly one more label:
    ``*.example.com`` allows ``a.example.com``, not ``example.com`` nor ``a.b.example.com``;
    ``example.com`` does not allow ``www.example.com``. Case, a trailing dot and IDNA
    spelling do not matter; IP literals match only an equal address.
    """
    name = canonical_host(host)
    if not name:
        return False
    is_address = parse_ip_literal(name) is not None
    for entry in allowlist:
        raw = entry.strip()
        if raw.startswith("*."):
            if is_address:
                continue
            suffix = canonical_host(raw[2:])
            if not suffix or not name.endswith("." + suffix):
                continue
            label = name[: -len(suffix) - 1]
            if label and "." not in label:
                return True
        elif canonical_host(raw) == name:
            return True
    return False


# -- the network policy ------------------------------------------------------------------

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Not globally reachable per the IANA special-purpose registries, whatever this Python's
# ipaddress tables say (they changed between releases).
_SPECIAL_V4 = tuple(ipaddress.IPv4Network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4"))
_SPECIAL_V6 = tuple(ipaddress.IPv6Network(n) for n in (
    "::/96", "100::/64", "2001::/23", "2001:db8::/32", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8"))


def _special_v4(address: ipaddress.IPv4Address) -> bool:
    return (not address.is_global or address.is_multicast or address.is_reserved
            or address.is_loopback or address.is_link_local or address.is_unspecified
            or any(address in network for network in _SPECIAL_V4))


def _special_v6(address: ipaddress.IPv6Address) -> bool:
    if address in _NAT64:
        # Reaches the embedded IPv4 address through a translator: judge that one.
        return _special_v4(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.sixtofour is not None and _special_v4(address.sixtofour):
        return True
    return (not address.is_global or address.is_multicast or address.is_reserved
            or address.is_loopback or address.is_link_local or address.is_unspecified
            or address.is_site_local or any(address in network for network in _SPECIAL_V6))


def is_special_address(address: IPAddress) -> bool:
    """Loopback, private, link-local (metadata), CGNAT, multicast, unspecified, reserved...

    IPv6 forms count too: ``::1``, ``fc00::/7``, ``fe80::/10``, IPv4-mapped and
    IPv4-compatible forms, and 6to4/NAT64 addresses embedding a special IPv4 address.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        return _special_v4(address)
    return _special_v6(address)


def _refusal(address: IPAddress, port: int, policy: EgressPolicy) -> RefusalReason | None:
    """Why connecting to ``address:port`` is refused, or None when it is allowed (pure)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    exempt = any(address in network for network in policy.exempt_cidrs if address.version == network.version)
    if not exempt and is_special_address(address):
        return RefusalReason.PRIVATE_ADDRESS
    if port in policy.platform_ports and (exempt or address.is_loopback or address.is_unspecified):
        return RefusalReason.PLATFORM_PORT
    return None


@dataclass(frozen=True)
class EgressPolicy:
    """What the host lets lambdas reach, built once from Settings (docs/egress.md)."""

    exempt_cidrs: tuple[IPNetwork, ...] = ()
    # Ports of the platform itself, refused on loopback and exempt addresses always.
    platform_ports: frozenset[int] = frozenset()
    requests_per_s: float = 20.0  # per rate key; 0 disables the limit
    max_response_bytes: int = 10 * 1024 * 1024
    max_redirects: int = 10
    # PEM CA certificates trusted in addition to the system store (tests, private PKI).
    extra_ca_pem: str | None = None

    def refusal(self, address: IPAddress, port: int) -> RefusalReason | None:
        return _refusal(address, port, self)

    @classmethod
    def from_settings(cls, settings: Settings, *, extra_ca_pem: str | None = None) -> EgressPolicy:
        """The policy of ``settings``; ``extra_ca_pem`` wins over a ``egress_ca_file`` setting.

        ``egress_ca_file`` (FNBUS_EGRESS_CA_FILE, a PEM bundle) is read when Settings has it.
        """
        ca_file = str(getattr(settings, "egress_ca_file", "") or "")
        if extra_ca_pem is None and ca_file:
            with open(ca_file, encoding="utf-8") as handle:
                extra_ca_pem = handle.read()
        ports = {settings.port_of(name) for name in SERVICE_NAMES}
        # Replicas of a scaled local stack (fnbus.local): invoker n on invoker_port + (n-1)
        # steps, gateway n's own port on gateway_port + n steps.
        step = int(getattr(settings, "replica_port_step", 0) or 0)
        if step:
            ports.update(settings.invoker_port + n * step
                         for n in range(int(getattr(settings, "invokers", 1))))
            ports.update(settings.gateway_port + n * step
                         for n in range(1, int(getattr(settings, "gateways", 1)) + 1))
        ports.update(_bootstrap_ports(settings.kafka_bootstrap))
        ports.add(KAFKA_CONTROLLER_PORT)
        ports.add(_url_port(settings.database_url, DEFAULT_POSTGRES_PORT))
        ports.update(DOCKER_PORTS)
        if settings.docker_host.startswith("tcp://"):
            ports.add(_url_port(settings.docker_host, DOCKER_PORTS[0]))
        return cls(
            exempt_cidrs=tuple(ipaddress.ip_network(c.strip(), strict=False)
                               for c in settings.egress_exempt_cidrs),
            platform_ports=frozenset(ports),
            requests_per_s=settings.egress_requests_per_s,
            max_response_bytes=settings.egress_max_response_bytes,
            max_redirects=settings.egress_max_redirects,
            extra_ca_pem=extra_ca_pem,
        )


def _bootstrap_ports(bootstrap: str) -> set[int]:
    ports = set()
    for server in bootstrap.split(","):
        _, _, port = server.strip().rpartition(":")
        if port.isdigit():
            ports.add(int(port))
    return ports


def _url_port(url: str, default: int) -> int:
    try:
        return urlsplit(url).port or default
    except ValueError:
        return default


# -- the rate limit ------------------------------------------------------------------------

class TokenBucket:
    """``rate_per_s`` tokens a second, at most ``capacity`` saved up."""

    def __init__(self, rate_per_s: float, capacity: float, now: float) -> None:
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self.tokens = capacity
        self.updated = now

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate_per_s)
        self.updated = now

    def take(self, now: float) -> bool:
        self.refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class RateLimiter:
    """One token bucket per key; a burst of ``rate_per_s`` requests, then that many a second."""

    def __init__(self, rate_per_s: float, *, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 10_000) -> None:
        self.rate_per_s = rate_per_s
        self.capacity = max(1.0, rate_per_s)
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}

    def allow(self, key: str) -> bool:
        if self.rate_per_s <= 0:
            return True
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._forget_full(now)
            bucket = self._buckets[key] = TokenBucket(self.rate_per_s, self.capacity, now)
        return bucket.take(now)

    def _forget_full(self, now: float) -> None:
        # A full bucket holds no state worth keeping: a new one would be identical.
        for key, bucket in list(self._buckets.items()):
            bucket.refill(now)
            if bucket.tokens >= bucket.capacity:
                del self._buckets[key]


# -- requests and responses ------------------------------------------------------------------

@dataclass(frozen=True)
class ClientCertificate:
    """A client certificate for mTLS (PEM); ``name`` is the account's name for it (for messages)."""

    cert_pem: str
    key_pem: str
    ca_pem: str | None
    name: str

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for part in (self.cert_pem, self.key_pem, self.ca_pem or ""):
            digest.update(part.encode())
            digest.update(b"\0")
        return digest.hexdigest()


@dataclass(frozen=True)
class EgressRequest:
    method: str  # upper-case verb
    url: str  # absolute http(s) URL
    headers: Mapping[str, str]
    body: bytes | None
    timeout_s: float | None  # the lambda's own timeout; None (or <= 0) leaves only the deadline
    follow_redirects: bool = True
    max_redirects: int | None = None  # None = the policy's


@dataclass(frozen=True)
class EgressResponse:
    status: int
    headers: dict[str, str]  # lower-case names, repeated headers joined with ", "
    body: bytes  # as the server sent it (no content decoding)
    url: str  # the final URL after redirects


class Resolver(Protocol):
    async def resolve(self, host: str, port: int) -> list[str]: ...


class SystemResolver:
    """The event loop's getaddrinfo."""

    async def resolve(self, host: str, port: int) -> list[str]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return [str(info[4][0]) for info in infos]


# -- the transport: connect only to checked addresses ------------------------------------

class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves names itself, checks every address, and connects to the address, not the name."""

    def __init__(self, policy: EgressPolicy, resolver: Resolver) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = httpcore.AnyIOBackend()

    async def addresses(self, host: str, port: int) -> list[IPAddress]:
        literal = parse_ip_literal(host)
        if literal is not None:
            found: list[IPAddress] = [literal]
        else:
            try:
                names = await self._resolver.resolve(host, port)
            except (OSError, UnicodeError) as exc:
                raise EgressError(CONNECT_ERROR, f"could not resolve {host}: {exc}") from None
            found = []
            for name in names:
                address = parse_ip_literal(name.split("%", 1)[0])
                if address is None:
                    raise EgressError(CONNECT_ERROR, f"resolver gave {name!r} for {host}, not an address")
                found.append(address)
            if not found:
                raise EgressError(CONNECT_ERROR, f"could not resolve {host}: no addresses")
        # One refused address refuses the name: a name that also points inside is not trusted.
        for address in found:
            reason = self._policy.refusal(address, port)
            if reason is not None:
                raise _address_refused(host, address, port, reason)
        return found

    # The parameter names are httpcore's interface (it calls with keywords).
    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109
                          local_address: str | None = None,
                          socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        failure: Exception | None = None
        for address in await self.addresses(host, port):
            try:
                return await self._inner.connect_tcp(str(address), port, timeout=timeout,
                                                     local_address=local_address,
                                                     socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(self, path: str, timeout: float | None = None,  # noqa: ASYNC109
                                  socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                                  ) -> httpcore.AsyncNetworkStream:
        raise EgressError(BAD_REQUEST, "unix sockets are not reachable from lambdas")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _address_refused(host: str, address: IPAddress, port: int, reason: RefusalReason) -> EgressError:
    shown = host if host == str(address) else f"{host} ({address})"
    if reason is RefusalReason.PLATFORM_PORT:
        why = f"port {port} on {address} belongs to the platform"
    else:
        why = f"{address} is a loopback, private, link-local or otherwise non-public address"
    return EgressError(ADDRESS_REFUSED, f"connection to {shown} port {port} refused by the network policy: {why}",
                       reason=reason)


def _ssl_error_in(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


@contextlib.contextmanager
def _mapped(host: str) -> Iterator[None]:
    """httpcore's exceptions as EgressErrors, where they enter."""
    try:
        yield
    except EgressError:
        raise
    except httpcore.TimeoutException:
        raise EgressError(TIMEOUT, f"request to {host} timed out") from None
    except (httpcore.LocalProtocolError, httpcore.UnsupportedProtocol) as exc:
        raise EgressError(BAD_REQUEST, f"cannot send this request to {host}: {exc}") from None
    except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
        tls = _ssl_error_in(exc)
        if tls is not None:
            detail = getattr(tls, "verify_message", None) or getattr(tls, "reason", None) or str(tls)
            raise EgressError(TLS_ERROR, f"TLS with {host} failed: {detail}") from None
        raise EgressError(CONNECT_ERROR, f"connection to {host} failed: {_describe(exc)}") from None


def _describe(exc: BaseException) -> str:
    """The first non-empty message down the exception's chain (httpcore wraps anyio wraps OSError)."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            break
        text = seen.strerror if isinstance(seen, OSError) and seen.strerror else str(seen)
        if text:
            return text
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes], host: str) -> None:
        self._stream = stream
        self._host = host

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped(self._host):
            async for chunk in self._stream:
                yield chunk

    async def aclose(self) -> None:
        closer = getattr(self._stream, "aclose", None)
        if closer is not None:
            with _mapped(self._host):
                await closer()


class _GuardedTransport(httpx.AsyncBaseTransport):
    """httpx over an httpcore pool whose every connection goes through :class:`_GuardedBackend`."""

    def __init__(self, ssl_context: ssl.SSLContext, backend: _GuardedBackend) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context, max_connections=MAX_CONNECTIONS_PER_POOL,
            max_keepalive_connections=MAX_KEEPALIVE_PER_POOL, keepalive_expiry=KEEPALIVE_EXPIRY_S,
            http1=True, http2=False, retries=0, network_backend=backend)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=request.url.raw_scheme, host=request.url.raw_host,
                             port=request.url.port, target=request.url.raw_path),
            headers=request.headers.raw, content=request.stream, extensions=request.extensions)
        with _mapped(host):
            response = await self._pool.handle_async_request(core_request)
        return httpx.Response(status_code=response.status, headers=response.headers,
                              stream=_ResponseStream(cast(AsyncIterable[bytes], response.stream), host),
                              extensions=response.extensions)

    async def aclose(self) -> None:
        await self._pool.aclose()


def _ssl_context(policy: EgressPolicy, certificate: ClientCertificate | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if context.cert_store_stats()["x509_ca"] == 0:
        context.load_verify_locations(certifi.where())  # no system store on this host
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if policy.extra_ca_pem:
        context.load_verify_locations(cadata=policy.extra_ca_pem)
    if certificate is not None:
        try:
            if certificate.ca_pem:
                context.load_verify_locations(cadata=certificate.ca_pem)
            _load_client_certificate(context, certificate)
        except (ssl.SSLError, ValueError, OSError) as exc:
            raise EgressError(TLS_ERROR, f"client certificate {certificate.name!r} cannot be used: "
                              f"{getattr(exc, 'reason', None) or type(exc).__name__}") from None
    return context


def _load_client_certificate(context: ssl.SSLContext, certificate: ClientCertificate) -> None:
    # ssl loads key pairs only from files: write them to a private directory (in memory
    # where the host has /dev/shm) for the duration of the call.
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="fnbus-mtls-", dir=base) as directory:
        cert_path = os.path.join(directory, "cert.pem")
        key_path = os.path.join(directory, "key.pem")
        for path, text in ((cert_path, certificate.cert_pem), (key_path, certificate.key_pem)):
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(text)
        context.load_cert_chain(cert_path, key_path)


@dataclass
class _Pool:
    client: httpx.AsyncClient
    users: int = 0
    retired: bool = False


class _State(str, enum.Enum):
    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


@dataclass
class _Hop:
    method: str
    url: httpx.URL
    headers: list[tuple[str, str]]
    body: bytes | None
    redirects: int = 0


class Egress:
    """The host's outbound HTTP engine; one per invoker process.

    1. ``start()`` opens the shared pool and refuses to run twice; ``stop()`` closes every
       pool and is safe twice; ``async with`` does both.
    2. ``fetch()`` applies the allowlist, the network policy and the limits (module docstring)
       and raises :class:`EgressError` with a wire code; a non-2xx status is not an error.
    3. Pools per client certificate are cached by fingerprint (at most
       ``MAX_CERTIFICATE_POOLS``); an evicted pool closes when its last request ends.
    """

    def __init__(self, policy: EgressPolicy, *, resolver: Resolver | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._backend = _GuardedBackend(policy, resolver or SystemResolver())
        self._clock = clock
        self._limiter = RateLimiter(policy.requests_per_s, clock=clock)
        self._state = _State.UNOPENED
        self._default: _Pool | None = None
        self._certified: OrderedDict[str, _Pool] = OrderedDict()

    async def start(self) -> None:
        if self._state is not _State.UNOPENED:
            raise RuntimeError(f"Egress cannot start: it is {self._state.value}")
        self._default = _Pool(self._client(_ssl_context(self.policy)))
        self._state = _State.OPENED

    async def stop(self) -> None:
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        pools = list(self._certified.values()) + ([self._default] if self._default else [])
        self._certified.clear()
        self._default = None
        for pool in pools:
            await pool.client.aclose()

    async def __aenter__(self) -> Egress:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    def _client(self, context: ssl.SSLContext) -> httpx.AsyncClient:
        # trust_env=False: proxies or CA files from the environment must not bypass the policy.
        client = httpx.AsyncClient(transport=_GuardedTransport(context, self._backend),
                                   trust_env=False, follow_redirects=False, timeout=None)
        # Send only what the lambda asked for: no default compression, our own agent.
        del client.headers["accept-encoding"]
        client.headers["user-agent"] = "fnbus-egress"
        return client

    async def fetch(self, request: EgressRequest, *, allowlist: Sequence[str], rate_key: str,
                    deadline: float, certificate: ClientCertificate | None = None,
                    check_allowlist: bool = True) -> EgressResponse:
        """Send ``request`` under the policy; ``deadline`` is time.monotonic() of the invocation's kill."""
        if self._state is not _State.OPENED:
            raise RuntimeError("Egress is not started")
        try:
            response = await self._fetch(request, allowlist, rate_key, deadline, certificate, check_allowlist)
        except EgressError as exc:
            REQUESTS.labels(outcome=exc.code).inc()
            if exc.reason is not None:
                REFUSALS.labels(reason=exc.reason.value).inc()
                # A function hammering past its limit would flood the log at INFO.
                level = logging.DEBUG if exc.reason is RefusalReason.RATE_LIMITED else logging.INFO
                log.log(level, "egress refused: %s", exc.message,
                        extra={"lambda_id": rate_key, "reason": exc.reason.value})
            raise
        REQUESTS.labels(outcome="ok").inc()
        return response

    async def _fetch(self, request: EgressRequest, allowlist: Sequence[str], rate_key: str,
                     deadline: float, certificate: ClientCertificate | None,
                     check_allowlist: bool) -> EgressResponse:
        hop = _Hop(method=_checked_method(request.method), url=_parse_url(request.url),
                   headers=_checked_headers(request.headers), body=request.body)
        budget = deadline - self._clock()
        if request.timeout_s is not None and request.timeout_s > 0:
            budget = min(budget, request.timeout_s)
        if budget <= 0:
            raise EgressError(TIMEOUT, "no time is left of the invocation for this request")
        if not self._limiter.allow(rate_key):
            raise EgressError(RATE_LIMITED, f"more than {self.policy.requests_per_s:g} requests per second "
                              "from this function", reason=RefusalReason.RATE_LIMITED)
        max_redirects = self.policy.max_redirects if request.max_redirects is None else request.max_redirects
        pool = await self._acquire(certificate)
        try:
            async with asyncio.timeout(budget):
                return await self._follow(pool.client, hop, allowlist, check_allowlist,
                                          request.follow_redirects, max_redirects)
        except TimeoutError:
            raise EgressError(TIMEOUT, f"request to {hop.url.host} did not complete within {budget:.3g} s") from None
        finally:
            await self._release(pool)

    async def _follow(self, client: httpx.AsyncClient, hop: _Hop, allowlist: Sequence[str],
                      check_allowlist: bool, follow_redirects: bool, max_redirects: int) -> EgressResponse:
        while True:
            self._admit(hop.url, allowlist, check_allowlist, redirected=hop.redirects > 0)
            # Latin-1 as HTTP/1.1 allows (and Node's http module); _checked_headers vetted the values.
            headers = [(k.encode("ascii"), v.encode("latin-1")) for k, v in hop.headers]
            outgoing = client.build_request(hop.method, hop.url, headers=headers, content=hop.body)
            response = await client.send(outgoing, stream=True, follow_redirects=False)
            try:
                location = response.headers.get("location")
                if follow_redirects and response.status_code in REDIRECT_STATUSES and location:
                    if hop.redirects >= max_redirects:
                        raise EgressError(TOO_MANY_REDIRECTS, f"more than {max_redirects} redirects "
                                          f"(last to {location})", reason=RefusalReason.TOO_MANY_REDIRECTS)
                    hop = _next_hop(hop, response.status_code, location)
                    continue
                body = await self._read_capped(response)
            finally:
                await response.aclose()
            return EgressResponse(status=response.status_code, headers=_joined_headers(response.headers),
                                  body=body, url=str(hop.url))

    def _admit(self, url: httpx.URL, allowlist: Sequence[str], check_allowlist: bool, *, redirected: bool) -> None:
        if url.scheme not in ("http", "https"):
            raise EgressError(BAD_REQUEST, f"only http and https URLs are reachable, not {url.scheme}:",
                              reason=RefusalReason.UNSUPPORTED_SCHEME)
        host = url.host
        if not host:
            raise EgressError(BAD_REQUEST, f"URL {url} has no host")
        literal = parse_ip_literal(host)
        if literal is not None:
            reason = self.policy.refusal(literal, _port_of(url))
            if reason is not None:
                raise _address_refused(host, literal, _port_of(url), reason)
        if check_allowlist and not host_allowed(host, allowlist):
            name = canonical_host(host)
            prefix = f"redirect to {name} refused: " if redirected else ""
            raise EgressError(NOT_ALLOWLISTED, f"{prefix}{name} is not on the domain allowlist of this account",
                              reason=RefusalReason.NOT_ALLOWLISTED)

    async def _read_capped(self, response: httpx.Response) -> bytes:
        cap = self.policy.max_response_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise EgressError(RESPONSE_TOO_LARGE, f"the response of {declared} bytes is over the "
                              f"{cap:,}-byte limit", reason=RefusalReason.RESPONSE_TOO_LARGE)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > cap:
                raise EgressError(RESPONSE_TOO_LARGE, f"the response is over the {cap:,}-byte limit",
                                  reason=RefusalReason.RESPONSE_TOO_LARGE)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _acquire(self, certificate: ClientCertificate | None) -> _Pool:
        if certificate is None:
            assert self._default is not None
            pool = self._default
        else:
            key = certificate.fingerprint()
            found = self._certified.get(key)
            if found is None:
                # Loading the CA store takes milliseconds of file reading: not on the loop.
                context = await asyncio.to_thread(_ssl_context, self.policy, certificate)
                if self._state is not _State.OPENED:
                    raise RuntimeError("Egress stopped")
                found = self._certified.get(key)  # a concurrent first request may have won
            if found is None:
                found = _Pool(self._client(context))
                self._certified[key] = found
                while len(self._certified) > MAX_CERTIFICATE_POOLS:
                    _, old = self._certified.popitem(last=False)
                    old.retired = True
                    if old.users == 0:
                        asyncio.get_running_loop().create_task(old.client.aclose())
            else:
                self._certified.move_to_end(key)
            pool = found
        pool.users += 1
        return pool

    async def _release(self, pool: _Pool) -> None:
        pool.users -= 1
        if pool.retired and pool.users == 0:
            await pool.client.aclose()


def _port_of(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def _parse_url(raw: str) -> httpx.URL:
    try:
        url = httpx.URL(raw)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise EgressError(BAD_REQUEST, f"not a valid URL: {exc}") from None
    if not url.is_absolute_url:
        raise EgressError(BAD_REQUEST, f"the URL must be absolute (http:// or https://), got {raw[:200]!r}")
    return url


def _checked_method(method: str) -> str:
    verb = method.upper()
    if not _METHOD.match(verb) or verb == "CONNECT":
        raise EgressError(BAD_REQUEST, f"unsupported HTTP method {method[:30]!r}")
    return verb


def _checked_headers(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    checked: list[tuple[str, str]] = []
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise EgressError(BAD_REQUEST, f"invalid header name {name[:60]!r}")
        text = str(value)
        if _HEADER_VALUE_FORBIDDEN.search(text):
            raise EgressError(BAD_REQUEST, f"header {name} has a line break or NUL in its value")
        try:
            text.encode("latin-1")
        except UnicodeEncodeError:
            raise EgressError(BAD_REQUEST, f"header {name} has characters outside Latin-1 in its value") from None
        if name.lower() not in _DROPPED_REQUEST_HEADERS:
            checked.append((name, text))
    return checked


def _next_hop(hop: _Hop, status: int, location: str) -> _Hop:
    try:
        target = hop.url.join(location)
    except (httpx.InvalidURL, ValueError) as exc:
        raise EgressError(BAD_REQUEST, f"redirect to an invalid URL {location[:200]!r}: {exc}") from None
    method, body = hop.method, hop.body
    headers = list(hop.headers)
    # 303 turns everything but HEAD into GET; 301/302 turn POST into GET as browsers do;
    # 307/308 keep method and body.
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method, body = "GET", None
        headers = [(k, v) for k, v in headers if k.lower() not in ("content-type", "content-encoding")]
    if target.host != hop.url.host:
        headers = [(k, v) for k, v in headers if k.lower() not in _CREDENTIAL_HEADERS]
    return _Hop(method=method, url=target, headers=headers, body=body, redirects=hop.redirects + 1)


def _joined_headers(headers: httpx.Headers) -> dict[str, str]:
    joined: dict[str, str] = {}
    for name, value in headers.multi_items():
        key = name.lower()
        joined[key] = f"{joined[key]}, {value}" if key in joined else value
    return joined
