"""Every key family of the state (:mod:`core.infra.state`), written in this one module.

A key is its parts joined with ``:``. Core's families are below; a plugin gets a namespace of its own
(:func:`plugin`, ``plugin:<name>:…``), so no plugin can collide with core or with another plugin. In Redis every
key also carries the state's prefix (``aipbot:`` by default), added by :class:`core.infra.state.RedisState`.
"""

from __future__ import annotations


def join(*parts: object) -> str:
    """A key from its parts: ``join("conv", 5, 7) == "conv:5:7"``."""
    return ":".join(str(p) for p in parts)


def conversation(chat_id: int, user_id: int) -> str:
    """A user's conversation in a chat (:mod:`core.pipeline.conversation`)."""
    return join("conv", chat_id, user_id)


def lock(name: str) -> str:
    """The key a :class:`core.infra.state.StateLock` named ``name`` is held under."""
    return join("lock", name)


def chat_lock(chat: str) -> str:
    """The name of the lock a cluster worker holds while it handles a chat (:mod:`core.pipeline.cluster`)."""
    return join("chat", chat)


def withheld(update_id: int) -> str:
    """A withheld text on its way from a front end to a worker (sealed; :mod:`core.pipeline.cluster`)."""
    return join("withheld", update_id)


def quota(user_key: str, command: str) -> str:
    """The mark that a journaled update already counted against a daily quota (:mod:`core.pipeline.middleware`)."""
    return join("quota", user_key, command)


def alerted(error: str, problem: str) -> str:
    """That admins were told about ``problem`` within the last hour (:mod:`core.pipeline.middleware`)."""
    return join("alerted", error, problem)


def outbox_owner(owner: str) -> str:
    """A live outbox sender's heartbeat (cluster mode; :mod:`core.sending.leases`)."""
    return join("outbox", "owner", owner)


#: What ``/readyz`` reads to see that the state answers (:mod:`core.infra.web`).
READY_PROBE = join("ready", "probe")


def plugin(name: str, *parts: object) -> str:
    """A key in plugin ``name``'s own namespace: ``plugin("realname", "begin", 7) == "plugin:realname:begin:7"``."""
    return join("plugin", name, *parts)
