"""`openmoshi client`: talk to a Moshi server (openmoshi's or Kyutai's) over its websocket `/api/chat`.

With `--input user.wav --output out.wav` it is headless: the recording is sent as Ogg/Opus, paced in real time
(`--fast`: as fast as the server answers), followed by `--tail` seconds of silence, and it writes what `openmoshi
chat` writes: a stereo wav (left Moshi, right you) and Moshi's words as timed JSON and SRT (beside the wav by
default), plus `--timing FILE.json` (per-frame round trips). Without --input: microphone and speaker through
sounddevice (`pip install 'openmoshi[audio]'`); Ctrl-C ends the conversation (and writes --output if given).
Moshi's words are printed as they come, in both modes.

The settings go in the URL's query under the names Kyutai's web client uses (text_temperature, text_topk,
audio_temperature, audio_topk, text_seed, audio_seed; `--param NAME=VALUE` adds any other, e.g. pad_mult), so
they reach our server and Kyutai's alike. The error kind ends the conversation: its reason is printed, exit 1.
No torch: this command needs numpy, soundfile, sphn and aiohttp only.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from . import common
from .common import error

TOKEN_ENV = "OPENMOSHI_TOKEN"
_PARAM = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


def _param(text: str) -> tuple[str, str]:
    match = _PARAM.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return match.group(1), match.group(2)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..client.connection import DEFAULT_URL

    net = parser.add_argument_group("server")
    net.add_argument("--url", default=DEFAULT_URL,
                     help=f"the server's websocket, ws:// or wss:// (http(s):// works too; default {DEFAULT_URL})")
    net.add_argument("--token", default=None,
                     help=f"the server's access token (default: ${TOKEN_ENV} when set)")
    net.add_argument("--insecure", action="store_true",
                     help="wss://: accept any certificate (encrypted, not authenticated)")
    net.add_argument("--ca-cert", default=None, metavar="PEM",
                     help="wss://: trust this certificate (e.g. the one `serve --ssl-self-signed` logged)")
    net.add_argument("--timeout", type=common.positive_float, default=30.0, metavar="SECONDS",
                     help="give up after this long without the handshake or any message (default 30)")
    io = parser.add_argument_group("input and output")
    io.add_argument("--input", "-i", default=None, metavar="WAV",
                    help="the user's side as a recording (any rate, any channels); without it: the microphone")
    io.add_argument("--output", "-o", default=None, metavar="WAV",
                    help="stereo wav: left Moshi, right you (required with --input)")
    io.add_argument("--text-json", default=None, metavar="FILE", help="Moshi's words with times, JSON "
                    "(default: beside --output)")
    io.add_argument("--text-srt", default=None, metavar="FILE", help="Moshi's words as subtitles, SRT "
                    "(default: beside --output)")
    io.add_argument("--timing", default=None, metavar="FILE.json",
                    help="per-frame times: when each of your frames left and Moshi's came back")
    io.add_argument("--fast", action="store_true",
                    help="with --input: send as fast as the server answers (at most --window frames ahead) "
                         "instead of in real time")
    io.add_argument("--window", type=common.positive_int, default=4, metavar="FRAMES",
                    help="--fast: frames sent and not yet answered before the client waits (default 4)")
    io.add_argument("--tail", type=common.non_negative_float, default=1.0, metavar="SECONDS",
                    help="with --input: silence sent after the recording so Moshi can finish (default 1)")
    io.add_argument("--duration", type=common.positive_float, default=None, metavar="SECONDS",
                    help="microphone mode: stop after this long (default: until Ctrl-C)")
    s = parser.add_argument_group("sampling (sent as query parameters; not given: the server's defaults)")
    s.add_argument("--text-temperature", "--temp-text", dest="text_temperature", type=common.non_negative_float,
                   default=None, help="text temperature (0 = greedy)")
    s.add_argument("--text-topk", "--top-k-text", dest="text_topk", type=common.non_negative_int, default=None,
                   help="text top-k")
    s.add_argument("--audio-temperature", "--temp", dest="audio_temperature", type=common.non_negative_float,
                   default=None, help="audio temperature (0 = greedy)")
    s.add_argument("--audio-topk", "--top-k", dest="audio_topk", type=common.non_negative_int, default=None,
                   help="audio top-k")
    s.add_argument("--seed", type=common.seed, default=None, help="text_seed and audio_seed both (0..2**64-1)")
    s.add_argument("--text-seed", type=common.seed, default=None, help="seed of the text sampling")
    s.add_argument("--audio-seed", type=common.seed, default=None, help="seed of the audio sampling")
    s.add_argument("--param", type=_param, action="append", default=[], metavar="NAME=VALUE",
                   help="any other query parameter (e.g. pad_mult=0, repetition_penalty=1.1); repeatable")


def output_paths(args: argparse.Namespace) -> dict[str, Path | None]:
    out = Path(args.output) if args.output is not None else None
    json_path = args.text_json or (out.with_suffix(".json") if out is not None else None)
    srt_path = args.text_srt or (out.with_suffix(".srt") if out is not None else None)
    return {"--output": out, "--text-json": None if json_path is None else Path(json_path),
            "--text-srt": None if srt_path is None else Path(srt_path),
            "--timing": None if args.timing is None else Path(args.timing)}


OUTPUT_SUFFIXES = {"--output": (".wav",), "--text-json": (".json",), "--text-srt": (".srt",), "--timing": (".json",)}


def check_args(args: argparse.Namespace) -> str | None:
    """A message for contradictory flags, or None (each value's range is checked by its argparse type)."""
    if args.input is not None and args.output is None:
        return "--input needs --output (the stereo wav to write)"
    if args.input is not None and args.duration is not None:
        return "--duration is for the microphone; with --input the recording's length decides"
    if args.input is None and args.fast:
        return "--fast needs --input (the microphone runs in real time)"
    if args.seed is not None and (args.text_seed is not None or args.audio_seed is not None):
        return "--seed sets both seeds: give it alone, or --text-seed/--audio-seed"
    if args.ca_cert is not None and args.insecure:
        return "--ca-cert and --insecure contradict each other: give one"
    names = [name for name, _ in args.param]
    if len(set(names)) != len(names):
        return "--param: a name is given twice"
    return None


def build_url(args: argparse.Namespace) -> str:
    """The conversation's URL (ClientError / ProtocolError name a problem)."""
    from ..client.connection import chat_url, session_query
    from ..server.protocol import SessionParams

    seeds = (args.seed, args.seed) if args.seed is not None else (args.text_seed, args.audio_seed)
    params = SessionParams(text_temperature=args.text_temperature, text_topk=args.text_topk,
                           audio_temperature=args.audio_temperature, audio_topk=args.audio_topk,
                           text_seed=seeds[0], audio_seed=seeds[1])
    return chat_url(args.url, session_query(params, dict(args.param)), _token(args))


def _token(args: argparse.Namespace) -> str | None:
    return args.token if args.token is not None else (os.environ.get(TOKEN_ENV) or None)


def _print_piece(piece: str) -> None:
    print(piece, end="", flush=True)


def main(args: argparse.Namespace) -> int:
    problem = check_args(args)
    if problem:
        return error(problem, 2)
    import asyncio

    from ..audio import SAMPLE_RATE, AudioError, read_audio
    from ..client import ClientError, Options, Recording, display_url, talk_file, talk_live
    from ..io_safety import OutputError, check_outputs
    from ..server.protocol import ProtocolError

    try:
        url = build_url(args)
    except (ClientError, ProtocolError) as err:
        return error(str(err), 2)
    paths = output_paths(args)
    try:
        check_outputs([(flag, path, OUTPUT_SUFFIXES[flag]) for flag, path in paths.items()],
                      [("--input", args.input)])
        user = read_audio(args.input, SAMPLE_RATE) if args.input is not None else None
    except (AudioError, OutputError) as err:
        return error(str(err))
    if user is None:
        from ..client.live import unavailable

        if (why := unavailable()) is not None:
            return error(why, 2)
    options = Options(token=_token(args), insecure=args.insecure, ca_cert=args.ca_cert, timeout=args.timeout,
                      pace=not args.fast, window=args.window if args.fast else None, tail_seconds=args.tail)
    print(f"connecting to {display_url(url)}", file=sys.stderr)
    try:
        if user is None:
            rec = asyncio.run(talk_live(url, options, args.duration, on_text=_print_piece,
                                        keep_audio=args.output is not None))
        else:
            rec = asyncio.run(talk_file(url, user, options, on_text=_print_piece))
    except ClientError as err:
        print(file=sys.stderr)
        partial: Recording | None = getattr(err, "recording", None)
        if partial is not None and partial.frames_sent > 0 and any(paths.values()):
            try:
                partial.write(paths)  # what was said before the end is kept
                print(f"(the conversation up to the error: {partial.summary()})", file=sys.stderr)
            except OSError as write_err:
                print(f"error: cannot write the conversation: {write_err}", file=sys.stderr)
        return error(str(err))
    print(file=sys.stderr)
    print(rec.summary(), file=sys.stderr)
    if rec.frames_sent == 0:
        return error("nothing was sent (stopped before the first frame)")
    try:
        rec.write(paths)
    except OSError as err:
        return error(f"cannot write the conversation: {err}")
    if rec.frames_received == 0:
        return error("the server answered no audio")
    return 0
