from ngm.nodes.secrets.keyring import Keyring, KeyringError, load_keyring

__all__ = ["Keyring", "KeyringError", "load_keyring"]
