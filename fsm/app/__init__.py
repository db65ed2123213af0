"""The composition room: the only part of lambda-fsm that knows which adapters exist.

It reads settings, opens the backends they name through ``sources.registry`` and hands
them to the core (:class:`fsm.dispatcher.Dispatcher`), then drives it: Lambda's events
(:mod:`.intake`), the embedded local runtime (:mod:`.local`), ``fsm worker``
(:mod:`.worker`), ``fsm resume`` (:mod:`.resume`), ``fsm create-resources``
(:mod:`.resources`) and the client (:mod:`.client`). The core never imports it.
"""

from __future__ import annotations

from .wiring import App, Wiring, build, default_config_path

__all__ = ["App", "Wiring", "build", "default_config_path"]
