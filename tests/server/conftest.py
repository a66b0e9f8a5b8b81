"""Fixtures of the server tests, shared with the client and web tests in this folder.

`server_models`: a tiny model with 80 ms frames (loaded once per session); `make_server(**engine)`: a started
`BackgroundServer` on a free localhost port (stopped after the test), e.g. `srv = make_server(max_sessions=2)`,
then `srv.ws_url`, `srv.url`, `srv.engine`. Engine settings default to the test profile below (no pacing;
`wait_for_input` makes conversations frame-exact).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from server_testutils import build_server_repo, load_server_models  # noqa: E402

from openmoshi.server.config import EngineConfig, ServerConfig  # noqa: E402
from openmoshi.server.runner import BackgroundServer  # noqa: E402

TEST_ENGINE = dict(max_sessions=2, step_period=0.0, wait_for_input=0.0, max_input_backlog=200, seed=1)


@pytest.fixture(scope="session")
def server_repo(tmp_path_factory) -> Path:
    return build_server_repo(tmp_path_factory.mktemp("server_model"))


@pytest.fixture(scope="session")
def server_models(server_repo):
    return load_server_models(server_repo)


@pytest.fixture
def make_server(server_models):
    """Factory: make_server(token=None, server={...ServerConfig fields}, **EngineConfig fields) -> started server."""
    started: list[BackgroundServer] = []

    def make(server: dict | None = None, **engine) -> BackgroundServer:
        cfg = ServerConfig(port=0, engine=EngineConfig(**{**TEST_ENGINE, **engine}), model_name="tiny-test",
                           **(server or {}))
        srv = BackgroundServer(server_models.mimi, server_models.lm, server_models.tokenizer, cfg).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()
