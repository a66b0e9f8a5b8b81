"""One websocket connection to a Moshi server's `/api/chat` (ours or Kyutai's), on aiohttp's client.

`chat_url` builds the URL: ws:// or wss:// (http:// and https:// are turned into them), `/api/chat` when the URL
has no path, the conversation's settings as query parameters named as Kyutai's web client names them
(`text_temperature`, `text_topk`, `audio_temperature`, `audio_topk`, `text_seed`, `audio_seed`, and any other
such as `pad_mult`), and the token. `Connection.open` connects and waits for the server's handshake (the kind byte
alone from Kyutai's Python server and ours; version and model bytes are accepted too). Every message is decoded
by `openmoshi.server.protocol`; the error kind becomes `ServerError` carrying the server's reason.

The token travels twice: as the `token` query parameter (what a browser can send, since a browser's websocket
cannot set headers) and as an `Authorization: Bearer` header. A server that knows no token ignores both.
No torch here: the client is a light program.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import asdict
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..server.protocol import MAX_MESSAGE_BYTES, Kind, Message, ProtocolError, SessionParams, decode, parse_query
from ..server.protocol import audio as audio_message

DEFAULT_URL = "ws://127.0.0.1:8998/api/chat"
CHAT_PATH = "/api/chat"
_SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}


class ClientError(Exception):
    """Something that ends a conversation; the message is for the user (no traceback)."""


class ServerError(ClientError):
    """The server sent the error kind: `reason` is its words."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the server ended the conversation: {reason}")
        self.reason = reason


