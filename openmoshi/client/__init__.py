"""A client of Moshi's websocket `/api/chat` (openmoshi's server or Kyutai's): files or microphone, no torch.

- `connection`: the URL (query parameters named as Kyutai's web client names them, the token), the handshake,
  decoded messages (`openmoshi.server.protocol`), `ClientError` / `ServerError` (the server's error kind).
- `conversation`: the duplex loop (Ogg/Opus via `openmoshi.server.opus`), paced in real time or windowed.
- `recording`: what came back (stereo as `openmoshi chat` writes it, Moshi's timed words, per-frame timing).
- `live`: microphone and speaker (sounddevice). `runner`: whole conversations; `run_file` for scripts.
The command is `openmoshi client` (openmoshi/commands/client.py); docs/client.md describes both.
"""

from .connection import DEFAULT_URL, ClientError, Connection, ServerError, chat_url, display_url, session_query
from .recording import Recording, words_from_pieces
from .runner import Options, run_file, talk_file, talk_live

__all__ = ["DEFAULT_URL", "ClientError", "Connection", "Options", "Recording", "ServerError", "chat_url",
           "display_url", "run_file", "session_query", "talk_file", "talk_live", "words_from_pieces"]
