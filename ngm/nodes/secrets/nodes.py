"""SealSecretNode: replaces a plaintext `api_key` in the input with its Fernet token and last 4 characters."""

from __future__ import annotations

from kailash.nodes.base import register_node
from pydantic import SecretStr

from ngm.nodes.base import REQUIRED, ContextNode


def seal(record: dict, keyring) -> dict:
    out = dict(record)
    if "api_key" not in out:
        return out
    secret = out.pop("api_key")
    plain = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    if plain:
        out["api_key_encrypted"] = keyring.encrypt(plain)
        out["api_key_last4"] = plain[-4:]
    else:  # null or "" clears the key
        out["api_key_encrypted"] = None
        out["api_key_last4"] = None
    return out


@register_node()
class SealSecretNode(ContextNode):
    PARAMS = {"params": (dict, REQUIRED)}

    async def async_run(self, **kw):
        return {"record": seal(kw["params"], self.ctx.keyring)}