def session_query(params: SessionParams, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The query parameters for `params` (None = the server's default, not sent) and `extra` (other names Kyutai's
    client sends, e.g. pad_mult), checked as a server checks them (ProtocolError names a bad value)."""
    query = {name: str(value) for name, value in asdict(params).items() if value is not None}
    for name, value in (extra or {}).items():
        if name in query:
            raise ProtocolError(f"{name} is given twice (as a flag and as a parameter)")
        if not name or name == "token":
            raise ProtocolError(f"{name!r} is not a parameter name to send")
        query[name] = str(value)
    parse_query(query)  # what we send is what a server accepts
    return query


def chat_url(url: str, query: Mapping[str, str] | None = None, token: str | None = None) -> str:
    """The websocket URL of a conversation: `url` (ws, wss, http or https) with `query` and `token` added."""
    parts = urlsplit(url.strip())
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise ClientError(f"--url must start with ws://, wss://, http:// or https://, got {url!r}")
    if not parts.hostname:
        raise ClientError(f"--url has no host: {url!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as err:
        raise ClientError(f"--url has a bad port: {err}") from None
    path = parts.path if parts.path not in ("", "/") else CHAT_PATH
    items = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in (query or {})]
    items += list((query or {}).items())
    if token is not None:
        items = [(k, v) for k, v in items if k != "token"] + [("token", token)]
    try:  # parameters written into the URL itself are checked as the server checks them
        parse_query({k: v for k, v in items if k != "token"})
    except ProtocolError as err:
        raise ClientError(f"--url: {err}") from None
    return urlunsplit((scheme, parts.netloc, path, urlencode(items), ""))


def display_url(url: str) -> str:
    """`url` without its query (which may hold the token), for messages and logs."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


class Connection:
    """An open conversation: send audio chunks, receive decoded messages. Use `open`, then `close`."""

    def __init__(self, session, ws, url: str) -> None:
        self._session, self._ws, self.url = session, ws, url
        self.close_reason: str | None = None  # why the server closed, when it did without the error kind

    @classmethod
    async def open(cls, url: str, *, token: str | None = None, timeout: float = 30.0, insecure: bool = False,
                   ca_cert: str | None = None) -> Connection:
        """Connect to `url` (from `chat_url`) and wait up to `timeout` seconds for the handshake. wss://: the
        server's certificate must be trusted by the system, or be signed by `ca_cert` (a PEM file: e.g. the
        certificate of `serve --ssl-self-signed` itself); `insecure` accepts any."""
        import aiohttp

        shown = display_url(url)
        ssl_arg: ssl.SSLContext | bool = True
        if insecure and url.startswith("wss:"):
            ssl_arg = False  # a self-signed certificate (serve --ssl-self-signed): encrypted, not authenticated
        elif ca_cert is not None:
            try:
                ssl_arg = ssl.create_default_context(cafile=ca_cert)
            except (OSError, ssl.SSLError) as err:
                raise ClientError(f"--ca-cert {ca_cert}: not a readable PEM certificate ({err})") from None
        headers = {"Authorization": f"Bearer {token}"} if token is not None else None
        session = aiohttp.ClientSession()
        try:
            ws = await asyncio.wait_for(
                session.ws_connect(url, headers=headers, ssl=ssl_arg, max_msg_size=MAX_MESSAGE_BYTES,
                                   autoping=True), timeout)
        except aiohttp.WSServerHandshakeError as err:
            await session.close()
            raise ClientError(f"{shown} refused the websocket: HTTP {err.status} {err.message}") from None
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as err:
            await session.close()
            if isinstance(err, aiohttp.ClientConnectorCertificateError):
                why = (f"its certificate is not trusted ({err.certificate_error}); --ca-cert FILE trusts it, "
                       "--insecure accepts any")
            else:
                why = str(err) or type(err).__name__
            raise ClientError(f"cannot connect to {shown}: {why}") from None
        conn = cls(session, ws, url)
        try:
            first = await asyncio.wait_for(conn.receive(), timeout)
        except asyncio.TimeoutError:
            await conn.close()
            raise ClientError(f"{shown} sent no handshake within {timeout:g} s") from None
        except BaseException:
            await conn.close()
            raise
        if first is None:
            await conn.close()
            raise ClientError(f"{shown} closed the connection before its handshake ({conn.close_reason})")
        if first.kind is not Kind.HANDSHAKE:
            await conn.close()
            raise ClientError(f"{shown} did not start with the handshake (got a {first.kind.name.lower()} message)")
        return conn

    async def send_audio(self, chunk: bytes) -> None:
        """Send bytes of the Ogg/Opus stream (nothing for b"")."""
        if chunk:
            try:
                await self._ws.send_bytes(audio_message(chunk))
            except ConnectionError as err:
                raise ClientError(f"the connection broke while sending: {err}") from None

    async def receive(self, timeout: float | None = None) -> Message | None:
        """The next message (ping and pong handled inside), None once the server has closed.

        ServerError for the error kind; ClientError for a message that breaks the protocol; asyncio.TimeoutError
        after `timeout` seconds without any message."""
        import aiohttp

        while True:
            msg = await self._ws.receive(timeout)
            if msg.type is aiohttp.WSMsgType.BINARY:
                try:
                    message = decode(msg.data)
                except ProtocolError as err:
                    raise ClientError(f"the server sent an invalid message: {err}") from None
                if message.kind is Kind.ERROR:
                    raise ServerError(message.data)
                return message
            if msg.type is aiohttp.WSMsgType.TEXT:
                raise ClientError("the server sent a text frame; the protocol has binary messages only")
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                code = self._ws.close_code
                extra = f": {msg.extra}" if isinstance(msg.extra, str) and msg.extra else ""
                self.close_reason = f"close code {code}{extra}" if code is not None else "connection closed"
                return None
            if msg.type is aiohttp.WSMsgType.ERROR:
                self.close_reason = f"connection error: {self._ws.exception()}"
                return None
            # PING/PONG are answered by aiohttp (autoping); anything else is not a message of the protocol

    @property
    def closed(self) -> bool:
        return self._ws.closed

    async def close(self) -> None:
        try:
            await self._ws.close()
        finally:
            await self._session.close()
